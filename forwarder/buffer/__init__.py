"""The durable buffer: what the 2xx promises is on disk, and where each output stands.

Invariants — read the code in :mod:`forwarder.buffer.sqlite` against this text.

Tables (one SQLite database, ``buffer.db`` in the state directory, WAL journal):

- ``events``: one row per stored ``project_snapshot`` delivery: the raw body bytes (the only
  thing the signature vouches for; records are flattened from it later), its SHA-256, the event
  name, the unsigned headers kept for context (transport id, X-Snyk-Timestamp) and the receive
  time. ``id`` is AUTOINCREMENT, so ids only ever grow, even after the newest rows are purged:
  an output's position can never point past an event that does not exist yet.
- ``quarantine``: deliveries with an event name or version we do not understand, kept raw and
  never shipped or purged automatically (nothing lost; an operator decides).
- ``dedup_keys``: append-only log of the transport ids and body hashes seen, each with the first
  event id, for ``dedup_window`` seconds; looked up in memory (:mod:`forwarder.buffer.dedup`).
- ``cursors``: per output, a :class:`~forwarder.types.Position` (event id, record index): every
  record before it has been delivered or dead-lettered. Records of an event are numbered in
  flatten order, which is deterministic, so a 5,000-issue snapshot resumes mid-way.
- ``dead_letters``: records an output refused for good, with the reason, the output, the time
  and the attempts.

Durability: a delivery is acknowledged (2xx) only after the transaction holding its row has
committed with ``synchronous=FULL`` — SQLite has fsynced the WAL. Concurrent deliveries share
one commit (:mod:`forwarder.buffer.writer`). Cursor moves and dead letters go through the same
committer; losing the newest cursor move (power loss) only re-sends records, with the same ids.

Per-output delivery state of a record: pending (at or after the cursor) → in flight (read by
the shipper, not yet confirmed) → delivered or dead (cursor moved past it). Nothing is marked
"in flight" on disk, so opening after a crash needs no repair: whatever was in flight is simply
pending again, which is where the at-least-once window comes from.

Retention: an event is deleted once every configured output's cursor is past it and it is older
than ``delivered_retention``; dedup keys expire after ``dedup_window``.
"""

from forwarder.buffer.sqlite import AppendResult, SqliteBuffer

__all__ = ["AppendResult", "SqliteBuffer"]
