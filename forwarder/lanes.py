"""A lane is one output with everything that feeds it: its record stream, its shipper, its task.

Lanes are what a reload adds, removes and replaces, one output at a time, while the others keep
shipping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from forwarder.buffer import SqliteBuffer
from forwarder.config import OutputConfig
from forwarder.formats import build_formatter
from forwarder.outputs import OUTPUT_TYPES, Output
from forwarder.records import RecordStream
from forwarder.shipper import Shipper

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


class Lane:
    def __init__(self, config: OutputConfig, output: Output, shipper: Shipper, task: asyncio.Task[None]) -> None:
        self.config = config
        self.output = output
        self.shipper = shipper
        self.task = task

    @property
    def name(self) -> str:
        return self.config.name

    @classmethod
    async def start(cls, config: OutputConfig, buffer: SqliteBuffer, *, summary: bool, spawn: Spawn) -> Lane:
        """Build the output and start shipping from its cursor in the buffer."""
        output = OUTPUT_TYPES[config.type].build(config.name, config.settings)
        position = (await buffer.positions())[config.name]
        stream = RecordStream(
            buffer.reader(),
            position,
            config.delivery,
            build_formatter(config.delivery),
            summary=summary,
            budget=output.message_budget,
            name=config.name,
        )
        shipper = Shipper(output, config.delivery, buffer, stream)
        return cls(config, output, shipper, spawn(shipper.run(), f"shipper:{config.name}"))

    async def stop(self, timeout: float) -> bool:
        """Let the current batch finish within ``timeout``, then cancel; True if it finished in time.
        Either way nothing is lost: an unconfirmed batch stays behind the cursor."""
        self.shipper.stop()
        done, _ = await asyncio.wait([self.task], timeout=timeout)
        if not done:
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        return bool(done)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.output.aclose()
        self.shipper.stream.close()
