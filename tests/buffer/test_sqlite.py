"""The durable buffer: fsynced appends, group commit, dedup, cursors, retention, crash recovery."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from forwarder.buffer import SqliteBuffer
from forwarder.buffer.lock import DirectoryInUse, DirectoryLock
from forwarder.buffer.sqlite import DeadLetter
from forwarder.buffer.writer import GroupCommitter
from forwarder.errors import DiskFull, StorageError
from forwarder.types import EventKind, Position, Record, Webhook

pytestmark = pytest.mark.anyio


def webhook(
    n: int, *, transport_id: str | None = None, kind: EventKind = "snapshot", at: float | None = None
) -> Webhook:
    body = b'{"n":%d}' % n
    return Webhook(
        body=body,
        body_sha256=f"{n:064x}",
        event_name="project_snapshot/v0",
        received_at=time.time() if at is None else at,
        kind=kind,
        transport_id=transport_id,
    )


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return list(conn.execute(sql))


async def test_an_append_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"])
    result = await buffer.append(webhook(1, transport_id="t1"))
    # a separate connection (another process would see the same) finds the committed row
    assert rows(buffer.path, "SELECT id, body FROM events") == [(result.event_id, b'{"n":1}')]
    assert rows(buffer.path, "PRAGMA journal_mode") == [("wal",)]
    await buffer.close()


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    commits: list[int] = []
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"], on_commit=lambda _seconds, n: commits.append(n))
    results = await asyncio.gather(*(buffer.append(webhook(i)) for i in range(300)))
    await buffer.close()
    assert sorted(r.event_id for r in results) == list(range(1, 301))  # type: ignore[type-var]
    assert sum(commits) == 300
    assert len(commits) < 300, "every append paid for its own fsync"


async def test_dedup_by_transport_id_survives_a_restart(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"])
    first = await buffer.append(webhook(1, transport_id="998fe884-18a0-45db-8ae0-e379eea3bc0a"))
    await buffer.close()
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"])
    again = await buffer.append(webhook(1, transport_id="998fe884-18a0-45db-8ae0-e379eea3bc0a"))
    other = await buffer.append(webhook(2, transport_id="another"))
    await buffer.close()
    assert again.duplicate and again.event_id == first.event_id
    assert not other.duplicate
    assert len(rows(buffer.path, "SELECT id FROM events")) == 2


async def test_the_same_body_is_stored_once_whatever_its_transport_id(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"])
    first = await buffer.append(webhook(1, transport_id="webhook-old"))
    second = await buffer.append(webhook(1, transport_id="webhook-new"))  # secret rotation: two webhooks
    again = await buffer.append(webhook(1, transport_id="webhook-new"))
    await buffer.close()
    assert not first.duplicate and second.duplicate and again.duplicate
    assert second.event_id == first.event_id
    relaxed = SqliteBuffer.open(tmp_path / "relaxed", outputs=["a"], dedup_bodies=False)
    results = [await relaxed.append(webhook(1, transport_id=f"t{i}")) for i in range(2)]
    await relaxed.close()
    assert [r.duplicate for r in results] == [False, False]


async def test_unknown_events_go_to_quarantine_and_are_never_read_for_shipping(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"])
    result = await buffer.append(webhook(1, kind="unknown"))
    reader = buffer.reader()
    assert result.quarantined
    assert await reader.events_from(0) == []
    reader.close()
    await buffer.close()
    assert len(rows(buffer.path, "SELECT id FROM quarantine")) == 1


async def test_a_new_output_starts_at_the_next_event(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"])
    await buffer.append(webhook(1))
    await buffer.append(webhook(2))
    await buffer.close()
    buffer = SqliteBuffer.open(tmp_path, outputs=["a", "b"])
    positions = await buffer.positions()
    await buffer.close()
    assert positions == {"a": Position(1, 0), "b": Position(3, 0)}


async def test_advance_moves_the_cursor_and_keeps_dead_letters(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"])
    await buffer.append(webhook(1))
    record = Record("r1", Position(1, 3), 1709802303120, "high", "introduced", {"event": {"id": "r1"}})
    dead = DeadLetter(record=record, reason="too big", attempts=2, message=b"{}")
    await buffer.advance("a", Position(1, 7), delivered=6, dead=[dead])
    await buffer.close()
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"])
    assert (await buffer.positions())["a"] == Position(1, 7)
    await buffer.close()
    assert rows(
        buffer.path, "SELECT output, record_id, event_id, record_index, reason, attempts FROM dead_letters"
    ) == [("a", "r1", 1, 3, "too big", 2)]
    assert rows(buffer.path, "SELECT delivered FROM cursors") == [(6,)]


async def test_retention_purges_only_what_every_output_has(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path, outputs=["a", "b"], dedup_window=100.0)
    for i in range(1, 5):
        await buffer.append(webhook(i, transport_id=f"t{i}", at=1000.0 + i))
    await buffer.advance("a", Position(4, 0))
    await buffer.advance("b", Position(3, 2))  # b is inside event 3
    report = await buffer.maintain(now=1103.5)
    assert report.events_purged == 2  # events 1 and 2
    assert report.dedup_keys_expired == 6  # transport ids and body hashes of events 1..3 (> 100 s old)
    assert report.bytes_freed == len(b'{"n":1}') + len(b'{"n":2}')
    assert [r[0] for r in rows(buffer.path, "SELECT id FROM events")] == [3, 4]
    await buffer.advance("a", Position(5, 0))
    await buffer.advance("b", Position(5, 0))
    await buffer.maintain(now=1103.5)
    new = await buffer.append(webhook(9))
    await buffer.close()
    assert new.event_id == 5, "ids never go back after the newest events are purged"


async def test_reader_pages_by_count_and_bytes(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"])
    for i in range(10):
        await buffer.append(webhook(i))
    reader = buffer.reader()
    assert [e.id for e in await reader.events_from(3, max_events=4)] == [3, 4, 5, 6]
    assert [e.id for e in await reader.events_from(3, max_bytes=1)] == [3]
    assert await reader.events_from(11) == []
    reader.close()
    await buffer.close()


async def test_one_failing_operation_does_not_fail_its_neighbours(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (v INTEGER UNIQUE)")
    committer = GroupCommitter(conn, asyncio.get_running_loop())

    def insert(v: int) -> Callable[[sqlite3.Connection], int]:
        return lambda c: c.execute("INSERT INTO t VALUES (?)", (v,)).rowcount

    futures = [committer.submit(insert(1)), committer.submit(insert(1)), committer.submit(insert(2))]
    results = await asyncio.gather(*futures, return_exceptions=True)
    committer.close()
    assert results[0] == 1 and results[2] == 1
    assert isinstance(results[1], StorageError)
    assert sorted(conn.execute("SELECT v FROM t")) == [(1,), (2,)]
    conn.close()


CRASH_WRITER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from pathlib import Path
    from forwarder.buffer import SqliteBuffer
    from forwarder.types import Webhook

    async def main():
        buffer = SqliteBuffer.open(Path(sys.argv[1]), outputs=["a"])
        for i in range(1, 4):
            body = b'{"n":%d}' % i
            await buffer.append(Webhook(body=body, body_sha256="%064x" % i, event_name="project_snapshot/v0",
                                        received_at=time.time()))
        print("acked", flush=True)
        big = b'{"pad":"' + b"x" * (64 << 20) + b'"}'
        await buffer.append(Webhook(body=big, body_sha256="f" * 64, event_name="project_snapshot/v0",
                                    received_at=time.time()))
        print("all acked", flush=True)

    asyncio.run(main())
    """
)


