"""The per-output delivery loop against the real buffer and scripted outputs."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from forwarder.buffer import SqliteBuffer
from forwarder.config.model import DeliveryConfig
from forwarder.formats import ecs_json
from forwarder.records import RecordStream
from forwarder.shipper import Shipper
from forwarder.types import Message, Outcome, Pause, Position, Record, Reject, Retry, Split, Webhook
from tests.fakes import RecordingOutput, ScriptedOutput
from tests.helpers import issue, sign, snapshot_body

pytestmark = pytest.mark.anyio
FAST = DeliveryConfig(
    batch_max_records=10,
    batch_timeout=0.0,
    retry_initial_backoff=0.02,
    retry_max_backoff=0.1,
    pause_probe_interval=0.05,
)


def event(body: bytes, n: int = 0) -> Webhook:
    import hashlib

    return Webhook(
        body=body,
        body_sha256=hashlib.sha256(body).hexdigest(),
        event_name="project_snapshot/v0",
        received_at=time.time(),
        transport_id=f"tid-{n}-{sign(body)[-8:]}",
    )


@dataclass
class Rig:
    buffer: SqliteBuffer
    path: Path
    running: list[tuple[Shipper, asyncio.Task[None]]]

    async def start(
        self, output: RecordingOutput, delivery: DeliveryConfig = FAST, *, summary: bool = False
    ) -> Shipper:
        position = (await self.buffer.positions())[output.name]
        stream = RecordStream(self.buffer.reader(), position, delivery, ecs_json.encode, summary=summary)
        shipper = Shipper(output, delivery, self.buffer, stream)
        self.running.append((shipper, asyncio.create_task(shipper.run())))
        return shipper

    async def stop(self) -> None:
        for shipper, task in self.running:
            shipper.stop()
            await asyncio.wait_for(task, 5)
            shipper.stream.close()
        self.running.clear()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    buffer = SqliteBuffer.open(tmp_path, outputs=["fake", "other"], dedup_bodies=False)
    r = Rig(buffer, tmp_path, [])
    yield r
    await r.stop()
    await buffer.close()


def many(n: int, severity: str = "high") -> bytes:
    return snapshot_body([issue(f"SNYK-JS-X-{i}", severity=severity) for i in range(n)])


async def test_records_arrive_in_order_across_events(rig: Rig) -> None:
    output = RecordingOutput()
    await rig.start(output)
    for n in range(3):
        await rig.buffer.append(event(many(4), n))
    await output.wait_for(12)
    positions = [(m.record.position.event_id, m.record.position.index) for m in output.delivered]
    assert positions == sorted(positions) and len(set(positions)) == 12
    await rig.stop()
    assert (await rig.buffer.positions())["fake"] == Position(4, 0)


async def test_a_large_snapshot_ships_in_batches_and_resumes_mid_way(rig: Rig) -> None:
    await rig.buffer.append(event(many(95)))
    first = ScriptedOutput(lambda n, _b: Retry("receiver went away") if n > 3 else None)
    shipper = await rig.start(first, replace(FAST, retry_initial_backoff=30.0, retry_max_backoff=30.0))
    await first.wait_for(30)
    await rig.stop()  # interrupts the 30 s backoff of the 4th batch
    saved = (await rig.buffer.positions())["fake"]
    assert saved == Position(1, 30)
    assert all(len(b) <= 10 for _, b in first.attempts)
    second = RecordingOutput()
    await rig.start(second)
    await second.wait_for(95 - saved.index)
    assert [m.record.position.index for m in second.delivered] == list(range(saved.index, 95))
    assert shipper.status.delivered == len(first.delivered)


async def test_c17a_busy_answers_are_retried_with_identical_bytes_and_growing_gaps(rig: Rig) -> None:
    output = ScriptedOutput(lambda n, _b: Retry("Server is busy") if n <= 2 else None)
    delivery = replace(FAST, retry_initial_backoff=0.1, retry_max_backoff=1.0)
    await rig.start(output, delivery)
    await rig.buffer.append(event(many(3)))
    await output.wait_for(3)
    assert len(output.attempts) == 3
    bodies = [[m.body for m in batch] for _, batch in output.attempts]
    assert bodies[0] == bodies[1] == bodies[2]
    times = [t for t, _ in output.attempts]
    assert times[1] - times[0] >= 0.05  # at least base/2
    assert times[2] - times[1] >= 0.1  # at least base
    assert len(output.delivered_ids) == len(set(output.delivered_ids)) == 3


async def test_retry_after_is_honoured(rig: Rig) -> None:
    output = ScriptedOutput(lambda n, _b: Retry("429", after=0.3) if n == 1 else None)
    await rig.start(output)
    await rig.buffer.append(event(many(1)))
    await output.wait_for(1)
    assert output.attempts[1][0] - output.attempts[0][0] >= 0.3


async def test_rejected_records_go_to_dead_letters_and_the_rest_flows(rig: Rig) -> None:
    def script(_n: int, batch: list[Message]) -> Outcome | None:
        titles = [m.record.document["snyk"]["issue"]["id"] for m in batch]
        if "SNYK-JS-X-1" in titles:
            return Reject("invalid event", indices=(titles.index("SNYK-JS-X-1"),))
        return None

    output = ScriptedOutput(script)
    await rig.start(output)
    await rig.buffer.append(event(many(3)))
    await rig.buffer.append(event(snapshot_body([issue("SNYK-JS-Y-0"), issue("SNYK-JS-Y-1")]), 1))
    await output.wait_for(4)
    await rig.stop()
    delivered = [m.record.document["snyk"]["issue"]["id"] for m in output.delivered]
    assert delivered == ["SNYK-JS-X-0", "SNYK-JS-X-2", "SNYK-JS-Y-0", "SNYK-JS-Y-1"]
    with contextlib.closing(sqlite3.connect(rig.buffer.path)) as conn:
        dead = list(conn.execute("SELECT output, event_id, record_index, reason, attempts FROM dead_letters"))
    assert dead == [("fake", 1, 1, "invalid event", 1)]


async def test_split_halves_until_the_oversize_record_is_alone(rig: Rig) -> None:
    def script(_n: int, batch: list[Message]) -> Outcome | None:
        ids = [m.record.document["snyk"]["issue"]["id"] for m in batch]
        return Split("exceeds max request size") if "SNYK-JS-X-5" in ids else None

    output = ScriptedOutput(script)
    await rig.start(output)
    await rig.buffer.append(event(many(8)))
    await output.wait_for(7)
    delivered = [m.record.position.index for m in output.delivered]
    assert delivered == [0, 1, 2, 3, 4, 6, 7]
    sent_alone = [b for _, b in output.attempts if len(b) == 1 and b[0].record.position.index == 5]
    assert len(sent_alone) == 1, "the oversize record is tried alone exactly once"


async def test_pause_keeps_records_and_probes_again(rig: Rig) -> None:
    output = ScriptedOutput(lambda n, _b: Pause("Invalid token (code 4)") if n <= 2 else None)
    shipper = await rig.start(output)
    await rig.buffer.append(event(many(2)))
    await output.wait_for(2)
    assert len(output.attempts) == 3
    assert shipper.status.paused is None
    assert output.attempts[1][0] - output.attempts[0][0] >= 0.05


async def test_filters_by_severity_and_action_still_move_the_cursor(rig: Rig) -> None:
    body = snapshot_body(
        [issue("L", severity="low"), issue("H", severity="high"), issue("C", severity="critical")],
        [issue("R", severity="critical")],
    )
    output = RecordingOutput()
    await rig.start(output, replace(FAST, min_severity="high", actions=("introduced",)))
    await rig.buffer.append(event(body))
    await output.wait_for(2)
    await asyncio.sleep(0.1)
    await rig.stop()
    assert [m.record.document["snyk"]["issue"]["id"] for m in output.delivered] == ["H", "C"]
    assert (await rig.buffer.positions())["fake"] == Position(2, 0)


async def test_a_stuck_output_does_not_hold_up_another(rig: Rig) -> None:
    stuck = ScriptedOutput(lambda _n, _b: Retry("down"), name="fake")
    healthy = RecordingOutput(name="other")
    await rig.start(stuck)
    await rig.start(healthy)
    await rig.buffer.append(event(many(5)))
    await healthy.wait_for(5)
    assert stuck.delivered == []


async def test_stop_during_backoff_leaves_the_batch_buffered(rig: Rig) -> None:
    output = ScriptedOutput(lambda _n, _b: Retry("down"))
    await rig.start(output, replace(FAST, retry_initial_backoff=30.0, retry_max_backoff=30.0))
    await rig.buffer.append(event(many(2)))
    async with asyncio.timeout(5):
        while not output.attempts:
            await asyncio.sleep(0.01)
    started = time.monotonic()
    await rig.stop()
    assert time.monotonic() - started < 2
    assert (await rig.buffer.positions())["fake"] == Position(1, 0)


async def test_max_attempts_dead_letters_instead_of_retrying_forever(rig: Rig) -> None:
    await rig.buffer.append(event(many(2)))
    await rig.buffer.append(event(many(1), 1))
    output = ScriptedOutput(lambda _n, _b: Retry("down"))
    await rig.start(output, replace(FAST, retry_max_attempts=3))
    async with asyncio.timeout(5):
        while (await rig.buffer.positions())["fake"] != Position(3, 0):
            await asyncio.sleep(0.02)
    assert len(output.attempts) == 3 and all(len(b) == 3 for _, b in output.attempts)
    with contextlib.closing(sqlite3.connect(rig.buffer.path)) as conn:
        reasons = [r for (r,) in conn.execute("SELECT reason FROM dead_letters")]
    assert reasons == ["gave up after 3 attempts: down"] * 3


class TightOutput(RecordingOutput):
    """A destination that takes at most ``limit`` bytes per message."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def message_budget(self, record: Record) -> int | None:
        return self.limit


