"""SQLite implementation of the buffer described in :mod:`forwarder.buffer`."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from forwarder.buffer.schema import DDL, SCHEMA_VERSION
from forwarder.buffer.writer import GroupCommitter, storage_error, transaction
from forwarder.errors import StorageError
from forwarder.types import Position, StoredEvent, Webhook

DB_NAME = "buffer.db"


@dataclass(frozen=True, slots=True)
class AppendResult:
    """``duplicate``: the transport id was seen before, nothing new was stored.
    ``quarantined``: stored raw in ``quarantine`` (unknown event), not shipped."""

    event_id: int | None
    duplicate: bool = False
    quarantined: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record_id: str
    position: Position
    reason: str
    attempts: int
    message: bytes


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    events_purged: int
    transport_ids_expired: int


def connect(path: Path) -> sqlite3.Connection:
    """The single place where connections are opened and their durability is chosen."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        # WAL: readers (shippers) never block the writer (receiver), and a commit is one
        # sequential append + fsync instead of a rollback journal's several.
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: every COMMIT fsyncs the WAL, so an acknowledged event survives power loss, not
        # only a crash of this process. This is what makes the 2xx honest.
        conn.execute("PRAGMA synchronous=FULL")
        # Keep the WAL from staying at its high-water size after a burst of large snapshots.
        conn.execute("PRAGMA journal_size_limit=67108864")
    except sqlite3.Error as exc:
        raise storage_error(exc) from exc
    return conn


class SqliteBuffer:
    """Single-writer buffer; create it inside the running event loop with :meth:`open`."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        *,
        dedup_window: float,
        delivered_retention: float,
        outputs: Sequence[str],
        on_commit: Callable[[float, int], None] | None = None,
    ) -> None:
        self.path = path
        self._conn = conn
        self._writer = GroupCommitter(conn, loop, on_commit)
        self._dedup_window = dedup_window
        self._retention = delivered_retention
        self._outputs = tuple(outputs)
        self._subscribers: list[asyncio.Event] = []

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        outputs: Sequence[str],
        dedup_window: float = 7 * 86400.0,
        delivered_retention: float = 0.0,
        on_commit: Callable[[float, int], None] | None = None,
    ) -> SqliteBuffer:
        """Open (creating if needed) the buffer and give every configured output a cursor.

        A new output starts at the next event to arrive: it does not replay what other outputs
        already received, the way a newly added sink in a log shipper starts from "now".
        """
        loop = asyncio.get_running_loop()
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StorageError(f"cannot create state directory {directory}: {exc.strerror}") from exc
        path = directory / DB_NAME
        created = not path.exists()
        conn = connect(path)
        try:
            if created:
                # Must precede the first table; lets retention give pages back to the filesystem.
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.executescript(DDL)
            with transaction(conn):
                conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                next_id = _next_event_id(conn)
                now = time.time()
                conn.executemany(
                    "INSERT OR IGNORE INTO cursors(output, event_id, record_index, delivered, updated_at) "
                    "VALUES (?, ?, 0, 0, ?)",
                    [(name, next_id, now) for name in outputs],
                )
        except sqlite3.Error as exc:
            conn.close()
            raise storage_error(exc) from exc
        if created:
            _fsync_dir(directory)  # the new file's directory entry must be durable too
        return cls(
            path,
            conn,
            loop,
            dedup_window=dedup_window,
            delivered_retention=delivered_retention,
            outputs=outputs,
            on_commit=on_commit,
        )

    # --- receiver side ------------------------------------------------------------------------------

    async def append(self, webhook: Webhook) -> AppendResult:
        """Store one verified delivery. Returns after the COMMIT holding it (fsynced).

        A repeat of a transport id seen within the dedup window stores nothing and reports
        ``duplicate``; repeating the call is therefore harmless when the sender supplies one.
        """
        result = await self._writer.submit(lambda conn: _append(conn, webhook))
        if not result.duplicate and not result.quarantined:
            for event in self._subscribers:
                event.set()
        return result

    def subscribe(self) -> asyncio.Event:
        """An event set whenever new deliveries are committed (shippers wait on it when idle)."""
        event = asyncio.Event()
        self._subscribers.append(event)
        return event

    # --- shipper side -------------------------------------------------------------------------------

    def reader(self) -> BufferReader:
        """A read connection for one consumer; reads run in a worker thread."""
        return BufferReader(connect(self.path))

    async def positions(self) -> dict[str, Position]:
        return await self._writer.submit(_positions)

    async def advance(
        self, output: str, position: Position, *, delivered: int = 0, dead: Iterable[DeadLetter] = ()
    ) -> None:
        """Move ``output``'s cursor to ``position`` and record its dead letters, atomically.

        Returns after the commit. Moving to the same position again is harmless.
        """
        dead = tuple(dead)
        await self._writer.submit(lambda conn: _advance(conn, output, position, delivered, dead))

    async def maintain(self, now: float | None = None) -> MaintenanceReport:
        """Purge delivered events and expired transport ids (see retention in the module doc)."""
        moment = time.time() if now is None else now
        return await self._writer.submit(
            lambda conn: _maintain(conn, self._outputs, moment - self._retention, moment - self._dedup_window)
        )

    async def close(self) -> None:
        await asyncio.to_thread(self._writer.close)
        self._conn.close()


class BufferReader:
    """Reads committed events for one shipper; never sees a half-written transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def events_from(self, event_id: int, *, max_events: int = 256, max_bytes: int = 8 << 20) -> list[StoredEvent]:
        """Events with id >= ``event_id`` in id order; at least one if any exists, then up to
        ``max_events`` / ``max_bytes`` of bodies."""
        return await asyncio.to_thread(self._events_from, event_id, max_events, max_bytes)

    def _events_from(self, event_id: int, max_events: int, max_bytes: int) -> list[StoredEvent]:
        try:
            rows = self._conn.execute(
                "SELECT id, received_at, event_name, transport_id, snyk_timestamp, body_sha256, body "
                "FROM events WHERE id >= ? ORDER BY id LIMIT ?",
                (event_id, max_events),
            )
            events: list[StoredEvent] = []
            total = 0
            for row in rows:
                webhook = Webhook(
                    body=row[6],
                    body_sha256=row[5],
                    event_name=row[2],
                    received_at=row[1],
                    transport_id=row[3],
                    snyk_timestamp=row[4],
                )
                events.append(StoredEvent(id=row[0], webhook=webhook))
                total += len(row[6])
                if total >= max_bytes:
                    break
            return events
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    def close(self) -> None:
        self._conn.close()


