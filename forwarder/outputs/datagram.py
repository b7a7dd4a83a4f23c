"""UDP: one message per datagram (RFC 5426), no acknowledgement and no backpressure.

A datagram the network drops is lost without a trace — the protocol offers nothing better, which
is why TCP or TLS is the default. What the sender can see is reported: a failed resolve, a full
socket buffer, or an ICMP "port unreachable" surfacing as ECONNREFUSED on a later send.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence

from forwarder.errors import ConnectFailed, OutputError
from forwarder.types import Delivered, Message, Outcome, Record, Retry


class DatagramSender:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None

    async def connect(self) -> None:
        if self._sock is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise ConnectFailed(f"cannot resolve {self.host}: {exc.strerror or exc}") from exc
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            sock.connect(address)  # fixes the peer, so ICMP errors come back to this socket
        except OSError as exc:
            sock.close()
            raise ConnectFailed(f"cannot reach {self.host}:{self.port}: {exc.strerror or exc}") from exc
        self._sock = sock

    async def send(self, datagrams: Sequence[bytes]) -> None:
        await self.connect()
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        try:
            for datagram in datagrams:
                await loop.sock_sendall(self._sock, datagram)
        except OSError as exc:
            self.close()
            raise ConnectFailed(f"sending to {self.host}:{self.port} over UDP failed: {exc.strerror or exc}") from exc

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class DatagramOutput:
    """One frame per datagram (syslog over UDP, the Rapid7 collector over UDP); nothing is acknowledged."""

    def __init__(
        self, name: str, sender: DatagramSender, frame: Callable[[Message], bytes], budget: Callable[[Record], int]
    ) -> None:
        self.name = name
        self.sender = sender
        self._frame = frame
        self._budget = budget

    def message_budget(self, record: Record) -> int:
        return self._budget(record)

    async def send(self, batch: Sequence[Message]) -> Outcome:
        try:
            await self.sender.send([self._frame(m) for m in batch])
        except OutputError as exc:
            return Retry(str(exc))
        return Delivered()

    async def healthcheck(self) -> None:
        await self.sender.connect()

    async def aclose(self) -> None:
        self.sender.close()
