"""Body reads cut short by a shutdown answer "retry later", and give their memory back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from forwarder.errors import Unavailable
from forwarder.receiver.body import MemoryBudget, ReadTimers, read_body

pytestmark = pytest.mark.anyio


def stalled_receive(first: bytes) -> Any:
    """A client that sends one chunk and then nothing."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": first, "more_body": True}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


async def read(budget: MemoryBudget, timers: ReadTimers, content_length: int = 100) -> tuple[bytes, int]:
    return await read_body(
        stalled_receive(b"x" * 10),
        content_length=content_length,
        max_bytes=1000,
        budget=budget,
        total_timeout=60,
        idle_timeout=60,
        timers=timers,
    )


async def test_expiring_cuts_a_stalled_read_with_503_and_frees_its_memory() -> None:
    budget, timers = MemoryBudget(1000), ReadTimers()
    task = asyncio.create_task(read(budget, timers))
    for _ in range(100):  # bounded: the read reserves its memory on its first turn
        if budget.available < 1000:
            break
        await asyncio.sleep(0)
    assert budget.available == 900
    timers.expire()
    with pytest.raises(Unavailable) as info:
        await asyncio.wait_for(task, 5)
    assert info.value.code == "shutting_down" and info.value.retry_after > 0
    assert budget.available == 1000


async def test_a_read_waiting_for_memory_is_cut_too() -> None:
    budget, timers = MemoryBudget(100), ReadTimers()
    await budget.acquire(100, 1)  # someone else holds all of it
    task = asyncio.create_task(read(budget, timers))
    await asyncio.sleep(0)
    timers.expire()
    with pytest.raises(Unavailable, match="shutting down"):
        await asyncio.wait_for(task, 5)
    budget.release(100)
    assert budget.available == 100


async def test_a_read_that_starts_after_expiry_ends_at_once() -> None:
    budget, timers = MemoryBudget(1000), ReadTimers()
    timers.expire()
    with pytest.raises(Unavailable, match="shutting down"):
        await asyncio.wait_for(read(budget, timers), 5)
    assert budget.available == 1000
