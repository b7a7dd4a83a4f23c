"""The Rapid7 output's stream I/O: token TCP and the collector over TCP, TLS or UDP.

When a line counts as delivered (token TCP and collector TCP/TLS; neither protocol acknowledges
anything above TCP):

* A batch is **delivered** when the peer's TCP has acknowledged every byte of it on an open
  connection (:class:`~forwarder.outputs.stream.StreamConnection`). A batch that fails at any
  step is not delivered and the shipper sends it again whole, so a failure after part of it was
  acknowledged duplicates that part (same record ids, same bytes).
* A receiver that crashes loses what its TCP acknowledged but it had not stored yet, and the
  sender cannot see that. To turn that loss into duplicates, the lines acknowledged on a
  connection within ``resend_window`` seconds before it broke (at most :data:`RESEND_MAX_BYTES`,
  newest first) are written again, ahead of the next batch, on the next connection — or, if no
  batch comes, once more when the output closes. A "break" is any end of the connection we did
  not ask for: reset, close by the peer, send error or timeout. The receivers never write, so
  :class:`WatchedConnection` sees the end when it happens, even between batches.
* What can still be lost: lines a receiver acknowledged more than ``resend_window`` before its
  connection broke and never stored; and lines waiting to be written again when this process
  stops without reaching the receiver (they are kept in memory only). UDP has no
  acknowledgement at all: a datagram the network or the receiver drops is lost without a trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence

from forwarder.errors import OutputError
from forwarder.outputs.datagram import DatagramSender
from forwarder.outputs.rapid7.config import CollectorSettings, TokenTcpSettings
from forwarder.outputs.rapid7.encode import BareLineEncoder, TokenLineEncoder
from forwarder.outputs.stream import StreamConnection
from forwarder.outputs.syslog.encode import SyslogEncoder
from forwarder.outputs.tls import client_context
from forwarder.types import Delivered, Message, Outcome, Record, Retry

RESEND_MAX_BYTES = 1 << 20
CLOSE_RESEND_TIMEOUT = 5.0  # at shutdown, how long the last resend may take

Clock = Callable[[], float]


class RecentWrites:
    """Acknowledged writes of the current connection, kept ``window`` seconds to resend after a break.

    ``acknowledged`` notes bytes the peer's TCP has; ``broken(at)`` moves those acknowledged within
    ``window`` before ``at`` to :attr:`pending`, which the next connection writes first; ``resent``
    says that happened. At most ``max_bytes`` are kept, the newest, cut at a line boundary;
    ``window`` 0 keeps nothing. Every write handed in is whole lines.
    """

    def __init__(self, window: float, max_bytes: int = RESEND_MAX_BYTES) -> None:
        self.window = window
        self.max_bytes = max_bytes
        self._writes: deque[tuple[float, bytes]] = deque()
        self._size = 0
        self.pending = b""

    def acknowledged(self, data: bytes, at: float) -> None:
        if self.window <= 0 or not data:
            return
        self._writes.append((at, data))
        self._size += len(data)
        while self._writes and self._writes[0][0] < at - self.window:
            self._size -= len(self._writes.popleft()[1])
        while len(self._writes) > 1 and self._size - len(self._writes[0][1]) >= self.max_bytes:
            self._size -= len(self._writes.popleft()[1])

    def broken(self, at: float) -> None:
        recent = b"".join(data for when, data in self._writes if when >= at - self.window)
        self._writes.clear()
        self._size = 0
        self.pending = _newest_lines(self.pending + recent, self.max_bytes)

    def resent(self) -> None:
        self.pending = b""


def _newest_lines(data: bytes, limit: int) -> bytes:
    """The last whole lines of ``data`` that fit in ``limit`` bytes."""
    if len(data) <= limit:
        return data
    start = len(data) - limit
    if data[start - 1 : start] != b"\n":
        newline = data.find(b"\n", start)
        start = len(data) if newline < 0 else newline + 1
    return data[start:]


class WatchedConnection(StreamConnection):
    """A StreamConnection that notes when the peer ends it (``lost_at``).

    Rapid7's token endpoint and syslog listeners never write, so a read that returns is the
    peer's FIN or RST. Knowing *when* keeps the resend window tied to the break, not to the next
    batch, which may come an hour later.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float = 10.0,
        send_timeout: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(
            host,
            port,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
            connect_timeout=connect_timeout,
            send_timeout=send_timeout,
        )
        self.lost_at: float | None = None
        self._clock = clock
        self._watch: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        if self.connected:
            return
        await super().connect()
        self.lost_at = None
        reader = self._reader
        assert reader is not None
        self._watch = asyncio.create_task(self._watch_peer(reader))

    async def _watch_peer(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, ssl.SSLError, EOFError):
            for _ in range(1_000_000):  # anything the peer writes is ignored; bounded all the same
                if not await reader.read(65536):
                    break
        self.lost_at = self._clock()

    async def close(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None and not watch.done():
            watch.cancel()
            await asyncio.wait({watch}, timeout=1.0)  # unlike `await watch`, never swallows our own cancel
        await super().close()


class StreamOutput:
    """Token TCP, or the collector over TCP/TLS: frames over one persistent connection."""

    def __init__(
        self,
        name: str,
        connection: WatchedConnection,
        frame: Callable[[Message], bytes],
        budget: Callable[[Record], int],
        *,
        resend_window: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = name
        self.connection = connection
        self._frame = frame
        self._budget = budget
        self._clock = clock
        self.recent = RecentWrites(resend_window)
        self.resent_bytes = 0  # for status and tests: how much was written twice after breaks

    def message_budget(self, record: Record) -> int:
        return self._budget(record)

    async def send(self, batch: Sequence[Message]) -> Outcome:
        conn = self.connection
        await self._forget_broken()
        replay = self.recent.pending
        data = b"".join(self._frame(m) for m in batch)
        try:
            await conn.send(replay + data if replay else data)
        except OutputError as exc:
            self.recent.broken(conn.lost_at if conn.lost_at is not None else self._clock())
            return Retry(str(exc))
        now = self._clock()
        if replay:
            self.resent_bytes += len(replay)
            self.recent.resent()
            self.recent.acknowledged(replay, now)
        self.recent.acknowledged(data, now)
        return Delivered()

    async def _forget_broken(self) -> None:
        """A connection the peer ended while we were idle: note what to resend, and let it go."""
        conn = self.connection
        if conn.connected and conn.lost_at is not None:
            self.recent.broken(conn.lost_at)
            await conn.close()

    async def healthcheck(self) -> None:
        await self.connection.connect()

    async def aclose(self) -> None:
        """Close; lines still waiting to be written again after a break get one last try."""
        await self._forget_broken()
        if self.recent.pending:
            with contextlib.suppress(OutputError, TimeoutError):
                async with asyncio.timeout(CLOSE_RESEND_TIMEOUT):
                    await self.connection.send(self.recent.pending)
                    self.resent_bytes += len(self.recent.pending)
                    self.recent.resent()
        await self.connection.close()


class DatagramOutput:
    """The collector over UDP: one frame per datagram, nothing acknowledged (RFC 5426)."""

    def __init__(self, name: str, sender: DatagramSender, encoder: SyslogEncoder) -> None:
        self.name = name
        self.sender = sender
        self.encoder = encoder

    def message_budget(self, record: Record) -> int:
        return self.encoder.budget(record)

    async def send(self, batch: Sequence[Message]) -> Outcome:
        try:
            await self.sender.send([self.encoder.frame(m) for m in batch])
        except OutputError as exc:
            return Retry(str(exc))
        return Delivered()

    async def healthcheck(self) -> None:
        await self.sender.connect()

    async def aclose(self) -> None:
        self.sender.close()


def _connection(
    host: str,
    port: int,
    *,
    tls: bool,
    settings: CollectorSettings | TokenTcpSettings,
    name: str,
    clock: Clock,
) -> WatchedConnection:
    context = None
    if tls:
        context = client_context(
            ca_file=settings.tls_ca_file,
            verify=settings.tls_verify,
            client_cert=None,
            client_key=None,
            key=f"outputs.{name}",
        )
    return WatchedConnection(
        host,
        port,
        ssl_context=context,
        server_hostname=settings.tls_server_name or host,
        connect_timeout=settings.connect_timeout,
        send_timeout=settings.send_timeout,
        clock=clock,
    )


def token_tcp_output(name: str, settings: TokenTcpSettings, *, clock: Clock = time.monotonic) -> StreamOutput:
    encoder = TokenLineEncoder(settings.token.reveal(), settings.max_event_bytes)
    connection = _connection(
        settings.host, settings.port, tls=settings.transport == "tls", settings=settings, name=name, clock=clock
    )
    return StreamOutput(
        name,
        connection,
        encoder.frame,
        lambda _record: encoder.budget(),
        resend_window=settings.resend_window,
        clock=clock,
    )


def collector_output(
    name: str, settings: CollectorSettings, *, clock: Clock = time.monotonic
) -> StreamOutput | DatagramOutput:
    syslog_settings = settings.syslog()
    encoder = BareLineEncoder(syslog_settings) if settings.header == "none" else SyslogEncoder(syslog_settings)
    if settings.transport == "udp":
        return DatagramOutput(name, DatagramSender(settings.host, settings.port), encoder)
    connection = _connection(
        settings.host, settings.port, tls=settings.transport == "tls", settings=settings, name=name, clock=clock
    )
    return StreamOutput(
        name, connection, encoder.frame, encoder.budget, resend_window=settings.resend_window, clock=clock
    )
