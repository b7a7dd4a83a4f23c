"""Outputs that record what they were given and answer from a script (style: tests/fakes.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from forwarder.types import Delivered, Message, Outcome, Record


class RecordingOutput:
    """Delivers everything and remembers each attempt (with its monotonic time)."""

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.attempts: list[tuple[float, list[Message]]] = []
        self.delivered: list[Message] = []
        self.arrived = asyncio.Event()

    async def send(self, batch: Sequence[Message]) -> Outcome:
        self.attempts.append((time.monotonic(), list(batch)))
        outcome = self.decide(list(batch))
        if isinstance(outcome, Delivered):
            self.delivered.extend(batch)
            self.arrived.set()
        return outcome

    def decide(self, batch: list[Message]) -> Outcome:
        return Delivered()

    def message_budget(self, record: Record) -> int | None:
        return None

    async def healthcheck(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    @property
    def delivered_ids(self) -> list[str]:
        return [m.record.id for m in self.delivered]

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.delivered) < count:
                self.arrived.clear()
                await self.arrived.wait()


class ScriptedOutput(RecordingOutput):
    """Answers each attempt with ``script(attempt_number, batch)``; Delivered when it returns None."""

    def __init__(self, script: Callable[[int, list[Message]], Outcome | None], name: str = "fake") -> None:
        super().__init__(name)
        self.script = script

    def decide(self, batch: list[Message]) -> Outcome:
        return self.script(len(self.attempts), batch) or Delivered()
