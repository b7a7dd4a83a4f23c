"""Which deliveries were already stored: transport ids and body hashes, for ``dedup_window``.

Looked up for every webhook, so the keys live in memory (a dict) and are persisted append-only
in ``dedup_keys`` (rowid order, i.e. time order), which is read back at start. The earlier layout
— two tables keyed by random UUIDs and hashes — cost four times the rest of an append: each
insert landed on a random B-tree page, and with a week of keys that meant a dozen pages written
per webhook. Appending to one table touches only its last page.

Keys are the first 16 bytes of SHA-256 over kind and value (a collision would wrongly drop a
delivery; at 2^-128 per pair it does not happen). The index belongs to the buffer's writer
thread: only operations running there read or change it, and changes made inside a transaction
are *staged* and become visible to later transactions only once it has committed — a rolled-back
append must not leave a key behind, or a retry of that delivery would be taken for a duplicate.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable

TRANSPORT = b"t"
BODY = b"b"
_MISSING = object()


def dedup_key(kind: bytes, value: str) -> bytes:
    return hashlib.sha256(kind + b"\0" + value.encode()).digest()[:16]


class DedupIndex:
    def __init__(self) -> None:
        self._committed: dict[bytes, int | None] = {}
        self._staged: dict[bytes, int | None] = {}

    def __len__(self) -> int:
        return len(self._committed)

    def load(self, conn: sqlite3.Connection, since: float) -> None:
        rows = conn.execute("SELECT key, event_id FROM dedup_keys WHERE seen_at >= ? ORDER BY id", (since,))
        self._committed = {bytes(k): event_id for k, event_id in rows}

    def lookup(self, key: bytes) -> tuple[bool, int | None]:
        """(seen, event id of the first copy)."""
        found = self._staged.get(key, _MISSING)
        if found is _MISSING:
            found = self._committed.get(key, _MISSING)
        return (False, None) if found is _MISSING else (True, found)  # type: ignore[return-value]

    def stage(self, conn: sqlite3.Connection, rows: Iterable[tuple[bytes, int | None]], seen_at: float) -> None:
        rows = list(rows)
        conn.executemany(
            "INSERT INTO dedup_keys(seen_at, key, event_id) VALUES (?, ?, ?)",
            [(seen_at, key, event_id) for key, event_id in rows],
        )
        self._staged.update(rows)

    def committed(self) -> None:
        self._committed.update(self._staged)
        self._staged.clear()

    def rolled_back(self) -> None:
        self._staged.clear()

    def expire(self, conn: sqlite3.Connection, before: float) -> int:
        """Forget keys first seen before ``before``; returns how many."""
        keys = [bytes(k) for (k,) in conn.execute("SELECT key FROM dedup_keys WHERE seen_at < ?", (before,))]
        conn.execute("DELETE FROM dedup_keys WHERE seen_at < ?", (before,))
        for key in keys:
            self._committed.pop(key, None)
        return len(keys)
