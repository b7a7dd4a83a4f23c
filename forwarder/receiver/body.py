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


SHUTTING_DOWN = Unavailable(
    "the forwarder is shutting down and did NOT accept the event; retry (another instance, or this one after "
    "its restart, will take it)",
    retry_after=5,
    code="shutting_down",
)


class ReadTimers:
    """The deadlines of the bodies being read now, so a shutdown can cut them short.

    uvicorn cancels requests still running when its graceful period ends, which answers 500 with
    a traceback. Expiring the reads a little earlier instead lets each one answer a clean 503
    (retry later): the client, Snyk, re-sends to the next instance or after the restart.
    """

    def __init__(self) -> None:
        self.expired = False
        self._timers: set[asyncio.Timeout] = set()

    def expire(self) -> None:
        self.expired = True
        now = asyncio.get_running_loop().time()
        for timer in self._timers:
            timer.reschedule(now)

    def add(self, timer: asyncio.Timeout) -> None:
        if self.expired:
            timer.reschedule(asyncio.get_running_loop().time())
        self._timers.add(timer)

    def discard(self, timer: asyncio.Timeout) -> None:
        self._timers.discard(timer)


async def read_body(
    receive: Any,
    *,
    content_length: int | None,
    max_bytes: int,
    budget: MemoryBudget,
    total_timeout: float,
    idle_timeout: float,
    timers: ReadTimers | None = None,
) -> tuple[bytes, int]:
    """The complete body and the number of budget bytes now held (the caller releases them)."""
    if content_length is not None and content_length > max_bytes:
        raise _too_large(max_bytes)
    held = 0
    chunks: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    timer = asyncio.timeout(idle_timeout)

    def push(seconds: float) -> None:
        """Move the deadline; never past a shutdown's expiry, which must stick."""
        if timers is not None and timers.expired:
            seconds = 0.0
        timer.reschedule(loop.time() + max(0.0, seconds))

    try:
        async with timer:
            if timers is not None:
                timers.add(timer)  # once entered: only an entered timeout can be rescheduled
            if content_length:
                push(total_timeout)  # waiting for memory may take the whole time budget
                await budget.acquire(content_length, total_timeout)
                held = content_length
                push(idle_timeout)
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
                push(min(started + total_timeout - time.monotonic(), idle_timeout))
    except TimeoutError:
        budget.release(held)
        if timers is not None and timers.expired:
            raise SHUTTING_DOWN from None
        raise BodyTimeout(
            f"request body not received within the time limit (listen.body_timeout "
            f"{total_timeout:g}s, body_idle_timeout {idle_timeout:g}s); check the network path "
            "or raise the limits"
        ) from None
    except BaseException:
        budget.release(held)
        raise
    finally:
        if timers is not None:
            timers.discard(timer)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return body, held


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body exceeds listen.max_body_bytes ({max_bytes} bytes); nothing was stored. "
        "Raise listen.max_body_bytes if Snyk sends snapshots this large"
    )