async def test_oversize_records_are_shortened_or_dead_lettered_never_cut(rig: Rig) -> None:
    long = snapshot_body([issue("SNYK-LONG", description="word " * 2000), issue("SNYK-SHORT")])
    output = TightOutput(3000)
    position = (await rig.buffer.positions())["fake"]
    stream = RecordStream(
        rig.buffer.reader(), position, FAST, ecs_json.encode, summary=False, budget=output.message_budget
    )
    shipper = Shipper(output, FAST, rig.buffer, stream)
    rig.running.append((shipper, asyncio.create_task(shipper.run())))
    await rig.buffer.append(event(long))
    await output.wait_for(2)
    assert stream.shortened == 1
    assert all(len(m.body) <= 3000 for m in output.delivered)
    assert output.delivered[0].record.document["snyk"]["shortened_fields"] == ["vulnerability.description"]
    await rig.stop()
    tiny = TightOutput(100)  # nothing fits in 100 bytes: dead letters, with the reason
    position = (await rig.buffer.positions())["fake"]
    stream = RecordStream(
        rig.buffer.reader(), position, FAST, ecs_json.encode, summary=False, budget=tiny.message_budget
    )
    shipper = Shipper(tiny, FAST, rig.buffer, stream)
    rig.running.append((shipper, asyncio.create_task(shipper.run())))
    await rig.buffer.append(event(snapshot_body([issue("SNYK-X")]), 7))
    async with asyncio.timeout(5):
        while (await rig.buffer.positions())["fake"] != Position(3, 0):
            await asyncio.sleep(0.02)
    assert tiny.attempts == []
    with contextlib.closing(sqlite3.connect(rig.buffer.path)) as conn:
        (reason,) = conn.execute("SELECT reason FROM dead_letters").fetchone()
    assert "cannot be shortened" in reason and "100 bytes" in reason
