"""In-process stand-ins for Rapid7 Log Search (InsightOps / Logentries) direct ingestion, for output tests.

Rapid7 cannot run here, so these receivers follow what Rapid7 *documents* (see ``shared/notes/rapid7.md``
§3, §4, §8 and ``shared/cases.md`` C-21) and are strict wherever the documentation is silent: a sender that
passes against them should pass against the real service, not the other way round.

Sources
-------
* Token TCP / TLS: https://docs.rapid7.com/insightops/token-tcp
* HTTP POST ("Webhook" log): https://docs.rapid7.com/insightops/insightops-webhook
* Custom Logs must be UTF-8: https://docs.rapid7.com/insightidr/custom-logs
* Rapid7's own clients replace LF inside a record by U+2028 (``rapid7/r7insight_python`` r7insight/utils.py,
  ``rapid7/r7insight_lambdaCW``); the Logentries Java client splits events above 65,536 characters.

What is modelled
----------------
:class:`TokenLineReceiver` is the Token TCP endpoint (plain TCP, or TLS when ``cert_file``/``key_file`` are given):
one or many persistent connections, each a byte stream split on LF (0x0A). Documented: every line starts with a
log token (a UUID) and one space, Rapid7 strips the token, tokens of several logs may share one stream, lines
without a token are dropped, there is no application-level acknowledgement (the receiver never writes a byte).
Accepted lines go to :attr:`~TokenLineReceiver.lines`; everything else goes to
:attr:`~TokenLineReceiver.problems` with the reasons. Outages (:meth:`~TokenLineReceiver.stop` /
:meth:`~TokenLineReceiver.restart` on the same port), resets (:meth:`~TokenLineReceiver.reset_connections`),
back-pressure (:meth:`~TokenLineReceiver.pause_reading`) and a crash that loses what was in flight
(:meth:`~TokenLineReceiver.crash_after`) are scriptable.

:class:`WebhookReceiver` is the HTTP POST endpoint ``POST /v1/noformat/<token>``: HTTPS (or plain HTTP with
``plain_http=True``), HTTP/1.1 with keep-alive. Documented: any body, answer ``204 No Content`` with
``Cache-Control: no-cache, no-store, must-revalidate``. Scripted faults per request, in order: status replies
(429 with optional ``Retry-After``, 5xx), a connection reset without a reply, a slow reply; plus outages via
``stop()``/``restart()`` on the same port.

Not modelled: the Collector (path A, see ``syslogd.py``), Plain TCP/UDP (path D), token input over UDP,
``/v1/drain/<token>`` (Heroku drains), rate limits, deduplication, the U+2028 replacement (that is the sender's
job; the receiver reports what is on the wire).

Undocumented behaviour and the choice made here
-----------------------------------------------
Token TCP:

* Tokens must be UUIDs in the 8-4-4-4-12 hex form (checked at construction) and are matched as the exact
  configured bytes, case-sensitively, at byte 0 of the line.
* Only a line that starts with a configured token and exactly one space, followed by a non-empty payload, is a
  clean event. Problem kinds: ``no_token`` (no configured token at the start, or a token not followed by a
  space; Rapid7 drops these), ``empty_line``, ``nul_byte`` (0x00 anywhere), ``invalid_utf8``, ``extra_space``
  (token followed by two or more spaces), ``empty_payload`` (token and space only), ``too_long`` (only with
  ``max_line_bytes``), ``partial_line`` (bytes after the last LF when a connection ends: never an event).
* ``strict=True`` (default): every flagged line is rejected, i.e. not in ``lines``. ``strict=False``: a line
  with a known token is accepted even when flagged (``nul_byte``, ``invalid_utf8``, ``extra_space``,
  ``empty_payload``, ``too_long``), and the problem is still recorded with ``accepted=True``. Tokenless, empty
  and partial lines are never accepted.
* A CR before the LF is not special: it stays in the payload (Rapid7's CRLF handling is undocumented).
* No maximum line length by default (the server-side limit is unknown); ``max_line_bytes`` adds one.
* ``stop()``, ``reset_connections()`` and a crash close connections with RST (SO_LINGER 0), the most abrupt
  outage a sender can see. Bytes still in kernel buffers at that moment are lost, as they would be at Rapid7.
* A crash (``crash_after(n)``) closes the listener and every connection right after the n-th accepted line of
  the receiver (counted from the call), silently discarding any bytes that followed it in the receive buffers
  (no ``partial_line`` problem for those): that is loss inside the window where TCP had the bytes but Rapid7
  had not stored them. A partial line left by ``stop()``/``reset_connections()`` is still flagged.
* TLS: TLS 1.2 or newer, no client certificate, the default server ciphers of Python's ``ssl``; a 5 s handshake
  timeout. Rapid7 documents port 443 (its Lambda forwarder uses 20000) but neither versions nor ciphers.
* No idle timeout: a connection stays open until the peer or a test closes it.
* Recorded lines and problems survive ``stop()``/``restart()`` (they model what Rapid7 stored); ``clear()``
  forgets them. Connection ids keep counting across restarts.

HTTP POST:

* Unknown token (well-formed path, token not configured): ``404 Not Found`` (``unknown_token_status``).
* Body limit: ``max_body_bytes`` = 1 MiB by default, answered ``413 Content Too Large`` with
  ``Connection: close``; when ``Content-Length`` already exceeds the limit the body is not read.
* Any other path (including ``/v1/drain/...`` and a trailing slash) → 404; another method on a
  ``/v1/noformat/<token>`` path → ``405`` with ``Allow: POST``; a malformed ``Content-Length`` or an unsupported
  ``Transfer-Encoding`` → 400 and close. Chunked bodies are accepted. No ``Content-Length`` → empty body.
* An empty body for a known token is answered 204 and recorded as an event with an empty body.
* ``Content-Type``, ``Accept`` and other headers are recorded, never checked. ``Cache-Control`` is sent on 204
  only (the only answer whose headers are documented). Error answers carry a short ``text/plain`` body.
* Scripted faults apply to the next requests in arrival order, whatever their path or token, before routing
  (they model a front end in trouble). A request is recorded *before* its answer is written, so a client that
  has its answer always finds the request recorded. A slow reply records the request after the delay, with the
  answer it would get, even if the client has given up by then (Rapid7 would have stored it: a retry is then a
  duplicate). ``stop()`` interrupts a slow reply, which then ends with a reset and ``status=None``.
* Keep-alive idle timeout: ``idle_timeout`` = 30 s. Request-head limits are those of :mod:`http.server`.
* ``WebhookRequest.lines`` splits the body on LF for convenience; whether Rapid7 makes one event or several
  from a multi-line body is undocumented, so tests must not treat it as Rapid7's split.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import http.server
import os
import re
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar
from urllib.parse import unquote, urlsplit

from .ports import LOOPBACK

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "DOC_HTTP_POST",
    "DOC_TOKEN_TCP",
    "NO_CACHE",
    "ConnectionInfo",
    "Fault",
    "LineProblem",
    "ProblemKind",
    "TokenLine",
    "TokenLineReceiver",
    "WebhookReceiver",
    "WebhookRequest",
]

DOC_TOKEN_TCP: Final = "https://docs.rapid7.com/insightops/token-tcp"
DOC_HTTP_POST: Final = "https://docs.rapid7.com/insightops/insightops-webhook"
NO_CACHE: Final = "no-cache, no-store, must-revalidate"
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
DEFAULT_IDLE_TIMEOUT: Final = 30.0

_TLS_HANDSHAKE_TIMEOUT: Final = 5.0
_BIND_ATTEMPTS: Final = 60
_BIND_RETRY_DELAY: Final = 0.05
_OP_TIMEOUT: Final = 5.0
_TOKEN_LEN: Final = 36
_LINGER_RST: Final = struct.pack("ii", 1, 0)
_UUID_RE: Final = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_NOFORMAT_RE: Final = re.compile(r"/v1/noformat/([^/]+)")

_T = TypeVar("_T")

ProblemKind = Literal[
    "no_token",
    "empty_line",
    "nul_byte",
    "invalid_utf8",
    "extra_space",
    "empty_payload",
    "too_long",
    "partial_line",
]
_NEVER_ACCEPTED: Final[frozenset[str]] = frozenset({"no_token", "empty_line", "partial_line"})


# --------------------------------------------------------------------------------------------------- helpers


def _check_tokens(tokens: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for token in tokens:
        if not isinstance(token, str) or not _UUID_RE.fullmatch(token):
            raise ValueError(f"a Rapid7 log token is a UUID (8-4-4-4-12 hex), not {token!r}")
        if token not in out:
            out.append(token)
    if not out:
        raise ValueError("at least one log token is required")
    return tuple(out)


def _server_context(
    cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str], alpn: list[str] | None = None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(os.fspath(cert_file), os.fspath(key_file))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def _tls_files(
    cert_file: str | os.PathLike[str] | None, key_file: str | os.PathLike[str] | None
) -> tuple[str | os.PathLike[str], str | os.PathLike[str]] | None:
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        raise ValueError("cert_file and key_file go together")
    return cert_file, key_file


def _bind_listener(
    host: str, port: int, *, recv_buffer: int | None, backlog: int, attempts: int, delay: float
) -> socket.socket:
    """Bind and listen on ``host:port``, retrying a bounded number of times while the port is still in use."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last: OSError | None = None
    for _ in range(max(1, attempts)):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if recv_buffer is not None:
                # Set before listen() so accepted sockets inherit it (and kernel auto-tuning is off).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
            sock.bind((host, port))
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            if port == 0 or exc.errno != errno.EADDRINUSE:
                raise
            last = exc
            time.sleep(delay)
            continue
        return sock
    raise OSError(errno.EADDRINUSE, f"{host}:{port} still in use after {attempts} bind attempts") from last


