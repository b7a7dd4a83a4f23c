"""`status` and `replay` read and change the buffer from another process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from forwarder.buffer import SqliteBuffer
from forwarder.buffer.admin import output_state, read_status, replay
from forwarder.buffer.sqlite import DeadLetter
from forwarder.errors import StorageError
from forwarder.types import Position, Record, Webhook

pytestmark = pytest.mark.anyio


def record(n: int) -> Record:
    return Record(f"r{n}", Position(1, n), 1709802303120, "high", "introduced", {"event": {"id": f"r{n}"}})


async def test_status_shows_queues_errors_and_dead_letters(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path, outputs=["local", "siem"])
    for n in range(3):
        body = b'{"n":%d}' % n
        await buffer.append(
            Webhook(
                body=body, body_sha256=f"{n:064x}", event_name="project_snapshot/v0", received_at=time.time() - 3600
            )
        )
    await buffer.advance("local", Position(4, 0), delivered=3)
    await buffer.advance("siem", Position(2, 0), delivered=1, dead=[DeadLetter(record(0), "too big", 1, b"x")])
    await buffer.note_error("siem", "Invalid token (code 4)", paused=True)
    await buffer.close()
    status = read_status(tmp_path, ["local", "siem"])
    by_name = {o.name: o for o in status.outputs}
    assert status.events == 3
    assert by_name["local"].pending_events == 0 and by_name["local"].delivered == 3
    siem = by_name["siem"]
    assert siem.pending_events == 2 and siem.dead_letters == 1
    assert siem.oldest_pending_age_s is not None and siem.oldest_pending_age_s >= 3500
    assert siem.paused == "Invalid token (code 4)"
    assert status.recent_dead_letters[0].reason == "too big"


async def test_replay_moves_dead_letters_back_by_output_and_time(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path, outputs=["siem", "archive"])
    await buffer.advance("siem", None, dead=[DeadLetter(record(n), "refused", 3, b"x") for n in range(3)])
    await buffer.close()
    cutoff = time.time() + 1
    assert replay(tmp_path, "siem", until=cutoff - 3600) == (0, 0)
    assert replay(tmp_path, "siem", since=cutoff - 3600, into="archive") == (3, 0)
    assert read_status(tmp_path).outputs[0].replays_queued == 3  # archive sorts first
    with pytest.raises(StorageError, match="no output named"):
        replay(tmp_path, "siem", into="nope")
    buffer = SqliteBuffer.open(tmp_path, outputs=["siem", "archive"])
    reader = buffer.reader()
    queued = await reader.replays("archive", 10)
    assert [r.record.id for r in queued] == ["r0", "r1", "r2"]
    await buffer.advance("archive", None, delivered=3, replayed=[r.id for r in queued])
    assert await reader.replays("archive", 10) == []
    reader.close()
    await buffer.close()
    await asyncio.sleep(0)


def test_an_output_state_says_retrying_only_while_the_error_is_newer_than_progress() -> None:
    assert output_state(pending=2, updated_at=100.0, last_error_at=150.0, paused=None) == "retrying"
    assert output_state(pending=2, updated_at=200.0, last_error_at=150.0, paused=None) == "sending"
    assert output_state(pending=0, updated_at=100.0, last_error_at=150.0, paused=None) == "ok"
    assert output_state(pending=2, updated_at=100.0, last_error_at=150.0, paused="bad token") == "paused"


async def test_status_sees_a_released_reserve_as_a_full_disk(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path, outputs=["local"])
    await buffer.close()
    assert not read_status(tmp_path).reserve_released
    (tmp_path / "reserve.bin").unlink()
    status = read_status(tmp_path)
    assert status.reserve_released and status.free_bytes > 0