def test_c19_kill_during_a_large_append_keeps_every_acknowledged_event(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-c", CRASH_WRITER, str(state)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"acked\n"
    wal = state / "buffer.db-wal"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and wal.stat().st_size < (8 << 20):  # R4 is being written
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    # and tear the WAL's tail as a power cut in mid-write would
    with wal.open("ab") as fh:
        fh.write(os.urandom(3000))

    async def reopen() -> list[int]:
        buffer = SqliteBuffer.open(state, outputs=["a"])
        reader = buffer.reader()
        events = await reader.events_from(0)
        new = await buffer.append(webhook(5))
        reader.close()
        await buffer.close()
        return [e.id for e in events] + [new.event_id or 0]

    ids = asyncio.run(reopen())
    assert ids[:3] == [1, 2, 3]
    assert len(ids) == 4, "the torn 4th delivery must not appear"
    assert rows(state / "buffer.db", "PRAGMA integrity_check") == [("ok",)]


async def test_dedup_keys_expire_in_memory_too(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"], dedup_window=100.0)
    await buffer.append(webhook(1, transport_id="old", at=time.time() - 200))
    await buffer.maintain()
    again = await buffer.append(webhook(1, transport_id="old"))
    await buffer.close()
    assert not again.duplicate, "a key older than the window no longer deduplicates"


async def test_a_rolled_back_append_leaves_no_dedup_key_behind(tmp_path: Path) -> None:
    """A delivery that failed to store (503) must be stored when the sender retries it."""
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"])
    failing = webhook(7, transport_id="retry-me")

    def explode(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    # the append and a failing operation share one transaction; the batch rolls back and the
    # append is retried alone, so its key must exist exactly once, from the committed retry
    results = await asyncio.gather(buffer.append(failing), buffer._writer.submit(explode), return_exceptions=True)
    assert not isinstance(results[0], BaseException) and not results[0].duplicate
    retry = await buffer.append(failing)
    await buffer.close()
    assert retry.duplicate and retry.event_id == results[0].event_id
    assert len(rows(buffer.path, "SELECT id FROM events")) == 1


async def test_schema_2_dedup_tables_are_migrated(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "buffer.db")
    conn.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
        "INSERT INTO meta VALUES ('schema_version', '2');"
        "CREATE TABLE transport_ids (transport_id TEXT PRIMARY KEY, seen_at REAL NOT NULL, event_id INTEGER);"
        "CREATE TABLE body_hashes (body_sha256 TEXT PRIMARY KEY, seen_at REAL NOT NULL, event_id INTEGER);"
        "CREATE TABLE cursors (output TEXT PRIMARY KEY, event_id INTEGER NOT NULL, record_index INTEGER NOT NULL,"
        " delivered INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL, last_error TEXT, last_error_at REAL,"
        " paused TEXT) WITHOUT ROWID;"
        "CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, output TEXT NOT NULL,"
        " record_id TEXT NOT NULL,"
        " event_id INTEGER NOT NULL, record_index INTEGER NOT NULL, reason TEXT NOT NULL, attempts INTEGER NOT NULL,"
        " failed_at REAL NOT NULL, message BLOB NOT NULL, time_ms INTEGER NOT NULL DEFAULT 0, severity TEXT,"
        " action TEXT NOT NULL DEFAULT 'introduced', document BLOB);"
    )
    now = time.time()
    conn.execute("INSERT INTO transport_ids VALUES ('tid-1', ?, 4)", (now,))
    conn.execute("INSERT INTO body_hashes VALUES (?, ?, 4)", (f"{1:064x}", now))
    conn.commit()
    conn.close()
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"])
    by_tid = await buffer.append(webhook(9, transport_id="tid-1"))
    by_body = await buffer.append(webhook(1, transport_id="tid-2"))
    await buffer.close()
    assert by_tid.duplicate and by_tid.event_id == 4
    assert by_body.duplicate and by_body.event_id == 4
    tables = {name for (name,) in rows(buffer.path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "dedup_keys" in tables and not {"transport_ids", "body_hashes"} & tables


async def test_a_second_opener_of_the_state_directory_is_refused_naming_the_holder(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"])
    try:
        with pytest.raises(DirectoryInUse, match=rf"pid {os.getpid()}\b.*{tmp_path}"):
            SqliteBuffer.open(tmp_path, outputs=["a"])
    finally:
        await buffer.close()
    again = SqliteBuffer.open(tmp_path, outputs=["a"])  # the lock goes with the holder
    await again.close()


def test_the_lock_of_a_killed_daemon_does_not_block_the_restart(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from forwarder.buffer.lock import "
            "DirectoryLock; DirectoryLock.acquire(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        with pytest.raises(DirectoryInUse, match=f"pid {holder.pid}"):
            DirectoryLock.acquire(tmp_path)
    finally:
        holder.kill()
        holder.wait(timeout=10)
        assert holder.stdout is not None
        holder.stdout.close()
    DirectoryLock.acquire(tmp_path).release()


async def test_a_deleted_buffer_file_refuses_deliveries_but_keeps_draining(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    buffer = SqliteBuffer.open(tmp_path / "state", outputs=["a"])
    reader = buffer.reader()  # a running shipper's connection
    try:
        await buffer.append(webhook(1))
        assert buffer.admission() is None
        shutil.rmtree(tmp_path / "state")
        assert buffer.admission() == "file_lost"
        assert buffer.admission() == "file_lost"  # sticky, and logged once
        lost = [r for r in caplog.records if "deleted or replaced" in r.getMessage()]
        assert len(lost) == 1 and "restart the service" in lost[0].getMessage()
        page = await reader.events_from(0)  # what was stored still ships
        assert [e.webhook.body for e in page] == [b'{"n":1}']
    finally:
        reader.close()
        await buffer.close()


async def test_one_maintenance_pass_hands_a_burst_back_to_the_filesystem(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"])
    try:
        for n in range(40):  # 20 MiB: five times what one vacuum chunk frees
            body = b'{"n":%d,"pad":"%s"}' % (n, b"x" * (512 << 10))
            await buffer.append(
                Webhook(body=body, body_sha256=f"{n:064x}", event_name="project_snapshot/v0", received_at=time.time())
            )
        await buffer.advance("a", Position(41, 0), delivered=40)
        grown = (tmp_path / "buffer.db").stat().st_size
        report = await buffer.maintain()
        assert report.events_purged == 40
        assert report.pages_vacuumed * 4096 >= 19 << 20
        assert (tmp_path / "buffer.db").stat().st_size < grown // 10
    finally:
        await buffer.close()


async def test_on_a_full_disk_maintenance_steps_shrink_until_they_fit(tmp_path: Path) -> None:
    """A step too large for the space left is retried smaller: a drained buffer never stays full."""
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"])
    try:
        for n in range(10):
            await buffer.append(webhook(n))
        await buffer.advance("a", Position(11, 0), delivered=10)
        submit = buffer._writer.submit
        sizes: list[int] = []

        def tight(fn: Callable[..., object], **kwargs: object) -> object:
            size = getattr(fn, "args", (None, None))[1]
            if isinstance(size, int):
                sizes.append(size)
                if size > 4:  # only four units of work fit on the disk
                    raise DiskFull("disk full while writing the buffer: database or disk is full")
            return submit(fn, **kwargs)  # type: ignore[arg-type]

        buffer._writer.submit = tight  # type: ignore[method-assign,assignment]
        report = await buffer.maintain()
        assert report.events_purged == 10
        # purging: halved down to 4 events, then 4 + 4 + the last 2; vacuuming shrinks the same way
        assert sizes[:9] == [256, 128, 64, 32, 16, 8, 4, 4, 4]
        assert sizes[9:16] == [1024, 512, 256, 128, 64, 32, 16]
    finally:
        buffer._writer.submit = submit  # type: ignore[method-assign]
        await buffer.close()