def _wait_until(cond: threading.Condition, predicate: Callable[[], bool], timeout: float) -> bool:
    """Wait on ``cond`` (held by the caller) until ``predicate`` holds; bounded by time and by wake-ups."""
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout!r}")
    deadline = time.monotonic() + timeout
    for _ in range(100_000):
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        cond.wait(min(remaining, 0.05))
    return predicate()


def _split_lines(body: bytes) -> list[bytes]:
    if not body:
        return []
    parts = body.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    return parts


# ------------------------------------------------------------------------------------------ token TCP / TLS


@dataclass(frozen=True)
class TokenLine:
    """One accepted event: the token it was sent to, the payload after ``<token><space>``, without the LF."""

    token: str
    payload: bytes
    conn_id: int
    arrival: float  # time.monotonic() when the bytes that completed the line were read

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")


@dataclass(frozen=True)
class LineProblem:
    """A line Rapid7 would drop or that a strict sender must not produce (``kinds``, most important first)."""

    kinds: tuple[ProblemKind, ...]
    raw: bytes  # the whole line without its LF (for ``partial_line``: the bytes after the last LF)
    conn_id: int
    arrival: float
    token: str | None  # the configured token the line starts with (followed by a space), if any
    accepted: bool  # True only with strict=False, when the line was also put in ``lines``
    detail: str

    @property
    def kind(self) -> ProblemKind:
        return self.kinds[0]


