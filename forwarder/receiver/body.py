"""Reading a request body within limits of size, time and memory.

- Size: a Content-Length over the limit is refused before a byte is read; a chunked body is
  refused as soon as it crosses the limit. Either way nothing reaches the buffer.
- Time: the whole body must arrive within ``body_timeout``, and no gap between chunks may exceed
  ``body_idle_timeout`` — a slow client cannot hold a slot and its memory forever.
- Memory: bodies being read and not yet stored share one budget, so a few concurrent 64 MiB
  snapshots queue for memory instead of exhausting it. A request that cannot get its share
  within ``body_timeout`` is answered 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from forwarder.errors import BodyTimeout, PayloadTooLarge, Unavailable


class MemoryBudget:
    """A byte semaphore with FIFO waiters (a large body is not starved by a stream of small ones)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.available = limit
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, amount: int, timeout: float) -> None:
        amount = min(amount, self.limit)
        if not self._waiters and amount <= self.available:
            self.available -= amount
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (amount, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            if future.done() and not future.cancelled():  # granted just as the timer fired
                self.release(amount)
            else:
                self._waiters.remove(entry)
                self._grant()
            raise Unavailable(
                "the forwarder is holding the maximum amount of request bodies in memory; retry "
                "shortly (raise listen.max_inflight_body_bytes if this is routine)",
                retry_after=5,
                code="memory_busy",
            ) from None
        except BaseException:
            if not future.done():
                self._waiters.remove(entry)
            elif not future.cancelled():
                self.release(amount)
            raise

    def release(self, amount: int) -> None:
        self.available += min(amount, self.limit)
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.available:
            amount, future = self._waiters.popleft()
            if not future.done():
                self.available -= amount
                future.set_result(None)


async def read_body(
    receive: Any,
    *,
    content_length: int | None,
    max_bytes: int,
    budget: MemoryBudget,
    total_timeout: float,
    idle_timeout: float,
) -> tuple[bytes, int]:
    """The complete body and the number of budget bytes now held (the caller releases them)."""
    if content_length is not None and content_length > max_bytes:
        raise _too_large(max_bytes)
    held = 0
    chunks: list[bytes] = []
    size = 0
    started = time.monotonic()
    try:
        if content_length:
            await budget.acquire(content_length, total_timeout)
            held = content_length
        async with asyncio.timeout(idle_timeout) as timer:
            loop = asyncio.get_running_loop()
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise BodyTimeout("client disconnected before sending the whole body", code="client_disconnected")
                chunk = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > max_bytes:
                        raise _too_large(max_bytes)
                    if size > held:  # chunked, or more than Content-Length announced
                        await budget.acquire(size - held, total_timeout)
                        held = size
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
                deadline = min(started + total_timeout, time.monotonic() + idle_timeout)
                timer.reschedule(loop.time() + max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        budget.release(held)
        raise BodyTimeout(
            f"request body not received within the time limit (listen.body_timeout "
            f"{total_timeout:g}s, body_idle_timeout {idle_timeout:g}s); check the network path "
            "or raise the limits"
        ) from None
    except BaseException:
        budget.release(held)
        raise
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return body, held


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body exceeds listen.max_body_bytes ({max_bytes} bytes); nothing was stored. "
        "Raise listen.max_body_bytes if Snyk sends snapshots this large"
    )
