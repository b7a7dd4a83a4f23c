"""The syslog output's only I/O: one persistent stream, reconnected on the next attempt."""

from __future__ import annotations

from collections.abc import Sequence

from forwarder.errors import OutputError
from forwarder.outputs.stream import StreamConnection
from forwarder.outputs.syslog.config import SyslogSettings
from forwarder.outputs.syslog.encode import encode
from forwarder.types import Delivered, Message, Outcome, Retry


class SyslogOutput:
    def __init__(self, name: str, settings: SyslogSettings) -> None:
        self.name = name
        self.settings = settings
        self._stream = StreamConnection(
            settings.host,
            settings.port,
            connect_timeout=settings.connect_timeout,
            send_timeout=settings.send_timeout,
        )

    async def send(self, batch: Sequence[Message]) -> Outcome:
        try:
            await self._stream.send(encode(self.settings, batch))
        except OutputError as exc:
            return Retry(str(exc))
        return Delivered()

    async def healthcheck(self) -> None:
        await self._stream.connect()

    async def aclose(self) -> None:
        await self._stream.close()
