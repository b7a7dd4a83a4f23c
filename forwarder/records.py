"""The records an output still has to ship, read lazily from the buffer in cursor order.

One instance per output. It turns stored events into :class:`~forwarder.types.Message` s —
parse the body, flatten by index, filter by the output's severity and action, format, and fit
to the destination's size limit — and keeps only the event it is inside of in memory, so a
5,000-issue snapshot is shipped in batches and never flattened whole more than once per output.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import orjson

from forwarder import telemetry
from forwarder.buffer.sqlite import BufferReader, Replay
from forwarder.config.model import DeliveryConfig
from forwarder.flatten import Snapshot
from forwarder.flatten.severity import at_least
from forwarder.formats import Formatter
from forwarder.formats.shorten import fit
from forwarder.types import Message, Position, Record, StoredEvent

log = logging.getLogger("forwarder.shipper")

Budget = Callable[[Record], int | None]
YIELD_EVERY = 32


class RecordStream:
    def __init__(
        self,
        reader: BufferReader,
        start: Position,
        delivery: DeliveryConfig,
        formatter: Formatter,
        *,
        summary: bool,
        budget: Budget | None = None,
        name: str = "",
        read_ahead_events: int = 256,
        read_ahead_bytes: int = 8 << 20,
    ) -> None:
        self.name = name
        self._reader = reader
        self.position = start
        self._delivery = delivery
        self._actions = frozenset(delivery.actions)
        self._format = formatter
        self._budget = budget
        self._summary = summary
        self._pending: deque[StoredEvent] = deque()
        self._snapshot: Snapshot | None = None
        self._read_events = read_ahead_events
        self._read_bytes = read_ahead_bytes
        self.shortened = 0

    async def take(self, max_records: int, max_bytes: int) -> list[Message]:
        """Up to ``max_records`` messages (and about ``max_bytes``, at least one) from the
        current position; advances :attr:`position` past everything consumed, including
        records filtered out. Returns ``[]`` when the buffer holds nothing more yet."""
        batch: list[Message] = []
        size = 0
        while len(batch) < max_records and size < max_bytes:
            snapshot = await self._current()
            if snapshot is None:
                break
            index = self.position.index
            if index >= len(snapshot):
                self.position = Position(snapshot.event_id + 1, 0)
                self._snapshot = None
                continue
            self.position = Position(snapshot.event_id, index + 1)
            record = snapshot.record(index)
            if record is None or record.action not in self._actions:
                continue
            if not at_least(record.severity, self._delivery.min_severity):
                continue
            message = self.message(record)
            batch.append(message)
            size += len(message.body)
            if len(batch) % YIELD_EVERY == 0:
                # Flattening a batch takes milliseconds of CPU on the event loop; let waiting
                # webhook requests in between, so they are not answered late.
                await asyncio.sleep(0)
        return batch

    async def replays(self, output: str, limit: int) -> list[Replay]:
        """Dead letters an operator sent back (``snyk-forwarder replay``), oldest first."""
        return await self._reader.replays(output, limit)

    def message(self, record: Record) -> Message:
        """Format ``record`` for this output, shortened to its size limit when needed."""
        limit = self._budget(record) if self._budget is not None else None
        if limit is None:
            return Message(record, self._format(record))
        fitted = fit(record, self._format, limit)
        if fitted is None:
            body = self._format(record)
            problem = f"record of {len(body)} bytes cannot be shortened to the output's limit of {limit} bytes"
            return Message(record, body, problem=problem)
        body, shaped = fitted
        if shaped is not record:
            self.shortened += 1
            telemetry.record_shortened(log, self.name, record.id, shaped.document["snyk"]["shortened_fields"])
        return Message(shaped, body)

    async def _current(self) -> Snapshot | None:
        if self._snapshot is not None:
            return self._snapshot
        if not self._pending:
            after = self.position.event_id
            events = await self._reader.events_from(after, max_events=self._read_events, max_bytes=self._read_bytes)
            self._pending.extend(events)
            if not events:
                return None
        event = self._pending.popleft()
        if event.id > self.position.event_id:  # gap (purged or never-committed ids): start at its first record
            self.position = Position(event.id, 0)
        try:
            payload = orjson.loads(event.webhook.body)
        except orjson.JSONDecodeError:  # validated before storing, so only a damaged buffer gets here
            log.error("stored event is not valid JSON; skipping it", extra={"event_id": event.id})
            payload = {}
        self._snapshot = Snapshot(event, payload, summary=self._summary)
        return self._snapshot

    def close(self) -> None:
        self._reader.close()

    def rewind(self, position: Position) -> None:
        """Forget read-ahead and continue from ``position`` (after a batch is given back)."""
        self.position = position
        self._pending.clear()
        self._snapshot = None
