"""One delivery loop per output: take a batch, send it, back off, move the cursor.

The loop is the only place that retries, splits, pauses and dead-letters; outputs only classify
one attempt (:mod:`forwarder.outputs.base`). Each output has its own loop, cursor and backoff,
so a stuck destination never holds up another.

Ordering: records reach an output in buffer order. A batch is retried whole (byte-identical
messages) until it is delivered, so nothing overtakes it; only a record the destination refused
for good leaves the line, into the dead-letter store.

Shutdown: :meth:`Shipper.stop` ends the loop at the next safe point — between batches, or
during a backoff wait. A batch in flight is allowed to finish (the service bounds that with
``service.shutdown_timeout`` and cancels after it); a cancelled batch was never confirmed, so
the cursor did not move and it is sent again after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from forwarder import telemetry
from forwarder.backoff import Backoff
from forwarder.buffer.sqlite import DeadLetter, SqliteBuffer
from forwarder.config.model import DeliveryConfig
from forwarder.errors import StorageError
from forwarder.outputs.base import Output
from forwarder.records import RecordStream
from forwarder.types import Delivered, Message, Outcome, Pause, Position, Reject, Retry, Split

IDLE_POLL = 5.0  # re-read the buffer this often even without a wake-up (belt and braces)
REPLAY_POLL = 5.0  # replays are queued by another process (the CLI), which cannot wake us


@dataclass(slots=True)
class OutputStatus:
    """What ``status`` and readiness show about one output (in memory, since start)."""

    delivered: int = 0
    dead_lettered: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_delivery_at: float | None = None
    paused: str | None = None
    position: Position | None = None
    retries: int = field(default=0)


class Shipper:
    def __init__(
        self,
        output: Output,
        delivery: DeliveryConfig,
        buffer: SqliteBuffer,
        stream: RecordStream,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self.output = output
        self.name = output.name
        self.delivery = delivery
        self.buffer = buffer
        self.stream = stream
        self.backoff = backoff or Backoff(delivery.retry_initial_backoff, delivery.retry_max_backoff)
        self.status = OutputStatus(position=stream.position)
        self.log = logging.getLogger(f"forwarder.shipper.{self.name}")
        self._wake = buffer.subscribe()
        self._stopping = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._saved = stream.position
        self._replays_checked = 0.0
        self._error_saved_at = 0.0
        self._prefetch: asyncio.Task[tuple[list[Message], Position]] | None = None

    def stop(self) -> None:
        self._stopping.set()
        self._interrupt.set()
        self._wake.set()

    def wake(self) -> None:
        """Cut a backoff or pause short and try again now (after a reload fixed the configuration)."""
        self._interrupt.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        failures = 0
        try:
            while not self.stopping:
                try:
                    await self._cycle()
                    failures = 0
                except StorageError as exc:  # the buffer could not be read or the cursor not saved
                    failures += 1
                    await self._drop_prefetch()
                    self.stream.rewind(self._saved)
                    delay = self.backoff.delay(failures)
                    telemetry.buffer_error(self.log, self.name, str(exc), delay)
                    await self._sleep(delay)
        finally:
            await self._drop_prefetch()

    async def _cycle(self) -> None:
        """One batch: replayed dead letters first (they wait longest), else new records.

        While a batch is on its way, the next one is read and formatted (``_prefetch``): the CPU
        work of flattening overlaps with waiting for the destination. Records still reach the
        destination in order, and the cursor only ever moves past delivered batches.
        """
        if await self._replay():
            return
        if self._prefetch is not None:
            task, self._prefetch = self._prefetch, None
            batch, end = await task
        else:
            batch = await self._collect()
            end = self.stream.position
        if not batch:
            if end != self._saved:  # only filtered-out records were passed
                await self._advance(end, delivered=0, dead=())
            return
        if not self.stopping:
            self._prefetch = asyncio.create_task(self._collect_next(), name=f"prefetch:{self.name}")
        dead = await self._deliver(batch)
        if dead is None:  # stopped while retrying: the batch stays pending in the buffer
            await self._drop_prefetch()
            self.stream.rewind(self._saved)
            return
        await self._advance(end, delivered=len(batch) - len(dead), dead=dead)

    async def _collect_next(self) -> tuple[list[Message], Position]:
        batch = await self._collect()
        return batch, self.stream.position

    async def _drop_prefetch(self) -> None:
        """Forget a batch read ahead (it was never sent; the stream rewinds to the cursor)."""
        task, self._prefetch = self._prefetch, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StorageError):
                await task
            self.stream.rewind(self._saved)

    async def _replay(self) -> bool:
        """Send dead letters an operator queued again (``snyk-forwarder replay``); True if any."""
        now = time.monotonic()
        if self.stopping or now - self._replays_checked < REPLAY_POLL:
            return False
        self._replays_checked = now
        replays = await self.stream.replays(self.name, self.delivery.batch_max_records)
        if not replays:
            return False
        self._replays_checked = 0.0  # there may be more: look again right away
        batch = [self.stream.message(r.record) for r in replays]
        dead = await self._deliver(batch)
        if dead is None:
            return True
        await self.buffer.advance(
            self.name, None, delivered=len(batch) - len(dead), dead=dead, replayed=[r.id for r in replays]
        )
        return True

    async def _collect(self) -> list[Message]:
        """A batch bounded by count and bytes; a partial batch waits up to batch_timeout for more."""
        d = self.delivery
        batch: list[Message] = []
        size = 0
        started = 0.0
        while not self.stopping:
            self._wake.clear()  # before reading: a commit after this read sets it again (no lost wake-up)
            more = await self.stream.take(d.batch_max_records - len(batch), d.batch_max_bytes - size)
            if more and not batch:
                started = time.monotonic()
            batch.extend(more)
            size += sum(len(m.body) for m in more)
            if len(batch) >= d.batch_max_records or size >= d.batch_max_bytes:
                return batch
            if more:
                continue  # the buffer may hold more right now
            if batch:
                remaining = d.batch_timeout - (time.monotonic() - started)
                if remaining <= 0:
                    return batch
                await self._wait(remaining)
            elif self.stream.position != self._saved:
                return batch  # only filtered-out records so far: let run() save the position
            else:
                await self._wait(IDLE_POLL)
                return batch  # idle: let run() look for replays before waiting again
        return batch

    async def _wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _deliver(self, batch: list[Message]) -> list[DeadLetter] | None:
        """Deliver ``batch`` (retrying, splitting) until every message is delivered or dead.

        Returns the dead letters, or ``None`` if stopped before the batch was settled.
        """
        dead = [self._dead(m, m.problem, 0) for m in batch if m.problem is not None]
        sendable = [m for m in batch if m.problem is None]
        work: list[list[Message]] = [sendable] if sendable else []
        while work:
            part = work.pop()
            attempt = 0
            while part:
                outcome = await self._attempt(part)
                attempt += 1
                if isinstance(outcome, Delivered):
                    self._delivered(part)
                    part = []
                elif isinstance(outcome, Reject):
                    indices = range(len(part)) if outcome.indices is None else outcome.indices
                    rejected = {i for i in indices if 0 <= i < len(part)}
                    dead.extend(self._dead(part[i], outcome.reason, attempt) for i in sorted(rejected))
                    rest = [m for i, m in enumerate(part) if i not in rejected]
                    if outcome.others_delivered or not rest:
                        self._delivered(rest)
                        part = []
                    else:
                        part, attempt = rest, 0
                elif isinstance(outcome, Split):
                    if len(part) == 1:
                        dead.append(self._dead(part[0], outcome.reason, attempt))
                        part = []
                    else:
                        half = len(part) // 2
                        work.extend([part[half:], part[:half]])  # first half is popped first: order kept
                        part = []
                elif isinstance(outcome, Pause):
                    telemetry.output_paused(self.log, self.name, outcome.reason, self.delivery.pause_probe_interval)
                    if not await self._sleep(self.delivery.pause_probe_interval):
                        return None
                else:
                    assert isinstance(outcome, Retry)
                    limit = self.delivery.retry_max_attempts
                    if limit and attempt >= limit:
                        reason = f"gave up after {attempt} attempts: {outcome.reason}"
                        dead.extend(self._dead(m, reason, attempt) for m in part)
                        part = []
                        continue
                    delay = self.backoff.delay(attempt, outcome.after)
                    self.status.retries += 1
                    telemetry.batch_retry_scheduled(self.log, self.name, outcome.reason, attempt, delay, len(part))
                    if not await self._sleep(delay):
                        return None
        return dead

    async def _attempt(self, part: Sequence[Message]) -> Outcome:
        try:
            outcome = await self.output.send(part)
        except Exception as exc:  # a bug in an output must not stop delivery or lose the batch
            self.log.exception("output raised instead of returning an outcome; retrying the batch")
            outcome = Retry(f"internal error in output: {exc.__class__.__name__}: {exc}")
        if not isinstance(outcome, Delivered):
            await self._note_error(outcome.reason, paused=isinstance(outcome, Pause))
        elif self.status.paused is not None:
            telemetry.output_resumed(self.log, self.name)
            self.status.paused = None
            await self._persist_error(None, paused=False)
        return outcome

    async def _note_error(self, reason: str, *, paused: bool) -> None:
        """Remember the failure in memory, and on disk for ``status`` when it changed or a minute passed."""
        now = time.time()
        changed = reason != self.status.last_error or paused != (self.status.paused is not None)
        self.status.last_error, self.status.last_error_at = reason, now
        if paused:
            self.status.paused = reason
        if changed or now - self._error_saved_at >= 60.0:
            await self._persist_error(reason, paused=paused)

    async def _persist_error(self, reason: str | None, *, paused: bool) -> None:
        self._error_saved_at = time.time()
        with contextlib.suppress(StorageError):  # the status line is not worth failing delivery over
            await self.buffer.note_error(self.name, reason, paused=paused)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped or woken; False means "stopping, give up this batch for now"."""
        self._interrupt.clear()
        if self.stopping:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._interrupt.wait()
        return not self.stopping

    def _delivered(self, part: Sequence[Message]) -> None:
        if part:
            self.status.delivered += len(part)
            self.status.last_delivery_at = time.time()
            telemetry.batch_delivered(self.log, self.name, len(part))

    def _dead(self, message: Message, reason: str, attempts: int) -> DeadLetter:
        record = message.record
        self.status.dead_lettered += 1
        telemetry.record_dead_lettered(self.log, self.name, record.id, reason, attempts)
        return DeadLetter(record=record, reason=reason, attempts=attempts, message=message.body)

    async def _advance(self, position: Position, *, delivered: int, dead: Sequence[DeadLetter]) -> None:
        """Save progress once the destination has the batch. A failed save (disk full) is retried by
        itself rather than re-sending the batch: draining must go on while deliveries are refused."""
        attempt = 0
        while True:
            try:
                await self.buffer.advance(self.name, position, delivered=delivered, dead=dead)
                break
            except StorageError as exc:
                attempt += 1
                delay = self.backoff.delay(attempt)
                telemetry.buffer_error(self.log, self.name, str(exc), delay)
                if not await self._sleep(delay):
                    raise  # stopping: the batch is sent again after the restart, with the same ids
        self._saved = position
        self.status.position = position
