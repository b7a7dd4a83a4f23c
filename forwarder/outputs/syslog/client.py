"""The syslog output's only I/O: a persistent TCP/TLS stream, or UDP datagrams."""

from __future__ import annotations

from collections.abc import Sequence

from forwarder.errors import OutputError
from forwarder.outputs.datagram import DatagramSender
from forwarder.outputs.stream import StreamConnection
from forwarder.outputs.syslog.config import SyslogSettings
from forwarder.outputs.syslog.encode import SyslogEncoder
from forwarder.outputs.tls import client_context
from forwarder.types import Delivered, Message, Outcome, Record, Retry


class SyslogOutput:
    def __init__(self, name: str, settings: SyslogSettings) -> None:
        self.name = name
        self.settings = settings
        self.encoder = SyslogEncoder(settings)
        self._datagrams: DatagramSender | None = None
        self._stream: StreamConnection | None = None
        if settings.transport == "udp":
            self._datagrams = DatagramSender(settings.host, settings.port)
        else:
            context = None
            if settings.transport == "tls":
                context = client_context(
                    ca_file=settings.tls_ca_file,
                    verify=settings.tls_verify,
                    client_cert=settings.tls_client_cert,
                    client_key=settings.tls_client_key,
                    key=f"outputs.{name}",
                )
            self._stream = StreamConnection(
                settings.host,
                settings.port,
                ssl_context=context,
                server_hostname=settings.tls_server_name or settings.host,
                connect_timeout=settings.connect_timeout,
                send_timeout=settings.send_timeout,
            )

    def message_budget(self, record: Record) -> int:
        return self.encoder.budget(record)

    async def send(self, batch: Sequence[Message]) -> Outcome:
        try:
            if self._datagrams is not None:
                await self._datagrams.send([self.encoder.frame(m) for m in batch])
            else:
                assert self._stream is not None
                await self._stream.send(self.encoder.encode(batch))
        except OutputError as exc:
            return Retry(str(exc))
        return Delivered()

    async def healthcheck(self) -> None:
        if self._datagrams is not None:
            await self._datagrams.connect()
        else:
            assert self._stream is not None
            await self._stream.connect()

    async def aclose(self) -> None:
        if self._datagrams is not None:
            self._datagrams.close()
        if self._stream is not None:
            await self._stream.close()
