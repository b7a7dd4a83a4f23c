"""A persistent TCP or TLS connection that knows when the peer's kernel has the bytes.

Plain syslog over TCP/TLS (and Rapid7's token TCP) has no application-level acknowledgement:
a write that returns only means the bytes reached *our* kernel. If the peer dies right after,
they are gone while we believe them sent. Two things shrink that window to what TCP allows:

1. before writing, check that the peer has not already closed (a receiver that restarted sends
   FIN/RST; writing into that socket would "succeed" and vanish);
2. after writing, wait until the kernel's send queue is empty (``SIOCOUTQ`` = 0: every byte has
   been ACKed by the peer's TCP) before reporting success.

A batch that fails any step is reported as not delivered and sent again in full, so a failure
can cause duplicates (same record ids). What TCP cannot show is a receiver that acknowledged bytes
and then crashed before storing them. :class:`StreamOutput` turns most of that loss into
duplicates too: the frames acknowledged within ``resend_window`` seconds before a connection
broke (a reset, a close by the peer, a send error or timeout) are written again, ahead of the next
batch, on the next connection — or once more when the output closes. The receivers never write,
so the connection watches its read side and knows *when* the peer went away, even between batches.

What can still be lost: frames a receiver acknowledged more than ``resend_window`` before its
connection broke and never stored; frames waiting to be written again when this process stops
without reaching the receiver (they are kept in memory only).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import ssl
import struct
import termios
import time
from collections import deque
from collections.abc import Callable, Sequence

from forwarder.errors import ConnectFailed, OutputError, SendTimeout
from forwarder.types import Delivered, Message, Outcome, Record, Retry

Clock = Callable[[], float]
RESEND_MAX_BYTES = 1 << 20
CLOSE_RESEND_TIMEOUT = 5.0  # at shutdown, how long the last resend may take

SIOCOUTQ = termios.TIOCOUTQ  # same ioctl number on Linux: bytes not yet acknowledged by the peer
# Linux TCP states (include/net/tcp_states.h) in which everything ACKed really reached the peer:
# ESTABLISHED, FIN_WAIT1/2 (we are closing) and CLOSE_WAIT (the peer closed after reading).
_OPEN_STATES = frozenset({1, 4, 5, 8})


class StreamConnection:
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
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._connect_timeout = connect_timeout
        self._send_timeout = send_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._clock = clock
        self._watch: asyncio.Task[None] | None = None
        self.lost_at: float | None = None  # when the peer ended the current connection

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def connect(self) -> None:
        if self._writer is not None:
            return
        try:
            async with asyncio.timeout(self._connect_timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname if self._ssl else None,
                )
        except TimeoutError as exc:
            raise ConnectFailed(
                f"connecting to {self.host}:{self.port} timed out after {self._connect_timeout:g}s"
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            raise ConnectFailed(
                f"certificate verify failed for {self.host}:{self.port}: {exc.verify_message}; set tls_ca_file to "
                "the CA that signed the receiver's certificate, or tls_server_name to the name in it"
            ) from exc
        except ssl.SSLError as exc:
            raise ConnectFailed(f"TLS handshake with {self.host}:{self.port} failed: {exc.reason or exc}") from exc
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from exc
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.lost_at = None
        self._watch = asyncio.create_task(self._watch_peer(self._reader))

    async def _watch_peer(self, reader: asyncio.StreamReader) -> None:
        """Syslog receivers and Rapid7 never write, so a read that returns is the peer's FIN or RST."""
        with contextlib.suppress(OSError, ssl.SSLError, EOFError):
            for _ in range(1_000_000):  # anything the peer writes is ignored; bounded all the same
                if not await reader.read(65536):
                    break
        self.lost_at = self._clock()

    async def send(self, data: bytes) -> None:
        """Write ``data`` and return once the peer's TCP has acknowledged all of it.

        Raises :class:`ConnectFailed` or :class:`SendTimeout`; the connection is then closed and
        the caller must treat the whole of ``data`` as not delivered.
        """
        await self.connect()
        assert self._reader is not None and self._writer is not None
        if self._reader.at_eof() or self._writer.is_closing():
            await self.close()
            raise ConnectFailed(f"{self.host}:{self.port} closed the connection")
        try:
            async with asyncio.timeout(self._send_timeout):
                self._writer.write(data)
                await self._writer.drain()
                await self._wait_acknowledged()
        except TimeoutError as exc:
            await self.close()
            raise SendTimeout(f"sending to {self.host}:{self.port} took over {self._send_timeout:g}s") from exc
        except (OSError, ssl.SSLError) as exc:
            await self.close()
            raise ConnectFailed(f"connection to {self.host}:{self.port} failed while sending: {exc}") from exc

    async def _wait_acknowledged(self) -> None:
        assert self._writer is not None and self._reader is not None
        sock = self._writer.get_extra_info("socket")
        if sock is None:
            return
        delay = 0.0005
        started = time.monotonic()
        while True:  # bounded by the caller's send timeout
            if self._reader.at_eof() or self._writer.is_closing() or self._reader.exception() is not None:
                raise ConnectionResetError("peer closed the connection before acknowledging")
            fd = sock.fileno()
            if fd < 0:
                raise ConnectionResetError("connection closed")
            unacked = struct.unpack("i", fcntl.ioctl(fd, SIOCOUTQ, b"\0\0\0\0"))[0]
            if unacked == 0:
                # A reset also empties the send queue: only an open connection means "acknowledged".
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
                if error or state not in _OPEN_STATES:
                    raise ConnectionResetError(f"connection reset (error {error}, tcp state {state})")
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05, max(0.0005, (time.monotonic() - started) / 4))

    async def close(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None and not watch.done():
            watch.cancel()
            await asyncio.wait({watch}, timeout=1.0)  # unlike `await watch`, never swallows our own cancel
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        writer.close()
        # Syslog receivers do not answer TLS close_notify (notes/syslog.md §10): do not wait long.
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError, ConnectionError):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()


