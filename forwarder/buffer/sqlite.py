"""SQLite implementation of the buffer described in :mod:`forwarder.buffer`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import orjson

from forwarder.buffer.dedup import BODY, TRANSPORT, DedupIndex, dedup_key
from forwarder.buffer.lock import DirectoryLock
from forwarder.buffer.salvage import SalvageReport, check_and_salvage
from forwarder.buffer.schema import DDL, MIGRATIONS, SCHEMA_VERSION
from forwarder.buffer.space import Reserve
from forwarder.buffer.writer import GroupCommitter, storage_error, transaction
from forwarder.errors import DiskFull, StorageError
from forwarder.types import Position, Record, StoredEvent, Webhook

DB_NAME = "buffer.db"
PURGE_CHUNK = 256  # events deleted per transaction; maintain() repeats until none are left
VACUUM_CHUNK = 256  # free pages handed back per transaction (1 MiB at the default page size)
VACUUM_ROUNDS = 64  # chunks of 4 × VACUUM_CHUNK per maintenance pass when the disk is not full
log = logging.getLogger("forwarder.buffer")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BufferLimits:
    """Size limits; see ``[buffer]`` in config/example.toml."""

    max_bytes: int = 8 << 30
    high_water: float = 0.9
    low_water: float = 0.8
    # Covers the WAL (capped at 4 MiB) several times over while draining a full disk.
    reserve_bytes: int = 16 << 20


@dataclass(frozen=True, slots=True)
class AppendResult:
    """``duplicate``: the transport id or the same body was seen before; nothing new was stored.
    ``quarantined``: stored raw in ``quarantine`` (unknown event), not shipped."""

    event_id: int | None
    duplicate: bool = False
    quarantined: bool = False
    stored_bytes: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record an output refused for good, with everything needed to send it again later."""

    record: Record
    reason: str
    attempts: int
    message: bytes


@dataclass(frozen=True, slots=True)
class Replay:
    """A dead letter sent back into an output's queue by ``snyk-forwarder replay``."""

    id: int
    record: Record


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    events_purged: int
    dedup_keys_expired: int
    bytes_freed: int = 0
    pages_vacuumed: int = 0