# --- operations run on the writer thread, inside one transaction ------------------------------------


def _append(conn: sqlite3.Connection, w: Webhook) -> AppendResult:
    if w.transport_id:
        row = conn.execute("SELECT event_id FROM transport_ids WHERE transport_id = ?", (w.transport_id,)).fetchone()
        if row is not None:
            return AppendResult(row[0], duplicate=True)
    if w.kind == "snapshot":
        cur = conn.execute(
            "INSERT INTO events(received_at, event_name, transport_id, snyk_timestamp, body_sha256, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (w.received_at, w.event_name, w.transport_id, w.snyk_timestamp, w.body_sha256, w.body),
        )
    else:
        cur = conn.execute(
            "INSERT INTO quarantine(received_at, event_name, transport_id, snyk_timestamp, body_sha256, body, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                w.received_at,
                w.event_name,
                w.transport_id,
                w.snyk_timestamp,
                w.body_sha256,
                w.body,
                "unknown event",
            ),
        )
    event_id = cur.lastrowid
    if w.transport_id:
        conn.execute(
            "INSERT INTO transport_ids(transport_id, seen_at, event_id) VALUES (?, ?, ?)",
            (w.transport_id, w.received_at, event_id if w.kind == "snapshot" else None),
        )
    return AppendResult(event_id, quarantined=w.kind != "snapshot")


def _positions(conn: sqlite3.Connection) -> dict[str, Position]:
    rows = conn.execute("SELECT output, event_id, record_index FROM cursors")
    return {name: Position(event_id, index) for name, event_id, index in rows}


def _advance(
    conn: sqlite3.Connection, output: str, position: Position, delivered: int, dead: tuple[DeadLetter, ...]
) -> None:
    now = time.time()
    conn.execute(
        "UPDATE cursors SET event_id = ?, record_index = ?, delivered = delivered + ?, updated_at = ? WHERE output = ?",
        (position.event_id, position.index, delivered, now, output),
    )
    if dead:
        conn.executemany(
            "INSERT INTO dead_letters(output, record_id, event_id, record_index, reason, attempts, failed_at, message) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    output,
                    d.record_id,
                    d.position.event_id,
                    d.position.index,
                    d.reason,
                    d.attempts,
                    now,
                    d.message,
                )
                for d in dead
            ],
        )


def _maintain(
    conn: sqlite3.Connection, outputs: Sequence[str], delivered_before: float, seen_before: float
) -> MaintenanceReport:
    marks = ",".join("?" * len(outputs))
    row = conn.execute(
        f"SELECT MIN(event_id) FROM cursors WHERE output IN ({marks})",  # noqa: S608 - placeholders only
        tuple(outputs),
    ).fetchone()
    purged = 0
    if row is not None and row[0] is not None:
        purged = conn.execute(
            "DELETE FROM events WHERE id < ? AND received_at < ?", (row[0], delivered_before)
        ).rowcount
    expired = conn.execute("DELETE FROM transport_ids WHERE seen_at < ?", (seen_before,)).rowcount
    return MaintenanceReport(events_purged=purged, transport_ids_expired=expired)


def _next_event_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return (row[0] if row else 0) + 1


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
