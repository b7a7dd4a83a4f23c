"""A damaged buffer file: detected at start, moved aside, salvaged, and the loss reported exactly."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

import pytest

from forwarder.buffer import SqliteBuffer
from forwarder.types import Position, Webhook

pytestmark = pytest.mark.anyio


def webhook(n: int, size: int = 200) -> Webhook:
    body = b'{"n":%d,"pad":"%s"}' % (n, b"x" * size)
    return Webhook(body=body, body_sha256=f"{n:064x}", event_name="project_snapshot/v0", received_at=time.time())


async def fill(state: Path, count: int, size: int = 200) -> None:
    buffer = SqliteBuffer.open(state, outputs=["a", "b"], dedup_bodies=False)
    for n in range(1, count + 1):
        await buffer.append(webhook(n, size))
    await buffer.advance("a", Position(count // 2, 0))
    await buffer.checkpoint()  # everything in the main file, as after a quiet period
    await buffer.close()


def event_ids(state: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(state / "buffer.db")) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM events ORDER BY id")]


async def test_a_sound_file_is_left_alone(tmp_path: Path) -> None:
    await fill(tmp_path, 10)
    buffer = SqliteBuffer.open(tmp_path, outputs=["a", "b"])
    await buffer.close()
    assert buffer.state.salvage is None
    assert not list(tmp_path.glob("damaged-*"))


async def test_damaged_pages_are_salvaged_and_the_loss_is_named(tmp_path: Path) -> None:
    await fill(tmp_path, 300, size=3000)  # bodies spread over many pages
    db = tmp_path / "buffer.db"
    page_size = 4096
    with db.open("r+b") as fh:  # overwrite a run of pages in the middle with garbage
        fh.seek(page_size * 120)
        fh.write(os.urandom(page_size * 6))
    buffer = SqliteBuffer.open(tmp_path, outputs=["a", "b"])
    report = buffer.state.salvage
    positions = await buffer.positions()
    new = await buffer.append(webhook(1000))
    await buffer.close()
    assert report is not None
    assert report.moved_to.parent == tmp_path and (report.moved_to / "buffer.db").exists()
    assert 0 < report.events_lost < 300 and report.events_salvaged + report.events_lost == 300
    survivors = event_ids(tmp_path)
    assert len(survivors) == report.events_salvaged + 1
    lost = {i for low, high in report.lost_event_ids for i in range(low, high + 1)}
    assert lost.isdisjoint(survivors) and lost | set(survivors) >= set(range(1, 301))
    assert positions == {"a": Position(150, 0), "b": Position(1, 0)}  # cursors survived
    assert new.event_id == 301, "new ids never reuse an old one"
    text = report.describe()
    assert str(report.moved_to) in text and f"lost {report.events_lost} undelivered events" in text


async def test_a_truncated_file_still_starts_and_reports(tmp_path: Path) -> None:
    await fill(tmp_path, 200, size=3000)
    db = tmp_path / "buffer.db"
    with db.open("r+b") as fh:
        fh.truncate(db.stat().st_size // 2)
    buffer = SqliteBuffer.open(tmp_path, outputs=["a", "b"])
    report = buffer.state.salvage
    result = await buffer.append(webhook(5000))
    await buffer.close()
    assert report is not None and report.events_lost > 0
    assert result.event_id is not None
    again = SqliteBuffer.open(tmp_path, outputs=["a", "b"])  # a second start finds nothing more to report
    await again.close()
    assert again.state.salvage is None


async def test_garbage_instead_of_a_database_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "buffer.db").write_bytes(b"this is not a database" * 100)
    buffer = SqliteBuffer.open(tmp_path, outputs=["a"])
    await buffer.close()
    assert buffer.state.salvage is not None
    assert buffer.state.salvage.events_salvaged == 0
    assert (buffer.state.salvage.moved_to / "buffer.db").read_bytes().startswith(b"this is not a database")