@dataclass(slots=True)
class BufferState:
    """What the receiver and readiness need to know, kept current in memory (no query per request)."""

    stored_bytes: int = 0
    backpressure: bool = False
    disk_full: bool = False
    disk_full_since: float | None = None
    # The database file was deleted or replaced under the running daemon: anything committed now
    # would go to an unlinked inode and vanish at the next restart, so deliveries are refused.
    file_lost: bool = False
    salvage: SalvageReport | None = field(default=None)


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def connect(path: Path, *, new: bool = False, existing: bool = False) -> sqlite3.Connection:
    """The single place where connections are opened and their durability is chosen.

    ``existing``: fail rather than create the file (readers: if someone deleted the buffer, a
    reader must not quietly start an empty one at its path).
    """
    target: str | Path = f"{path.absolute().as_uri()}?mode=rw" if existing else path
    try:
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=30.0, uri=existing)
        if new:
            # Must come before WAL mode and the first table; lets retention hand pages back to the
            # filesystem (incremental vacuum) so the file does not stay at its largest size.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        # WAL: readers (shippers) never block the writer (receiver), and a commit is one
        # sequential append + fsync instead of a rollback journal's several.
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: every COMMIT fsyncs the WAL, so an acknowledged event survives power loss, not
        # only a crash of this process. This is what makes the 2xx honest.
        conn.execute("PRAGMA synchronous=FULL")
        # A small WAL: checkpoint every ~1 MiB and truncate the file back to 4 MiB afterwards, so the
        # WAL never holds more than the disk reserve (space.py) can always make room for.
        conn.execute("PRAGMA wal_autocheckpoint=256")
        # Deleting a delivered 50 KB body must not write 50 KB of zeroes to the WAL (some builds
        # enable secure_delete by default): on a full disk, purging has to be cheap to make room.
        conn.execute("PRAGMA secure_delete=FAST")
        conn.execute("PRAGMA journal_size_limit=4194304")
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
        outputs: Sequence[str],
        dedup_window: float,
        dedup_bodies: bool,
        delivered_retention: float,
        limits: BufferLimits,
        state: BufferState,
        dedup: DedupIndex,
        on_commit: Callable[[float, int], None] | None,
        lock: DirectoryLock | None = None,
    ) -> None:
        self.path = path
        self._lock = lock
        self.state = state
        self.limits = limits
        self._conn = conn
        self._dedup = dedup
        self._writer = GroupCommitter(conn, loop, on_commit, hooks=dedup)
        self._dedup_window = dedup_window
        self._dedup_bodies = dedup_bodies
        self._retention = delivered_retention
        self._outputs = tuple(outputs)
        self._subscribers: list[asyncio.Event] = []
        self._reserve = Reserve(path.parent, limits.reserve_bytes)
        self._stats: sqlite3.Connection | None = None
        self._path_text = str(path)
        self._identity = _file_identity(self._path_text)

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        outputs: Sequence[str],
        dedup_window: float = 7 * 86400.0,
        dedup_bodies: bool = True,
        delivered_retention: float = 0.0,
        limits: BufferLimits | None = None,
        integrity_check: str = "quick",
        on_commit: Callable[[float, int], None] | None = None,
    ) -> SqliteBuffer:
        """Open (creating if needed) the buffer and give every configured output a cursor.

        A damaged file is salvaged first (see :mod:`forwarder.buffer.salvage`): the daemon starts
        with what could be read, never refuses to start and never silently starts empty.

        A new output starts at the next event to arrive: it does not replay what other outputs
        already received, the way a newly added sink in a log shipper starts from "now".
        """
        loop = asyncio.get_running_loop()
        limits = limits or BufferLimits()
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StorageError(f"cannot create state directory {directory}: {exc.strerror}") from exc
        lock = DirectoryLock.acquire(directory)
        path = directory / DB_NAME
        state = BufferState()
        try:
            if path.exists():
                state.salvage = check_and_salvage(path, outputs, mode=integrity_check, connect=connect)
            created = not path.exists()
            conn = connect(path, new=created)
        except BaseException:
            lock.release()
            raise
        try:
            _prepare(conn, outputs)
            state.stored_bytes = conn.execute("SELECT COALESCE(SUM(length(body)), 0) FROM events").fetchone()[0]
            dedup = DedupIndex()
            dedup.load(conn, time.time() - dedup_window)
            stats = connect(path, existing=True)
        except sqlite3.Error as exc:
            conn.close()
            lock.release()
            raise storage_error(exc) from exc
        except StorageError:
            conn.close()
            lock.release()
            raise
        if created:
            _fsync_dir(directory)  # the new file's directory entry must be durable too
        buffer = cls(
            path,
            conn,
            loop,
            outputs=outputs,
            dedup_window=dedup_window,
            dedup_bodies=dedup_bodies,
            delivered_retention=delivered_retention,
            limits=limits,
            state=state,
            dedup=dedup,
            on_commit=on_commit,
            lock=lock,
        )
        # Opened now, not at the first scrape: should the file be deleted later, metrics still
        # read the open (unlinked) file while it drains.
        buffer._stats = stats
        if not buffer._reserve.ensure():
            state.disk_full, state.disk_full_since = True, time.time()
        buffer._update_backpressure()
        return buffer

    # --- receiver side ------------------------------------------------------------------------------

    def admission(self) -> str | None:
        """Why new deliveries must be refused right now (``file_lost``, ``disk_full``,
        ``backpressure``), or None."""
        if self.state.file_lost or not self.check_file():
            return "file_lost"
        if self.state.disk_full:
            return "disk_full"
        if self.state.backpressure:
            return "backpressure"
        return None

    def check_file(self) -> bool:
        """Whether the database file on disk is still the one this process has open.

        Someone deleting the state directory (a cleanup script, a mistaken ``rm -rf``) leaves
        SQLite writing happily into an unlinked file; acknowledging into it would be a lie. The
        loss is sticky: the open file still drains to the outputs, and a restart starts afresh.
        One stat() per delivery (about a microsecond) keeps the window to that delivery alone.
        """
        if not self.state.file_lost and _file_identity(self._path_text) != self._identity:
            self.state.file_lost = True
            log.error(
                "the buffer file was deleted or replaced while the daemon runs; new deliveries are refused with "
                "503 so none is acknowledged into a file that no longer exists. Events already stored keep "
                "shipping from the open file: restart the service once the metric "
                "snyk_forwarder_output_pending_events is 0 for every output (a restart starts a new, empty buffer)",
                extra={"path": str(self.path)},
            )
        return not self.state.file_lost

    async def append(self, webhook: Webhook) -> AppendResult:
        """Store one verified delivery. Returns after the COMMIT holding it (fsynced).

        A repeat of a transport id, or (with ``dedup_bodies``) of a body, seen within the dedup
        window stores nothing and reports ``duplicate``: repeating a call is harmless.
        """
        try:
            result = await self._writer.submit(lambda conn: _append(conn, webhook, self._dedup_bodies, self._dedup))
        except DiskFull:
            self._enter_disk_full()
            raise
        if result.stored_bytes:
            self.state.stored_bytes += result.stored_bytes
            self._update_backpressure()
        if not result.duplicate and not result.quarantined:
            for event in self._subscribers:
                event.set()
        return result

    @property
    def writer_alive(self) -> bool:
        return self._writer.alive

    async def set_outputs(self, outputs: Sequence[str]) -> None:
        """After a reload: cursors for new outputs (starting at the next event), and retention
        that only waits for the outputs now configured."""
        names = tuple(outputs)

        def op(conn: sqlite3.Connection) -> None:
            next_id, now = _next_event_id(conn), time.time()
            conn.executemany(
                "INSERT OR IGNORE INTO cursors(output, event_id, record_index, delivered, updated_at) "
                "VALUES (?, ?, 0, 0, ?)",
                [(name, next_id, now) for name in names],
            )

        await self._writer.submit(op)
        self._outputs = names

    def pending_by_output(self, positions: dict[str, Position | None]) -> dict[str, tuple[int, float | None]]:
        """(events not yet fully delivered, receive time of the oldest) per output — for metrics,
        from a connection of its own so a scrape never waits for the writer."""
        assert self._stats is not None
        result: dict[str, tuple[int, float | None]] = {}
        for name, position in positions.items():
            if position is None:
                continue
            try:
                count, oldest = self._stats.execute(
                    "SELECT COUNT(*), MIN(received_at) FROM events WHERE id >= ?", (position.event_id,)
                ).fetchone()
            except sqlite3.Error:
                continue
            result[name] = (count, oldest)
        return result

    def subscribe(self) -> asyncio.Event:
        """An event set whenever new deliveries are committed (shippers wait on it when idle)."""
        event = asyncio.Event()
        self._subscribers.append(event)
        return event

    # --- shipper side -------------------------------------------------------------------------------

    def reader(self) -> BufferReader:
        """A read connection for one consumer; reads run in a worker thread."""
        return BufferReader(connect(self.path, existing=True))

    async def positions(self) -> dict[str, Position]:
        return await self._writer.submit(_positions)

    async def advance(
        self,
        output: str,
        position: Position | None,
        *,
        delivered: int = 0,
        dead: Iterable[DeadLetter] = (),
        replayed: Iterable[int] = (),
    ) -> None:
        """Move ``output``'s cursor to ``position`` (None: leave it), record dead letters, and drop
        finished replays, atomically. Returns after the commit; repeating it is harmless."""
        dead, replayed = tuple(dead), tuple(replayed)
        await self._writer.submit(lambda conn: _advance(conn, output, position, delivered, dead, replayed))

    async def note_error(self, output: str, reason: str | None, *, paused: bool = False) -> None:
        """Keep an output's last failure (or its recovery, ``reason=None``) where ``status`` can read it."""
        now = time.time()

        def op(conn: sqlite3.Connection) -> None:
            if reason is None:
                conn.execute("UPDATE cursors SET paused = NULL WHERE output = ?", (output,))
            else:
                conn.execute(
                    "UPDATE cursors SET last_error = ?, last_error_at = ?, paused = ? WHERE output = ?",
                    (reason, now, reason if paused else None, output),
                )

        await self._writer.submit(op)

    async def maintain(self, now: float | None = None) -> MaintenanceReport:
        """Purge delivered events and expired dedup keys, give free pages back, and check whether
        a full disk has room again (see retention in the module doc and :mod:`.space`)."""
        moment = time.time() if now is None else now
        full = self.state.disk_full
        total = MaintenanceReport(0, 0)
        limit = PURGE_CHUNK
        for _ in range(10_000):  # bounded: `limit` events per round
            report, limit = await self._shrinking_on_full(
                lambda conn, n: _purge(
                    conn, self._outputs, moment - self._retention, moment - self._dedup_window, self._dedup, n
                ),
                limit,
            )
            self.state.stored_bytes = max(0, self.state.stored_bytes - report.bytes_freed)
            total = _sum(total, report)
            if report.events_purged < limit:
                break
        # Free pages are reused by new events anyway; handing them back to the filesystem matters
        # after a burst, and on a full disk, where it is what lets deliveries resume. In small
        # steps, each folded into the database file at once: a full disk has little room for WAL.
        # Otherwise up to 256 MiB per pass, so a burst's space is back within minutes, not hours;
        # each chunk is its own short transaction (about 5 ms), so appends interleave with it.
        chunk = VACUUM_CHUNK if full else 4 * VACUUM_CHUNK
        for _ in range(1_000 if full else VACUUM_ROUNDS):
            vacuumed, chunk = await self._shrinking_on_full(_vacuum, chunk)
            total = dataclasses.replace(total, pages_vacuumed=total.pages_vacuumed + vacuumed)
            if total.events_purged or vacuumed or full:
                with contextlib.suppress(StorageError):
                    await self.checkpoint()
            if vacuumed < chunk:
                break
        if full and await asyncio.to_thread(self._reserve.recover):
            self.state.disk_full, self.state.disk_full_since = False, None
            log.warning("disk space is available again; accepting deliveries", extra={"path": str(self.path)})
        self._update_backpressure()
        return total

    async def _shrinking_on_full(self, op: Callable[[sqlite3.Connection, int], T], size: int) -> tuple[T, int]:
        """Run a maintenance step of ``size`` units; on a full disk, fold the WAL away and try
        again with half as many, down to one.

        Purging and vacuuming write to the WAL first: with the reserve spent, a step of the usual
        size may not fit where a single event or page still does, and every step that succeeds
        gives space back. Without this, a full disk whose events were all delivered could stay
        full for good: each pass failing on the same too-large first step.
        """
        while True:
            try:
                return await self._writer.submit(functools.partial(_call_with, op, size)), size
            except DiskFull:
                if size <= 1:
                    raise
                size //= 2
                with contextlib.suppress(StorageError):
                    await self.checkpoint()

    async def checkpoint(self) -> None:
        """Fold the WAL back into the database file and truncate it (called when idle)."""
        await self._writer.submit(_checkpoint, transactional=False)

    async def close(self) -> None:
        await asyncio.to_thread(self._writer.close)
        self._conn.close()
        if self._stats is not None:
            self._stats.close()
        if self._lock is not None:
            self._lock.release()

    # --- space ---------------------------------------------------------------------------------------

    def _enter_disk_full(self) -> None:
        if not self.state.disk_full:
            self.state.disk_full, self.state.disk_full_since = True, time.time()
            self._reserve.release()  # room for cursor moves and purges, so draining can go on
            # and fold the WAL into the database now, so its file shrinks instead of growing
            self._writer.submit(_checkpoint, transactional=False).add_done_callback(_ignore_result)
            log.error(
                "disk full: new deliveries are refused with 503 until space returns; delivered events keep draining",
                extra={"path": str(self.path)},
            )

    def _update_backpressure(self) -> None:
        limits, state = self.limits, self.state
        if not state.backpressure and state.stored_bytes >= limits.high_water * limits.max_bytes:
            state.backpressure = True
            log.warning(
                "buffer above its high-water mark; new deliveries get 503 until it drains",
                extra={"stored_bytes": state.stored_bytes, "max_bytes": limits.max_bytes},
            )
        elif state.backpressure and state.stored_bytes <= limits.low_water * limits.max_bytes:
            state.backpressure = False
            log.info(
                "buffer below its low-water mark; accepting deliveries", extra={"stored_bytes": state.stored_bytes}
            )