@dataclass(frozen=True)
class ConnectionInfo:
    """A snapshot of one accepted connection."""

    conn_id: int
    peer: str
    tls: bool
    opened: float
    closed: float | None
    close_reason: str | None  # "peer closed", "error: ...", "stop", "reset", "crash", "refused"
    bytes_received: int
    reads: int  # number of reads that returned data (shows how the stream was segmented)


class _Conn:
    __slots__ = (
        "buf",
        "close_reason",
        "closed",
        "conn_id",
        "discard",
        "generation",
        "open",
        "opened",
        "peer",
        "raw",
        "reads",
        "transport",
    )

    def __init__(self, conn_id: int, transport: asyncio.Transport, generation: int) -> None:
        self.conn_id = conn_id
        self.transport = transport
        self.generation = generation
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        self.opened = time.monotonic()
        self.closed: float | None = None
        self.close_reason: str | None = None
        self.open = True
        self.discard = False
        self.buf = bytearray()
        self.raw = bytearray()
        self.reads = 0


class _TokenProtocol(asyncio.Protocol):
    def __init__(self, owner: TokenLineReceiver, generation: int) -> None:
        self._owner = owner
        self._generation = generation
        self._conn: _Conn | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._conn = self._owner._on_connect(transport, self._generation)

    def data_received(self, data: bytes) -> None:
        if self._conn is not None:
            self._owner._on_data(self._conn, data)

    def eof_received(self) -> bool | None:
        return None  # close our side too: Rapid7 has nothing to send back

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._owner._on_lost(self._conn, exc)


