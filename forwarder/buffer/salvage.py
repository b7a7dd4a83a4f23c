"""Detecting a damaged buffer file at start, and starting again from what can still be read.

A crash in the middle of a write never damages SQLite's file (an uncommitted transaction or a
torn WAL tail is ignored on recovery, acceptance case C-19). Real damage — a disk error, a truncated
copy, an overwritten page — is another matter: refusing to start would stop all forwarding
(a crash loop under systemd), and starting with an empty buffer would silently lose data.

So at start (``[buffer] integrity_check``, ``quick`` by default) the file is checked; if it is
damaged, the daemon
1. moves the damaged files (database, WAL, shared memory) into ``damaged-<time>/`` beside it,
   untouched, for later forensics (reading happens on a copy, padded back to its header's size
   when the file was truncated);
2. copies every row it can still read into a fresh database — events one id at a time when a
   table scan fails part-way — and keeps the id sequence, so new events never reuse an old id;
3. restores each output's cursor, or, where the cursor itself is unreadable, starts the output at
   the oldest salvaged event (re-sending, never skipping);
4. reports exactly what was lost: the ids of undelivered events it could not read, per output.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Connect = Callable[..., sqlite3.Connection]

# Tables copied as they are (rowid tables are re-read one row at a time when a scan fails).
_PLAIN_TABLES = ("meta", "dedup_keys", "dead_letters", "replays", "quarantine")
_EVENT_COLUMNS = "id, received_at, event_name, transport_id, snyk_timestamp, body_sha256, body"


@dataclass(frozen=True, slots=True)
class SalvageReport:
    reason: str
    moved_to: Path
    events_salvaged: int
    lost_event_ids: tuple[tuple[int, int], ...]
    lost_by_output: dict[str, int]
    unreadable: dict[str, int] = field(default_factory=dict)
    cursors_reset: tuple[str, ...] = ()

    @property
    def events_lost(self) -> int:
        return sum(high - low + 1 for low, high in self.lost_event_ids)

    def describe(self) -> str:
        ranges = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.lost_event_ids) or "none"
        text = (
            f"the buffer file was damaged ({self.reason}); it was moved to {self.moved_to}. Salvaged "
            f"{self.events_salvaged} events; lost {self.events_lost} undelivered events (ids: {ranges})"
        )
        if self.lost_by_output:
            text += "; per output: " + ", ".join(f"{k} {v}" for k, v in sorted(self.lost_by_output.items()))
        if self.unreadable:
            text += "; other unreadable rows: " + ", ".join(f"{k} {v}" for k, v in sorted(self.unreadable.items()))
        if self.cursors_reset:
            text += "; outputs restarted at the oldest salvaged event: " + ", ".join(self.cursors_reset)
        return text


def check_and_salvage(path: Path, outputs: Sequence[str], *, mode: str, connect: Connect) -> SalvageReport | None:
    """``None`` when the file is sound (or checking is off); otherwise salvage and report."""
    if mode == "off":
        return None
    problem = _problem(path, mode, connect)
    if problem is None:
        return None
    return _salvage(path, outputs, problem, connect)


def _problem(path: Path, mode: str, connect: Connect) -> str | None:
    try:
        conn = connect(path)
    except Exception as exc:  # storage_error already mapped it; the cause is what matters
        return str(exc.__cause__ or exc)
    try:
        pragma = "PRAGMA integrity_check(20)" if mode == "full" else "PRAGMA quick_check(20)"
        rows = [r[0] for r in conn.execute(pragma)]
        if rows != ["ok"]:
            return "; ".join(rows[:3])
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    return None


def _salvage(path: Path, outputs: Sequence[str], reason: str, connect: Connect) -> SalvageReport:
    from forwarder.buffer.schema import DDL, SCHEMA_VERSION

    moved_to = path.parent / time.strftime("damaged-%Y%m%dT%H%M%SZ", time.gmtime())
    moved_to.mkdir(mode=0o700, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            shutil.move(str(source), str(moved_to / source.name))
    work = moved_to / "work"
    damaged = _open_damaged(_readable_copy(moved_to / path.name, work))
    fresh = connect(path, new=True)
    unreadable: dict[str, int] = {}
    try:
        fresh.executescript(DDL)
        fresh.execute("BEGIN IMMEDIATE")
        for table in _PLAIN_TABLES:
            lost = _copy_table(damaged, fresh, table)
            if lost:
                unreadable[table] = lost
        fresh.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        cursors = _read_cursors(damaged)
        salvaged, highest = _copy_events(damaged, fresh, cursors)
        oldest = min(salvaged) if salvaged else highest + 1
        reset = tuple(name for name in outputs if name not in cursors)
        now = time.time()
        for name in outputs:
            event_id, index, delivered = cursors.get(name, (oldest, 0, 0))
            fresh.execute(
                "INSERT OR REPLACE INTO cursors(output, event_id, record_index, delivered, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, event_id, index, delivered, now),
            )
        if highest:
            fresh.execute("DELETE FROM sqlite_sequence WHERE name = 'events'")
            fresh.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('events', ?)", (highest,))
        fresh.execute("COMMIT")
    finally:
        fresh.close()
        if damaged is not None:
            damaged.close()
        shutil.rmtree(work, ignore_errors=True)
    floor = min((c[0] for c in cursors.values()), default=min(salvaged, default=highest + 1))
    missing = [i for i in range(floor, highest + 1) if i not in salvaged]
    lost_by_output = {
        name: sum(1 for i in missing if i >= cursors.get(name, (oldest, 0, 0))[0])
        for name in outputs
        if any(i >= cursors.get(name, (oldest, 0, 0))[0] for i in missing)
    }
    return SalvageReport(reason, moved_to, len(salvaged), tuple(_ranges(missing)), lost_by_output, unreadable, reset)


def _readable_copy(original: Path, work: Path) -> Path:
    """A copy to read from, padded back to the size its header claims: SQLite refuses every query
    on a file shorter than that, while the padded copy yields every row on the surviving pages."""
    work.mkdir(exist_ok=True)
    copy = work / original.name
    shutil.copyfile(original, copy)
    wal = original.with_name(original.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, work / wal.name)
    with copy.open("r+b") as fh:
        header = fh.read(100)
        if len(header) == 100 and header.startswith(b"SQLite format 3\0"):
            page_size = int.from_bytes(header[16:18], "big")
            page_size = 65536 if page_size == 1 else page_size
            claimed = int.from_bytes(header[28:32], "big") * page_size
            if claimed > copy.stat().st_size:
                fh.truncate(claimed)  # extends with zero bytes
    return copy


def _open_damaged(path: Path) -> sqlite3.Connection | None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        conn.execute("SELECT 1").fetchone()
        return conn
    except sqlite3.DatabaseError:
        return None


def _copy_table(src: sqlite3.Connection | None, dst: sqlite3.Connection, table: str) -> int:
    """Copy what can be read; returns how many rows were known to exist but could not be read."""
    if src is None:
        return 0
    try:
        columns = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
    except sqlite3.DatabaseError:
        return 0
    if not columns:
        return 0
    wanted = [r[1] for r in dst.execute(f"PRAGMA table_info({table})")]
    shared = [c for c in columns if c in wanted]
    names = ", ".join(shared)
    insert = f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({', '.join('?' * len(shared))})"
    try:
        for row in src.execute(f"SELECT {names} FROM {table}"):
            dst.execute(insert, row)
        return 0
    except sqlite3.DatabaseError:
        pass
    if "id" not in shared:  # WITHOUT ROWID tables: what the scan reached is what we have
        return 1
    lost = 0
    for rowid in _id_range(src, table):
        try:
            row = src.execute(f"SELECT {names} FROM {table} WHERE id = ?", (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            lost += 1
            continue
        if row is not None:
            dst.execute(insert, row)
    return lost


def _read_cursors(src: sqlite3.Connection | None) -> dict[str, tuple[int, int, int]]:
    if src is None:
        return {}
    with contextlib.suppress(sqlite3.DatabaseError):
        return {
            r[0]: (r[1], r[2], r[3])
            for r in src.execute("SELECT output, event_id, record_index, delivered FROM cursors")
        }
    return {}


def _copy_events(
    src: sqlite3.Connection | None, dst: sqlite3.Connection, cursors: dict[str, tuple[int, int, int]]
) -> tuple[set[int], int]:
    """Copy events; returns (salvaged ids, highest id that ever existed as far as we can tell)."""
    salvaged: set[int] = set()
    highest = max((c[0] - 1 for c in cursors.values()), default=0)
    if src is None:
        return salvaged, highest
    insert = f"INSERT OR IGNORE INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    for query in ("SELECT seq FROM sqlite_sequence WHERE name = 'events'", "SELECT MAX(id) FROM events"):
        with contextlib.suppress(sqlite3.DatabaseError):
            row = src.execute(query).fetchone()
            if row and row[0]:
                highest = max(highest, int(row[0]))
    last = 0
    try:
        for row in src.execute(f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY id"):
            dst.execute(insert, row)
            salvaged.add(row[0])
            last = row[0]
        return salvaged, max(highest, last)
    except sqlite3.DatabaseError:
        pass
    for event_id in range(last + 1, highest + 1):
        try:
            row = src.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None:
            dst.execute(insert, row)
            salvaged.add(row[0])
    return salvaged, highest


def _id_range(src: sqlite3.Connection, table: str) -> Iterator[int]:
    top = 0
    for query in (f"SELECT seq FROM sqlite_sequence WHERE name = '{table}'", f"SELECT MAX(id) FROM {table}"):
        with contextlib.suppress(sqlite3.DatabaseError):
            row = src.execute(query).fetchone()
            if row and row[0]:
                top = max(top, int(row[0]))
    return iter(range(1, top + 1))


def _ranges(ids: list[int]) -> Iterator[tuple[int, int]]:
    start = prev = None
    for i in ids:
        if start is None:
            start = prev = i
        elif prev is not None and i == prev + 1:
            prev = i
        else:
            assert prev is not None
            yield (start, prev)
            start = prev = i
    if start is not None and prev is not None:
        yield (start, prev)