class BufferReader:
    """Reads committed events for one shipper; never sees a half-written transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def events_from(self, event_id: int, *, max_events: int = 256, max_bytes: int = 8 << 20) -> list[StoredEvent]:
        """Events with id >= ``event_id`` in id order; at least one if any exists, then up to
        ``max_events`` / ``max_bytes`` of bodies."""
        return await asyncio.to_thread(self._events_from, event_id, max_events, max_bytes)

    async def replays(self, output: str, limit: int) -> list[Replay]:
        return await asyncio.to_thread(self._replays, output, limit)

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

    def _replays(self, output: str, limit: int) -> list[Replay]:
        try:
            rows = self._conn.execute(
                "SELECT id, record_id, event_id, record_index, time_ms, severity, action, document "
                "FROM replays WHERE output = ? ORDER BY id LIMIT ?",
                (output, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc
        return [
            Replay(row[0], Record(row[1], Position(row[2], row[3]), row[4], row[5], row[6], orjson.loads(row[7])))
            for row in rows
        ]

    def close(self) -> None:
        self._conn.close()


# --- opening --------------------------------------------------------------------------------------


def _prepare(conn: sqlite3.Connection, outputs: Sequence[str]) -> None:
    """Create or migrate the schema, then give each configured output a cursor."""
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    version = None
    if has_meta:
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row else None
    if version is not None and version > SCHEMA_VERSION:
        raise StorageError(
            f"the buffer was written by a newer snyk-forwarder (schema {version}, this one "
            f"knows {SCHEMA_VERSION}); upgrade, or move {DB_NAME} aside"
        )
    with transaction(conn):
        if version is not None:
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS.get(step, ()):
                    conn.execute(statement)
                if step == 3:
                    _migrate_dedup_keys(conn)
        for statement in DDL.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        next_id = _next_event_id(conn)
        now = time.time()
        conn.executemany(
            "INSERT OR IGNORE INTO cursors(output, event_id, record_index, delivered, updated_at) "
            "VALUES (?, ?, 0, 0, ?)",
            [(name, next_id, now) for name in outputs],
        )


# --- operations run on the writer thread, inside one transaction ------------------------------------


def _append(conn: sqlite3.Connection, w: Webhook, dedup_bodies: bool, dedup: DedupIndex) -> AppendResult:
    """Store ``w`` unless its transport id (or, with ``dedup_bodies``, its body) was seen.

    Two statements in the usual case: the event, and its dedup keys appended to ``dedup_keys``
    (the lookups are in memory, :mod:`.dedup`). This runs for every webhook on the writer thread.
    """
    snapshot = w.kind == "snapshot"
    keys: list[bytes] = []
    if w.transport_id:
        keys.append(dedup_key(TRANSPORT, w.transport_id))
        seen, first = dedup.lookup(keys[0])
        if seen:
            return AppendResult(first, duplicate=True)
    if dedup_bodies and snapshot:
        body_key = dedup_key(BODY, w.body_sha256)
        seen, first = dedup.lookup(body_key)
        if seen:  # the same body again (a replay, or both webhooks during a secret rotation)
            dedup.stage(conn, [(k, first) for k in keys], w.received_at)  # this transport id's retries stay cheap
            return AppendResult(first, duplicate=True)
        keys.append(body_key)
    if snapshot:
        event_id = conn.execute(
            "INSERT INTO events(received_at, event_name, transport_id, snyk_timestamp, body_sha256, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (w.received_at, w.event_name, w.transport_id, w.snyk_timestamp, w.body_sha256, w.body),
        ).lastrowid
    else:
        event_id = conn.execute(
            "INSERT INTO quarantine(received_at, event_name, transport_id, snyk_timestamp, body_sha256, body, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (w.received_at, w.event_name, w.transport_id, w.snyk_timestamp, w.body_sha256, w.body, "unknown event"),
        ).lastrowid
    if keys:
        dedup.stage(conn, [(k, event_id if snapshot else None) for k in keys], w.received_at)
    return AppendResult(event_id, quarantined=not snapshot, stored_bytes=len(w.body) if snapshot else 0)


def _positions(conn: sqlite3.Connection) -> dict[str, Position]:
    rows = conn.execute("SELECT output, event_id, record_index FROM cursors")
    return {name: Position(event_id, index) for name, event_id, index in rows}


def _advance(
    conn: sqlite3.Connection,
    output: str,
    position: Position | None,
    delivered: int,
    dead: tuple[DeadLetter, ...],
    replayed: tuple[int, ...],
) -> None:
    now = time.time()
    if position is not None:
        conn.execute(
            "UPDATE cursors SET event_id = ?, record_index = ?, delivered = delivered + ?, updated_at = ? "
            "WHERE output = ?",
            (position.event_id, position.index, delivered, now, output),
        )
    elif delivered:
        conn.execute(
            "UPDATE cursors SET delivered = delivered + ?, updated_at = ? WHERE output = ?", (delivered, now, output)
        )
    if dead:
        conn.executemany(
            "INSERT INTO dead_letters(output, record_id, event_id, record_index, reason, attempts, failed_at, message, "
            "time_ms, severity, action, document) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    output,
                    d.record.id,
                    d.record.position.event_id,
                    d.record.position.index,
                    d.reason,
                    d.attempts,
                    now,
                    d.message,
                    d.record.time_ms,
                    d.record.severity,
                    d.record.action,
                    orjson.dumps(d.record.document),
                )
                for d in dead
            ],
        )
    if replayed:
        conn.executemany("DELETE FROM replays WHERE id = ?", [(i,) for i in replayed])


def _purge(
    conn: sqlite3.Connection,
    outputs: Sequence[str],
    delivered_before: float,
    seen_before: float,
    dedup: DedupIndex,
    limit: int,
) -> MaintenanceReport:
    marks = ",".join("?" * len(outputs))
    row = conn.execute(
        f"SELECT MIN(event_id) FROM cursors WHERE output IN ({marks})",
        tuple(outputs),
    ).fetchone()
    purged = freed = 0
    if row is not None and row[0] is not None:
        # A bounded number per transaction: a huge DELETE needs WAL space a full disk may not have.
        condition = "WHERE id IN (SELECT id FROM events WHERE id < ? AND received_at < ? ORDER BY id LIMIT ?)"
        args = (row[0], delivered_before, limit)
        freed = conn.execute(f"SELECT COALESCE(SUM(length(body)), 0) FROM events {condition}", args).fetchone()[0]
        purged = conn.execute(f"DELETE FROM events {condition}", args).rowcount
    expired = dedup.expire(conn, seen_before)
    return MaintenanceReport(events_purged=purged, dedup_keys_expired=expired, bytes_freed=freed)


def _call_with(op: Callable[[sqlite3.Connection, int], T], size: int, conn: sqlite3.Connection) -> T:
    return op(conn, size)


def _vacuum(conn: sqlite3.Connection, max_pages: int) -> int:
    """Hand up to ``max_pages`` free pages back to the filesystem; returns how many were freed."""
    free_pages = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    pages = min(free_pages, max_pages)
    for _ in range(pages):
        # One page per statement: Python's sqlite3 steps a PRAGMA once, and each step of
        # incremental_vacuum frees one page (measured: about 5 µs per page).
        conn.execute("PRAGMA incremental_vacuum(1)")
    return pages


def _sum(a: MaintenanceReport, b: MaintenanceReport) -> MaintenanceReport:
    return MaintenanceReport(*(x + y for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b), strict=True)))


def _migrate_dedup_keys(conn: sqlite3.Connection) -> None:
    """Schema 3: transport ids and body hashes move into the append-only ``dedup_keys``."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table, column, kind in (("transport_ids", "transport_id", TRANSPORT), ("body_hashes", "body_sha256", BODY)):
        if table not in tables:
            continue
        rows = conn.execute(f"SELECT seen_at, {column}, event_id FROM {table} ORDER BY seen_at").fetchall()
        conn.executemany(
            "INSERT INTO dedup_keys(seen_at, key, event_id) VALUES (?, ?, ?)",
            [(seen_at, dedup_key(kind, value), event_id) for seen_at, value, event_id in rows],
        )
        conn.execute(f"DROP TABLE {table}")


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _ignore_result(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # a failed checkpoint is retried by maintenance; do not warn about it here


def _next_event_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return (row[0] if row else 0) + 1


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "AppendResult",
    "BufferLimits",
    "BufferReader",
    "BufferState",
    "DeadLetter",
    "DiskFull",
    "Replay",
    "SqliteBuffer",
]