class TokenLineReceiver:
    """Rapid7 Token TCP endpoint (TLS when ``cert_file``/``key_file`` are given), served from a background thread.

    ``tokens``: the configured log tokens (UUIDs). ``strict``: reject every flagged line (default) or accept
    flagged lines that carry a known token. ``max_line_bytes``: optional limit, flagged ``too_long``.
    ``paused``: start with reading paused. ``recv_buffer``: SO_RCVBUF for accepted sockets (small values make
    back-pressure quick to reach). ``bind_attempts``/``bind_retry_delay`` bound the re-bind in :meth:`restart`.
    """

    def __init__(
        self,
        tokens: Iterable[str],
        *,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        host: str = LOOPBACK,
        strict: bool = True,
        max_line_bytes: int | None = None,
        paused: bool = False,
        recv_buffer: int | None = None,
        backlog: int = 128,
        bind_attempts: int = _BIND_ATTEMPTS,
        bind_retry_delay: float = _BIND_RETRY_DELAY,
        op_timeout: float = _OP_TIMEOUT,
    ) -> None:
        self.tokens: tuple[str, ...] = _check_tokens(tokens)
        files = _tls_files(cert_file, key_file)
        self._ssl = _server_context(*files) if files is not None else None
        self.host = host
        self.strict = strict
        self.max_line_bytes = max_line_bytes
        self.recv_buffer = recv_buffer
        self.backlog = backlog
        self.bind_attempts = bind_attempts
        self.bind_retry_delay = bind_retry_delay
        self.op_timeout = op_timeout
        self._prefixes: dict[bytes, str] = {t.encode("ascii"): t for t in self.tokens}

        self._cond = threading.Condition(threading.Lock())
        self._lines: list[TokenLine] = []
        self._problems: list[LineProblem] = []
        self._conns: dict[int, _Conn] = {}
        self._errors: list[str] = []
        self._next_conn_id = 1
        self._generation = 0
        self._paused = paused
        self._crash_at: int | None = None
        self._crash_pending = False
        self._crashed = threading.Event()

        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._listening = False
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- lifecycle

    @property
    def tls(self) -> bool:
        return self._ssl is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the receiver has not been started")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def running(self) -> bool:
        """True while the listener accepts connections (False after stop() or a crash)."""
        return self._loop is not None and self._listening

    def start(self) -> None:
        """Listen (on a kernel-chosen port the first time, on the same port after a stop) and serve."""
        if self._loop is not None:
            raise RuntimeError("already started; use restart()")
        sock = _bind_listener(
            self.host,
            self._port or 0,
            recv_buffer=self.recv_buffer,
            backlog=self.backlog,
            attempts=self.bind_attempts,
            delay=self.bind_retry_delay,
        )
        self._port = int(sock.getsockname()[1])
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._on_loop_error)
        thread = threading.Thread(
            target=self._run_loop, args=(loop,), name=f"rapid7-token-tcp:{self._port}", daemon=True
        )
        thread.start()
        self._loop, self._thread = loop, thread
        with self._cond:
            self._generation += 1
            generation = self._generation
            self._crash_pending = False
            self._crashed.clear()
        try:
            self._run(lambda: self._serve(sock, generation))
        except BaseException:
            sock.close()
            self.stop()
            raise

    def stop(self) -> None:
        """Outage: close the listener (new connections are refused) and RST every open connection."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if loop.is_running():
                self._run(lambda: self._shutdown("stop"))
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(self.op_timeout)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None
            self._listening = False

    def restart(self) -> None:
        """stop() if needed, then listen again on the same port (bounded bind retries)."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- fault injection

    def reset_connections(self) -> int:
        """RST every open connection (SO_LINGER 0); the listener stays up. Returns how many were reset."""
        return self._run(lambda: self._abort_all("reset"))

    def pause_reading(self) -> None:
        """Stop reading from every connection (and from new ones): client send buffers fill up."""
        self._set_paused(True)

    def resume_reading(self) -> None:
        self._set_paused(False)

    def crash_after(self, n: int) -> None:
        """Crash right after the n-th line accepted from now on: listener and connections closed with RST,
        bytes after that line discarded. ``restart()`` brings the receiver back on the same port."""
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n}")
        with self._cond:
            self._crash_at = len(self._lines) + n

    @property
    def crashed(self) -> bool:
        return self._crashed.is_set()

    def wait_for_crash(self, timeout: float) -> None:
        if not self._crashed.wait(timeout):
            raise TimeoutError(f"no crash within {timeout:.1f}s ({len(self.lines)} lines accepted)")

    # ---- records

    @property
    def lines(self) -> list[TokenLine]:
        with self._cond:
            return list(self._lines)

    def payloads(self, token: str | None = None) -> list[bytes]:
        with self._cond:
            return [ln.payload for ln in self._lines if token is None or ln.token == token]

    @property
    def problems(self) -> list[LineProblem]:
        with self._cond:
            return list(self._problems)

    @property
    def errors(self) -> list[str]:
        """Errors reported by the event loop (failed TLS handshakes and the like), never raised."""
        with self._cond:
            return list(self._errors)

    @property
    def connections(self) -> list[ConnectionInfo]:
        with self._cond:
            return [self._info(c) for c in self._conns.values()]

    @property
    def connections_accepted(self) -> int:
        with self._cond:
            return len(self._conns)

    @property
    def open_connections(self) -> int:
        with self._cond:
            return sum(1 for c in self._conns.values() if c.open)

    def raw(self, conn_id: int | None = None) -> bytes:
        """Bytes read from one connection (or from all, concatenated in connection order)."""
        with self._cond:
            if conn_id is not None:
                return bytes(self._conns[conn_id].raw)
            return b"".join(bytes(c.raw) for c in self._conns.values())

    def clear(self) -> None:
        """Forget recorded lines, problems and errors (connections are kept)."""
        with self._cond:
            self._lines.clear()
            self._problems.clear()
            self._errors.clear()
            self._crash_at = None

    def wait_for_lines(self, n: int, timeout: float) -> list[TokenLine]:
        """Block until at least ``n`` lines were accepted; return them all. Raise ``TimeoutError`` otherwise."""
        with self._cond:
            if _wait_until(self._cond, lambda: len(self._lines) >= n, timeout):
                return list(self._lines)
            got, problems = len(self._lines), [(p.kinds, p.raw[:80]) for p in self._problems[-5:]]
        raise TimeoutError(f"{got} of {n} lines accepted within {timeout:.1f}s; last problems: {problems}")

    def wait_for_problems(self, n: int, timeout: float) -> list[LineProblem]:
        with self._cond:
            if _wait_until(self._cond, lambda: len(self._problems) >= n, timeout):
                return list(self._problems)
            got = len(self._problems)
        raise TimeoutError(f"{got} of {n} problems recorded within {timeout:.1f}s")

    def wait_for_connections(self, n: int, timeout: float, *, open_only: bool = False) -> None:
        """Block until ``n`` connections were accepted (or are open at once, with ``open_only``)."""

        def enough() -> bool:
            conns = self._conns.values()
            return (sum(1 for c in conns if c.open) if open_only else len(self._conns)) >= n

        with self._cond:
            if _wait_until(self._cond, enough, timeout):
                return
            got = len(self._conns)
        raise TimeoutError(f"{got} connections accepted, wanted {n} within {timeout:.1f}s")

    # ---- event-loop side (runs in the receiver thread)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def _run(self, fn: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the receiver is not running")
        future: concurrent.futures.Future[_T] = asyncio.run_coroutine_threadsafe(fn(), loop)
        return future.result(self.op_timeout)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        with self._cond:
            self._errors.append(f"{context.get('message')}: {context.get('exception')!r}")

    async def _serve(self, sock: socket.socket, generation: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _TokenProtocol(self, generation),
            sock=sock,
            ssl=self._ssl,
            ssl_handshake_timeout=_TLS_HANDSHAKE_TIMEOUT if self._ssl is not None else None,
        )
        self._listening = True

    async def _shutdown(self, reason: str) -> None:
        self._close_listener()
        await self._abort_all(reason)

    def _close_listener(self) -> None:
        self._listening = False
        if self._server is not None:
            self._server.close()
            self._server = None

    def _open_conns(self) -> list[_Conn]:
        with self._cond:
            return [c for c in self._conns.values() if c.open]

    def _rst(self, conn: _Conn, reason: str) -> None:
        with self._cond:
            if conn.close_reason is None:
                conn.close_reason = reason
        sock = conn.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        conn.transport.abort()

    async def _abort_all(self, reason: str) -> int:
        conns = self._open_conns()
        for conn in conns:
            self._rst(conn, reason)
        await self._until_closed(conns)
        return len(conns)

    @staticmethod
    async def _until_closed(conns: list[_Conn]) -> None:
        # abort() closes the socket in a later loop iteration; wait so the RST is out when we return.
        for i in range(400):
            if not any(c.open for c in conns):
                return
            await asyncio.sleep(0 if i < 20 else 0.005)

    async def _finish_crash(self, conns: list[_Conn]) -> None:
        await self._until_closed(conns)
        self._crashed.set()

    def _set_paused(self, paused: bool) -> None:
        async def apply() -> None:
            self._paused = paused
            for conn in self._open_conns():
                if paused:
                    conn.transport.pause_reading()
                else:
                    conn.transport.resume_reading()

        if self._loop is None:
            self._paused = paused
        else:
            self._run(apply)

    def _on_connect(self, transport: asyncio.Transport, generation: int) -> _Conn:
        with self._cond:
            conn = _Conn(self._next_conn_id, transport, generation)
            self._next_conn_id += 1
            self._conns[conn.conn_id] = conn
            self._cond.notify_all()
        if not self._listening or generation != self._generation:
            self._rst(conn, "refused")
        elif self._paused:
            transport.pause_reading()
        return conn

    def _on_data(self, conn: _Conn, data: bytes) -> None:
        now = time.monotonic()
        crash = False
        with self._cond:
            conn.raw += data
            conn.reads += 1
            if conn.discard or not conn.open or conn.generation != self._generation:
                return
            buf = conn.buf
            buf += data
            start = 0
            while True:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    break
                line = bytes(buf[start:nl])
                start = nl + 1
                self._take_line(conn, line, now)
                if self._crash_pending:
                    crash = True
                    break
            del buf[:start]
            self._cond.notify_all()
        if crash:
            self._crash()

    def _match(self, line: bytes) -> tuple[str | None, bytes, str]:
        token = self._prefixes.get(line[:_TOKEN_LEN])
        if token is None:
            later = any(prefix in line for prefix in self._prefixes)
            detail = "a configured token appears later in the line" if later else "no configured token at the start"
            return None, b"", detail
        if line[_TOKEN_LEN : _TOKEN_LEN + 1] != b" ":
            return None, b"", "a configured token is not followed by a space"
        return token, line[_TOKEN_LEN + 1 :], ""

    def _take_line(self, conn: _Conn, line: bytes, now: float) -> None:
        """Classify one complete line (caller holds the lock)."""
        kinds: list[ProblemKind] = []
        details: list[str] = []
        token: str | None = None
        payload = b""
        if not line:
            kinds.append("empty_line")
        else:
            token, payload, detail = self._match(line)
            if token is None:
                kinds.append("no_token")
                details.append(detail)
            elif not payload:
                kinds.append("empty_payload")
            elif payload.startswith(b" "):
                kinds.append("extra_space")
            if b"\x00" in line:
                kinds.append("nul_byte")
                details.append(f"0x00 at byte {line.index(0)}")
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                kinds.append("invalid_utf8")
                details.append(f"invalid UTF-8 at byte {exc.start}")
            if self.max_line_bytes is not None and len(line) > self.max_line_bytes:
                kinds.append("too_long")
                details.append(f"{len(line)} bytes > {self.max_line_bytes}")
        accepted = token is not None and (not kinds or not self.strict) and _NEVER_ACCEPTED.isdisjoint(kinds)
        if kinds:
            self._problems.append(
                LineProblem(tuple(kinds), line, conn.conn_id, now, token, accepted, "; ".join(details) or kinds[0])
            )
        if accepted:
            assert token is not None
            self._lines.append(TokenLine(token, payload, conn.conn_id, now))
            if self._crash_at is not None and len(self._lines) >= self._crash_at:
                self._crash_pending = True

    def _crash(self) -> None:
        """Close everything abruptly; what is still buffered after the crash line is lost, unflagged."""
        with self._cond:
            self._crash_at = None
            self._crash_pending = False
            for conn in self._conns.values():
                if conn.open:
                    conn.discard = True
                    conn.buf.clear()
        self._close_listener()
        conns = self._open_conns()
        for conn in conns:
            self._rst(conn, "crash")
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._finish_crash(conns))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_lost(self, conn: _Conn, exc: Exception | None) -> None:
        with self._cond:
            conn.open = False
            conn.closed = time.monotonic()
            if conn.close_reason is None:
                conn.close_reason = "peer closed" if exc is None else f"error: {exc!r}"
            if conn.buf and not conn.discard:
                tail = bytes(conn.buf)
                token = self._match(tail)[0]
                self._problems.append(
                    LineProblem(
                        ("partial_line",),
                        tail,
                        conn.conn_id,
                        conn.closed,
                        token,
                        False,
                        f"{len(tail)} bytes after the last LF when the connection ended ({conn.close_reason})",
                    )
                )
            conn.buf.clear()
            self._cond.notify_all()

    def _info(self, c: _Conn) -> ConnectionInfo:
        return ConnectionInfo(c.conn_id, c.peer, self.tls, c.opened, c.closed, c.close_reason, len(c.raw), c.reads)


