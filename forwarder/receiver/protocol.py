"""uvicorn's HTTP/1.1 protocol with the two things a public webhook listener needs and it lacks.

1. A header deadline. uvicorn times out idle keep-alive connections, but a client that opens a
   connection and never finishes its headers (a slowloris, a half-dead load balancer) holds a
   slot forever, and enough of them exhaust ``listen.max_connections``. Here every request must
   complete its headers within ``listen.header_timeout`` of its first byte (or of the connection
   opening), like nginx's client_header_timeout or Go's ReadHeaderTimeout.
2. A useful answer at the connection limit. uvicorn's own is a plain-text 503 without
   Retry-After; Snyk and operators get the same JSON error, with Retry-After, as every other
   refusal, and the log names the setting to raise.
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
    header_timeout: float = 10.0  # replaced per server by :func:`protocol_class`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._in_headers = False

    # --- header deadline ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
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
            body = orjson.dumps(
                {
                    "error": "header_timeout",
                    "message": f"request headers not complete within {self.header_timeout:g}s; send them at once",
                }
            )
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
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


def protocol_class(header_timeout: float) -> type[WebhookProtocol]:
    """A subclass carrying this server's header deadline (uvicorn instantiates the class itself)."""
    return type("WebhookProtocol", (WebhookProtocol,), {"header_timeout": header_timeout})