class RecentWrites:
    """Frames acknowledged on the current connection, kept ``window`` seconds to resend after a break.

    ``acknowledged`` notes frames the peer's TCP has; ``broken(at)`` moves those acknowledged within
    ``window`` before ``at`` to :attr:`pending`, which the next connection writes first; ``resent``
    says that happened. At most ``max_bytes`` are kept, the newest whole frames (never half of one:
    a cut octet-counted frame or line would corrupt the stream); ``window`` 0 keeps nothing.
    """

    def __init__(self, window: float, max_bytes: int = RESEND_MAX_BYTES) -> None:
        self.window = window
        self.max_bytes = max_bytes
        self._frames: deque[tuple[float, bytes]] = deque()
        self._size = 0
        self._pending: deque[bytes] = deque()

    @property
    def pending(self) -> bytes:
        return b"".join(self._pending)

    def acknowledged(self, frames: Sequence[bytes], at: float) -> None:
        if self.window <= 0:
            return
        for frame in frames:
            self._frames.append((at, frame))
            self._size += len(frame)
        while self._frames and self._frames[0][0] < at - self.window:
            self._size -= len(self._frames.popleft()[1])
        self._trim()

    def broken(self, at: float) -> None:
        self._pending.extend(frame for when, frame in self._frames if when >= at - self.window)
        self._frames.clear()
        self._size = 0
        self._trim()

    def _trim(self) -> None:
        """Keep the newest frames within max_bytes: pending (older) goes first, then acknowledged."""
        total = self._size + sum(len(f) for f in self._pending)
        while self._pending and total > self.max_bytes:
            total -= len(self._pending.popleft())
        while self._frames and self._size > self.max_bytes:
            self._size -= len(self._frames.popleft()[1])

    def resent(self) -> None:
        self._pending.clear()


class StreamOutput:
    """Frames over one persistent TCP/TLS connection, with the resend window described above.

    Used by the syslog output and by Rapid7's token TCP and collector modes: they differ only in
    how a message becomes a frame (``frame``) and how many bytes a message may take (``budget``).
    """

    def __init__(
        self,
        name: str,
        connection: StreamConnection,
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
        frames = [self._frame(m) for m in batch]
        data = b"".join(frames)
        try:
            await conn.send(replay + data if replay else data)
        except OutputError as exc:
            self.recent.broken(conn.lost_at if conn.lost_at is not None else self._clock())
            return Retry(str(exc))
        now = self._clock()
        if replay:
            self.resent_bytes += len(replay)
            self.recent.resent()
            self.recent.acknowledged([replay], now)
        self.recent.acknowledged(frames, now)
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
        """Close; frames still waiting to be written again after a break get one last try."""
        await self._forget_broken()
        if self.recent.pending:
            with contextlib.suppress(OutputError, TimeoutError):
                async with asyncio.timeout(CLOSE_RESEND_TIMEOUT):
                    await self.connection.send(self.recent.pending)
                    self.resent_bytes += len(self.recent.pending)
                    self.recent.resent()
        await self.connection.close()