# ---------------------------------------------------------------------------------------------- HTTP POST


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, used for one request. Build with :meth:`reply`, :meth:`reset`, :meth:`slow`."""

    action: Literal["status", "reset", "slow"]
    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0

    @classmethod
    def reply(cls, status: int, *, retry_after: int | str | None = None) -> Fault:
        """Answer ``status`` (e.g. 429, 500, 502, 503, 504) instead of processing the request."""
        if not 400 <= status <= 599:
            raise ValueError(f"a scripted reply is an error status (4xx/5xx), not {status}")
        return cls("status", status, None if retry_after is None else str(retry_after))

    @classmethod
    def reset(cls) -> Fault:
        """Read the request, then close the connection with RST and no reply."""
        return cls("reset")

    @classmethod
    def slow(cls, seconds: float, *, status: int | None = None, retry_after: int | str | None = None) -> Fault:
        """Wait ``seconds``, then answer normally (or ``status``)."""
        if seconds < 0:
            raise ValueError(f"delay must not be negative, not {seconds}")
        if status is not None and not 200 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status}")
        return cls("slow", status, None if retry_after is None else str(retry_after), seconds)

    @property
    def label(self) -> str:
        if self.action == "status":
            return str(self.status)
        if self.action == "reset":
            return "reset"
        return f"slow {self.delay:g}s" + (f" then {self.status}" if self.status is not None else "")


@dataclass(frozen=True)
class WebhookRequest:
    """One request as received, with the answer given (``status=None``: no answer, the connection was reset)."""

    seq: int
    conn_id: int
    method: str
    target: str  # the request target as sent (path and query)
    token: str | None  # the token in a /v1/noformat/<token> path (configured or not)
    headers: tuple[tuple[str, str], ...]
    body: bytes
    arrival: float  # time.monotonic() when the body had been read
    status: int | None
    fault: str | None  # label of the scripted fault used for this request
    note: str

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def accepted(self) -> bool:
        return self.status == 204

    @property
    def lines(self) -> list[bytes]:
        """The body split on LF (a final LF does not make an empty line). Convenience only: see module notes."""
        return _split_lines(self.body)


class _HttpConn:
    __slots__ = ("conn_id", "reset", "sock", "thread")

    def __init__(self, conn_id: int, sock: socket.socket) -> None:
        self.conn_id = conn_id
        self.sock = sock
        self.thread = threading.current_thread()
        self.reset = False


_BodyOutcome = Literal["ok", "too_large", "bad", "truncated"]


class _WebhookServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: WebhookReceiver, sock: socket.socket) -> None:
        self.owner = owner
        self.stopping = threading.Event()
        # finish_request() builds the handler itself; the class given here is never called.
        super().__init__(sock.getsockname()[:2], http.server.BaseHTTPRequestHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()[:2]

    def finish_request(self, request: Any, client_address: Any) -> None:
        assert isinstance(request, socket.socket)
        self.owner._serve_connection(self, request, client_address)

    def shutdown_request(self, request: Any) -> None:
        # _serve_connection closes the (possibly TLS-wrapped) socket itself; this only covers early failures.
        if isinstance(request, socket.socket):
            with contextlib.suppress(OSError):
                request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        self.owner._record_error(f"{client_address}: {exc!r}")


class _WebhookHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rapid7-test-double"
    sys_version = ""
    disable_nagle_algorithm = True

    def __init__(
        self,
        request: socket.socket,
        client_address: Any,
        server: _WebhookServer,
        owner: WebhookReceiver,
        conn: _HttpConn,
    ) -> None:
        self.owner = owner
        self.conn = conn
        self.webhook_server = server
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.owner.idle_timeout)  # keep-alive idle limit (and body read limit)

    def log_message(self, format: str, *args: Any) -> None:
        self.owner._record_log(format % args)

    def do_POST(self) -> None:
        self.owner._handle(self)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_POST


class WebhookReceiver:
    """Rapid7 HTTP POST endpoint ``/v1/noformat/<token>``, HTTPS unless ``plain_http=True``, in background threads.

    ``tokens``: the configured log tokens (UUIDs). ``cert_file``/``key_file``: server certificate chain and key
    (PEM), required for HTTPS. ``max_body_bytes``: 413 above it. ``unknown_token_status``: the answer for a
    token that is not configured. ``idle_timeout``: keep-alive idle limit in seconds.
    """

    def __init__(
        self,
        tokens: Iterable[str],
        *,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        plain_http: bool = False,
        host: str = LOOPBACK,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        unknown_token_status: int = 404,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        backlog: int = 128,
        bind_attempts: int = _BIND_ATTEMPTS,
        bind_retry_delay: float = _BIND_RETRY_DELAY,
        op_timeout: float = _OP_TIMEOUT,
    ) -> None:
        self.tokens: tuple[str, ...] = _check_tokens(tokens)
        files = _tls_files(cert_file, key_file)
        if plain_http and files is not None:
            raise ValueError("plain_http=True takes no certificate")
        if not plain_http and files is None:
            raise ValueError("HTTPS needs cert_file and key_file (or pass plain_http=True)")
        self._ssl = _server_context(*files, alpn=["http/1.1"]) if files is not None else None
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must not be negative")
        self.host = host
        self.max_body_bytes = max_body_bytes
        self.unknown_token_status = unknown_token_status
        self.idle_timeout = idle_timeout
        self.backlog = backlog
        self.bind_attempts = bind_attempts
        self.bind_retry_delay = bind_retry_delay
        self.op_timeout = op_timeout

        self._cond = threading.Condition(threading.Lock())
        self._requests: list[WebhookRequest] = []
        self._faults: deque[Fault] = deque()
        self._open: dict[int, _HttpConn] = {}
        self._errors: list[str] = []
        self._log: list[str] = []
        self._next_conn_id = 1
        self._port: int | None = None
        self._server: _WebhookServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    @property
    def tls(self) -> bool:
        return self._ssl is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the receiver has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def url(self, token: str | None = None) -> str:
        """``<base_url>/v1/noformat/<token>`` (the first configured token by default)."""
        return f"{self.base_url}/v1/noformat/{self.tokens[0] if token is None else token}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("already started; use restart()")
        sock = _bind_listener(
            self.host,
            self._port or 0,
            recv_buffer=None,
            backlog=self.backlog,
            attempts=self.bind_attempts,
            delay=self.bind_retry_delay,
        )
        self._port = int(sock.getsockname()[1])
        try:
            server = _WebhookServer(self, sock)
        except BaseException:
            sock.close()
            raise
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"rapid7-webhook:{self._port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()

    def stop(self) -> None:
        """Outage: close the listener (connections refused), RST open connections, interrupt slow replies."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        with self._cond:
            conns = list(self._open.values())
            for conn in conns:
                conn.reset = True
                self._interrupt(conn.sock)
        for conn in conns:
            conn.thread.join(self.op_timeout)
        thread.join(self.op_timeout)
        self._server = self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- fault script

    def script(self, *faults: Fault) -> None:
        """Queue faults; each one is used by one request, in arrival order, then normal service resumes."""
        with self._cond:
            self._faults.extend(faults)

    def fail(self, status: int, times: int = 1, *, retry_after: int | str | None = None) -> None:
        self.script(*[Fault.reply(status, retry_after=retry_after)] * times)

    def reset_next(self, times: int = 1) -> None:
        self.script(*[Fault.reset()] * times)

    def slow_next(self, seconds: float, times: int = 1, *, status: int | None = None) -> None:
        self.script(*[Fault.slow(seconds, status=status)] * times)

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        with self._cond:
            return len(self._faults)

    # ---- records

    @property
    def requests(self) -> list[WebhookRequest]:
        with self._cond:
            return list(self._requests)

    @property
    def bodies(self) -> list[bytes]:
        """Bodies of every recorded request, whatever the answer."""
        with self._cond:
            return [r.body for r in self._requests]

    @property
    def events(self) -> list[WebhookRequest]:
        """Requests answered 204: what Rapid7 stored."""
        with self._cond:
            return [r for r in self._requests if r.accepted]

    def event_bodies(self, token: str | None = None) -> list[bytes]:
        with self._cond:
            return [r.body for r in self._requests if r.accepted and (token is None or r.token == token)]

    @property
    def errors(self) -> list[str]:
        """Connection-level errors (failed TLS handshakes, client resets), never raised."""
        with self._cond:
            return list(self._errors)

    @property
    def log(self) -> list[str]:
        """http.server's access/error log lines, kept instead of being printed."""
        with self._cond:
            return list(self._log)

    @property
    def connections_accepted(self) -> int:
        with self._cond:
            return self._next_conn_id - 1

    def clear(self) -> None:
        with self._cond:
            self._requests.clear()
            self._errors.clear()
            self._log.clear()

    def wait_for_requests(self, n: int, timeout: float) -> list[WebhookRequest]:
        with self._cond:
            if _wait_until(self._cond, lambda: len(self._requests) >= n, timeout):
                return list(self._requests)
            got = [(r.status, r.note) for r in self._requests]
        raise TimeoutError(f"{len(got)} of {n} requests within {timeout:.1f}s: {got}")

    def wait_for_events(self, n: int, timeout: float) -> list[WebhookRequest]:
        with self._cond:
            if _wait_until(self._cond, lambda: sum(r.accepted for r in self._requests) >= n, timeout):
                return [r for r in self._requests if r.accepted]
            got = [(r.status, r.note) for r in self._requests]
        raise TimeoutError(f"fewer than {n} events within {timeout:.1f}s: {got}")

    # ---- server side (handler threads)

    def _record_error(self, text: str) -> None:
        with self._cond:
            self._errors.append(text)

    def _record_log(self, text: str) -> None:
        with self._cond:
            self._log.append(text)

    @staticmethod
    def _interrupt(sock: socket.socket) -> None:
        """Wake a handler blocked on ``sock`` and make its close an RST, without touching TLS state.

        shutdown() acts on the socket, not the descriptor, so a duplicate descriptor is enough; SHUT_RD sends
        nothing on Linux, so the peer sees only the RST of the final close (SO_LINGER 0).
        """
        try:
            fd = sock.fileno()
        except (OSError, ValueError):
            return
        if fd < 0:
            return
        try:
            dup = socket.fromfd(fd, sock.family, sock.type)
        except OSError:
            return
        with dup:
            with contextlib.suppress(OSError):
                dup.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            with contextlib.suppress(OSError):
                dup.shutdown(socket.SHUT_RD)

    def _serve_connection(self, server: _WebhookServer, raw: socket.socket, client_address: Any) -> None:
        with self._cond:
            conn = _HttpConn(self._next_conn_id, raw)
            self._next_conn_id += 1
            self._open[conn.conn_id] = conn
            refused = server.stopping.is_set()
        try:
            if refused:
                conn.reset = True
                return
            sock = raw
            if self._ssl is not None:
                raw.settimeout(_TLS_HANDSHAKE_TIMEOUT)
                sock = self._ssl.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
                with self._cond:
                    conn.sock = sock
                    if server.stopping.is_set():
                        conn.reset = True
                        return
                sock.do_handshake()
            _WebhookHandler(sock, client_address, server, self, conn)
        finally:
            with self._cond:
                self._open.pop(conn.conn_id, None)
                sock_to_close, reset = conn.sock, conn.reset
            if reset:
                with contextlib.suppress(OSError):
                    sock_to_close.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            with contextlib.suppress(OSError):
                sock_to_close.close()

    def _pop_fault(self) -> Fault | None:
        with self._cond:
            return self._faults.popleft() if self._faults else None

    def _read_body(self, h: _WebhookHandler) -> tuple[bytes, _BodyOutcome]:
        encoding = h.headers.get("Transfer-Encoding")
        length = h.headers.get("Content-Length")
        if encoding is not None:
            if encoding.strip().lower() != "chunked" or length is not None:
                return b"", "bad"
            return self._read_chunked(h)
        if length is None:
            return b"", "ok"
        try:
            n = int(length.strip())
        except ValueError:
            return b"", "bad"
        if n < 0:
            return b"", "bad"
        if n > self.max_body_bytes:
            return b"", "too_large"
        data = h.rfile.read(n)
        return data, ("ok" if len(data) == n else "truncated")

    def _read_chunked(self, h: _WebhookHandler) -> tuple[bytes, _BodyOutcome]:
        body = bytearray()
        for _ in range(1_000_000):
            size_line = h.rfile.readline(1026)
            if not size_line:
                return bytes(body), "truncated"
            if not size_line.endswith(b"\n"):
                return bytes(body), "bad"
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return bytes(body), "bad"
            if size == 0:
                for _ in range(100):  # trailer fields, up to the blank line
                    if h.rfile.readline(8192) in (b"\r\n", b"\n", b""):
                        break
                return bytes(body), "ok"
            if size < 0 or len(body) + size > self.max_body_bytes:
                return bytes(body), "too_large" if size > 0 else "bad"
            data = h.rfile.read(size)
            if len(data) < size:
                return bytes(body), "truncated"
            body += data
            h.rfile.readline(3)  # CRLF after the chunk data
        return bytes(body), "bad"

    def _record(
        self, h: _WebhookHandler, token: str | None, body: bytes, status: int | None, fault: Fault | None, note: str
    ) -> None:
        with self._cond:
            self._requests.append(
                WebhookRequest(
                    seq=len(self._requests) + 1,
                    conn_id=h.conn.conn_id,
                    method=h.command,
                    target=h.path,
                    token=token,
                    headers=tuple(h.headers.items()),
                    body=body,
                    arrival=time.monotonic(),
                    status=status,
                    fault=fault.label if fault is not None else None,
                    note=note,
                )
            )
            self._cond.notify_all()

    def _reset(self, h: _WebhookHandler) -> None:
        with self._cond:
            h.conn.reset = True
        h.close_connection = True

    def _handle(self, h: _WebhookHandler) -> None:
        path = urlsplit(h.path).path
        match = _NOFORMAT_RE.fullmatch(path)
        token = unquote(match.group(1)) if match else None
        fault = self._pop_fault()
        body, outcome = self._read_body(h)

        if fault is not None and fault.action == "slow" and h.webhook_server.stopping.wait(fault.delay):
            self._record(h, token, body, None, fault, "slow reply interrupted by stop(): reset")
            self._reset(h)
            return
        if fault is not None and fault.action == "reset":
            self._record(h, token, body, None, fault, "scripted reset without reply")
            self._reset(h)
            return
        if outcome == "truncated":
            self._record(h, token, body, None, fault, "body truncated: the client closed the connection")
            self._reset(h)
            return

        headers: list[tuple[str, str]] = []
        if fault is not None and fault.status is not None:
            status, note = fault.status, f"scripted {fault.label}"
            if fault.retry_after is not None:
                headers.append(("Retry-After", fault.retry_after))
        elif match is None:
            status, note = 404, "unknown path"
        elif h.command != "POST":
            status, note = 405, "method not allowed"
            headers.append(("Allow", "POST"))
        elif token not in self.tokens:
            status, note = self.unknown_token_status, "unknown token"
        elif outcome == "bad":
            status, note = 400, "malformed body framing"
        elif outcome == "too_large":
            status, note = 413, f"body larger than {self.max_body_bytes} bytes"
        else:
            status, note = 204, "accepted"
        if status == 204:
            headers.append(("Cache-Control", NO_CACHE))
        if fault is not None and fault.action == "slow":
            note = f"{note} after {fault.label}"

        self._record(h, token, body, status, fault, note)
        text = b"" if status == 204 else f"{status} {note}\n".encode()
        try:
            h.send_response(status)
            for key, value in headers:
                h.send_header(key, value)
            if status != 204:
                h.send_header("Content-Type", "text/plain; charset=utf-8")
                h.send_header("Content-Length", str(len(text)))
            if outcome != "ok":  # unread or unparsed body left on the connection: it cannot be reused
                h.send_header("Connection", "close")
            h.end_headers()
            if text and h.command != "HEAD":
                h.wfile.write(text)
        except OSError as exc:
            self._record_error(f"answer {status} not delivered: {exc!r}")
            h.close_connection = True
