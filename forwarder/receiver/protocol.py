"""uvicorn's HTTP/1.1 protocol with the two things a public webhook listener needs and it lacks.

1. A header deadline. uvicorn times out idle keep-alive connections, but a client that opens a
   connection and never finishes its headers (a slowloris, a half-dead load balancer) holds a
   slot forever, and enough of them exhaust ``listen.max_connections``. Here every request must
   complete its headers within ``listen.header_timeout`` of its first byte (or of the connection
   opening), like nginx's client_header_timeout or Go's ReadHeaderTimeout.
2. A header size limit. httptools buffers a header of any size, so a client could fill memory
   with one endless header line without ever being verified: past ``listen.max_header_bytes``
   the request is refused with 431 and the connection closed.
3. A useful answer at the connection limit. uvicorn's own is a plain-text 503 without
   Retry-After; Snyk and operators get the same JSON error, with Retry-After, as every other
   refusal, and the log names the setting to raise. Unparsable requests get JSON too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from forwarder import telemetry

OVERLOADED_RETRY_AFTER = 5  # seconds; connections free up as fast as requests finish


class WebhookProtocol(HttpToolsProtocol):
    # replaced per server by :func:`protocol_class`
    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._in_headers = False
        self._header_bytes = 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_headers and not self.transport.is_closing():
            # Counted after parsing, so a read that completes small headers and carries body
            # bytes is never mistaken for large headers; memory stays within limit + one read.
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                telemetry.headers_too_large(self.client[0] if self.client else None, self.max_header_bytes)
                self._refuse(
                    431,
                    "Request Header Fields Too Large",
                    "header_too_large",
                    f"request headers exceed listen.max_header_bytes ({self.max_header_bytes} bytes)",
                )

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "Bad Request", "malformed_http", f"{msg} The request line or headers could not be parsed")

    def _refuse(self, status: int, reason: str, code: str, message: str) -> None:
        """Answer before any application code ran, and close: the connection's state is unknown."""
        body = orjson.dumps({"error": code, "message": message})
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        self.transport.close()

    # --- header deadline ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_header_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._header_deadline_passed)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if busy or self.transport.is_closing():
            return  # a request is being answered; its own body and keep-alive timers apply
        telemetry.headers_timed_out(self.client[0] if self.client else None, self.header_timeout, self._in_headers)
        if self._in_headers:  # the client is mid-request: tell it why it is cut off
            self._refuse(
                408,
                "Request Timeout",
                "header_timeout",
                f"request headers not complete within {self.header_timeout:g}s; send them at once",
            )
        else:
            self.transport.close()

    # --- connection limit ---------------------------------------------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if app is service_unavailable:
            telemetry.connections_exhausted(self.limit_concurrency or 0)
            app = _overloaded
        super()._start_asgi_task(cycle, app)


async def _overloaded(scope: Any, receive: Any, send: Any) -> None:
    body = orjson.dumps(
        {
            "error": "overloaded",
            "message": "the forwarder is at its connection limit and did NOT accept the event; retry later "
            "(operators: raise listen.max_connections, or add an instance)",
        }
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(OVERLOADED_RETRY_AFTER).encode()),
        (b"connection", b"close"),
    ]
    telemetry.webhook_answered(503)
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def protocol_class(header_timeout: float, max_header_bytes: int) -> type[WebhookProtocol]:
    """A subclass carrying this server's limits (uvicorn instantiates the class itself)."""
    limits = {"header_timeout": header_timeout, "max_header_bytes": max_header_bytes}
    return type("WebhookProtocol", (WebhookProtocol,), limits)
