"""Operator views of the buffer, from any process: ``status``, dead letters and ``replay``.

These open their own connection, so they work whether or not the daemon is running (SQLite's
WAL lets a reader look while the daemon writes, and a replay waits its turn for the write lock).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from forwarder.buffer.space import RESERVE_NAME
from forwarder.buffer.sqlite import DB_NAME
from forwarder.errors import StorageError


@dataclass(frozen=True, slots=True)
class OutputState:
    name: str
    event_id: int
    record_index: int
    pending_events: int
    oldest_pending_age_s: float | None
    delivered: int
    dead_letters: int
    replays_queued: int
    last_error: str | None
    last_error_at: float | None
    paused: str | None
    # ok (nothing pending), sending, retrying (the latest attempt failed after the last progress)
    # or paused (the destination refused our configuration).
    state: str = "ok"


def output_state(pending: int, updated_at: float, last_error_at: float | None, paused: str | None) -> str:
    if paused:
        return "paused"
    if last_error_at is not None and last_error_at > updated_at and pending:
        return "retrying"
    return "sending" if pending else "ok"


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    id: int
    output: str
    record_id: str
    event_id: int
    record_index: int
    reason: str
    attempts: int
    failed_at: float
    replayable: bool


@dataclass(frozen=True, slots=True)
class BufferStatus:
    path: Path
    file_bytes: int
    stored_bytes: int
    events: int
    quarantined: int
    outputs: list[OutputState] = field(default_factory=list)
    free_bytes: int = 0
    # The disk-full reserve is missing: the daemon released it because the disk filled up.
    reserve_released: bool = False
    recent_dead_letters: list[DeadLetterRow] = field(default_factory=list)


@contextlib.contextmanager
def _open(state_dir: Path) -> Iterator[sqlite3.Connection]:
    path = state_dir / DB_NAME
    if not path.exists():
        raise StorageError(f"no buffer at {path}: has the daemon ever run with this state directory?")
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    try:
        yield conn
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()


def read_status(
    state_dir: Path, outputs: list[str] | None = None, now: float | None = None, *, reserve_expected: bool = True
) -> BufferStatus:
    """Everything ``snyk-forwarder status`` shows; ``outputs`` limits it to the configured ones."""
    moment = time.time() if now is None else now
    path = state_dir / DB_NAME
    with _open(state_dir) as conn:
        events, stored = conn.execute("SELECT COUNT(*), COALESCE(SUM(length(body)), 0) FROM events").fetchone()
        quarantined = conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
        rows = conn.execute(
            "SELECT output, event_id, record_index, delivered, last_error, last_error_at, paused, updated_at "
            "FROM cursors ORDER BY output"
        ).fetchall()
        states = []
        for name, event_id, index, delivered, last_error, last_error_at, paused, updated_at in rows:
            if outputs is not None and name not in outputs:
                continue
            pending, oldest = conn.execute(
                "SELECT COUNT(*), MIN(received_at) FROM events WHERE id >= ?", (event_id,)
            ).fetchone()
            dead = conn.execute("SELECT COUNT(*) FROM dead_letters WHERE output = ?", (name,)).fetchone()[0]
            queued = conn.execute("SELECT COUNT(*) FROM replays WHERE output = ?", (name,)).fetchone()[0]
            states.append(
                OutputState(
                    name,
                    event_id,
                    index,
                    pending,
                    None if oldest is None else max(0.0, moment - oldest),
                    delivered,
                    dead,
                    queued,
                    last_error,
                    last_error_at,
                    paused,
                    output_state(pending, updated_at, last_error_at, paused),
                )
            )
        recent = dead_letters(conn, limit=20)
    size = sum(p.stat().st_size for p in state_dir.glob(DB_NAME + "*") if p.is_file())
    disk = os.statvfs(state_dir)
    return BufferStatus(
        path,
        size,
        stored,
        events,
        quarantined,
        states,
        recent_dead_letters=recent,
        free_bytes=disk.f_bavail * disk.f_frsize,
        reserve_released=reserve_expected and not (state_dir / RESERVE_NAME).exists(),
    )


def dead_letters(
    conn: sqlite3.Connection,
    *,
    output: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
) -> list[DeadLetterRow]:
    where, args = _filter(output, since, until)
    sql = (
        "SELECT id, output, record_id, event_id, record_index, reason, attempts, failed_at, document IS NOT NULL "
        f"FROM dead_letters {where} ORDER BY failed_at DESC"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [
        DeadLetterRow(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], replayable=bool(row[8]))
        for row in conn.execute(sql, args)
    ]


def replay(
    state_dir: Path, output: str, *, since: float | None = None, until: float | None = None, into: str | None = None
) -> tuple[int, int]:
    """Move ``output``'s dead letters (optionally by failure time) back into a replay queue — its own
    or ``into`` another output's. Returns (queued, skipped); skipped rows predate stored records."""
    target = into or output
    where, args = _filter(output, since, until)
    now = time.time()
    with _open(state_dir) as conn:
        if conn.execute("SELECT 1 FROM cursors WHERE output = ?", (target,)).fetchone() is None:
            raise StorageError(f"no output named {target!r} in this buffer; see `snyk-forwarder status`")
        conn.execute("BEGIN IMMEDIATE")
        try:
            queued = conn.execute(
                "INSERT INTO replays(output, record_id, event_id, record_index, time_ms, severity, action, document, "
                f"queued_at) SELECT ?, record_id, event_id, record_index, time_ms, severity, action, document, ? "
                f"FROM dead_letters {where} AND document IS NOT NULL ORDER BY id",
                (target, now, *args),
            ).rowcount
            conn.execute(f"DELETE FROM dead_letters {where} AND document IS NOT NULL", args)
            skipped = conn.execute(f"SELECT COUNT(*) FROM dead_letters {where}", args).fetchone()[0]
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return queued, skipped


def _filter(output: str | None, since: float | None, until: float | None) -> tuple[str, tuple[object, ...]]:
    clauses: list[str] = ["1 = 1"]
    args: list[object] = []
    if output is not None:
        clauses.append("output = ?")
        args.append(output)
    if since is not None:
        clauses.append("failed_at >= ?")
        args.append(since)
    if until is not None:
        clauses.append("failed_at < ?")
        args.append(until)
    return "WHERE " + " AND ".join(clauses), tuple(args)
