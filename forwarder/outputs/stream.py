"""A persistent TCP or TLS connection that knows when the peer's kernel has the bytes.

Plain syslog over TCP/TLS (and Rapid7's token TCP) has no application-level acknowledgement:
a write that returns only means the bytes reached *our* kernel. If the peer dies right after,
they are gone while we believe them sent. Two things shrink that window to what TCP allows:

1. before writing, check that the peer has not already closed (a receiver that restarted sends
   FIN/RST; writing into that socket would "succeed" and vanish);
2. after writing, wait until the kernel's send queue is empty (``SIOCOUTQ`` = 0: every byte has
   been ACKed by the peer's TCP) before reporting success.

What remains is loss after the peer's TCP acknowledged but before its application processed the
data (a receiver crash at that instant). A batch that fails any step is reported as not delivered
and sent again in full, so a failure can cause duplicates (same record ids), never silent loss
of what we reported delivered — except for that last window, which no plain-TCP sender can close.
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

from forwarder.errors import ConnectFailed, SendTimeout

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
    ) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._connect_timeout = connect_timeout
        self._send_timeout = send_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

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
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        writer.close()
        # Syslog receivers do not answer TLS close_notify (notes/syslog.md §10): do not wait long.
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError, ConnectionError):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
