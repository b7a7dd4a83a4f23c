"""The webhook endpoint: receive → verify → store → answer.

The request path does only what the 2xx promises. Checks run in this order, each answering as
soon as it fails (nothing is stored for any failure):

1. method (the router: anything but POST → 405),
2. size (Content-Length or the running total over ``max_body_bytes`` → 413),
3. signature over the raw bytes (→ 401),
4. ``X-Snyk-Event`` present (→ 400), body is JSON (→ 400), snapshot body is an object (→ 400),
5. event type: ``ping/v0`` → 200, nothing stored; ``project_snapshot/v0`` → stored, 202;
   anything else → stored raw in quarantine, 202 (so Snyk does not retry), not forwarded;
6. storing: 202 only after the commit is fsynced; a storage failure → 503 with Retry-After.

A repeated ``X-Snyk-Transport-ID`` is answered 200 without storing again.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from forwarder import telemetry
from forwarder.buffer.sqlite import AppendResult
from forwarder.config.model import ListenConfig
from forwarder.errors import BadRequest, BadSignature, ReceiveError, StorageError, Unavailable, UnsupportedEncoding
from forwarder.flatten import shape_problems
from forwarder.receiver.body import SHUTTING_DOWN, MemoryBudget, ReadTimers, read_body
from forwarder.receiver.verify import Verifier, why_not
from forwarder.types import Webhook

Store = Callable[[Webhook], Awaitable[AppendResult]]

KNOWN_SNAPSHOT = "project_snapshot/v0"
KNOWN_PING = "ping/v0"
_EVENT = re.compile(r"^([A-Za-z0-9_.-]+)/(v\d+)$")
_MAX_HEADER_TEXT = 256
_JSON = (b"content-type", b"application/json")
# Answers while the buffer cannot take more; checked before the body is read (nothing is stored).
REFUSALS = {
    "file_lost": Unavailable(
        "the forwarder's buffer file was deleted or replaced, so the event cannot be stored durably and was NOT "
        "accepted; retry later (operators: restart the service, see its log)",
        retry_after=60,
        code="buffer_lost",
    ),
    "disk_full": Unavailable(
        "the forwarder's disk is full, so the event cannot be stored durably and was NOT accepted; retry later "
        "(operators: free space in the state directory)",
        retry_after=60,
        code="disk_full",
    ),
    "backpressure": Unavailable(
        "the forwarder's buffer is above its high-water mark while its outputs catch up; the event was NOT "
        "accepted, retry later (operators: check the outputs with `snyk-forwarder status`)",
        retry_after=30,
        code="buffer_full",
    ),
}


class WebhookEndpoint:
    """A raw ASGI app: the body is streamed with limits, and no Request object is built per call."""

    def __init__(
        self,
        *,
        verifier: Verifier,
        store: Store,
        listen: ListenConfig,
        admission: Callable[[], str | None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._admission = admission
        self.verifier = verifier
        self._store = store
        self._listen = listen
        self._budget = MemoryBudget(listen.max_inflight_body_bytes)
        self._clock = clock
        self._reads = ReadTimers()
        self._stopping = False

    @property
    def body_bytes_in_memory(self) -> int:
        return self._budget.limit - self._budget.available

    def shutdown(self, grace: float) -> None:
        """Refuse new requests now and cut off body reads still going after ``grace`` seconds,
        each with a clean 503, before the server's own drain timeout would cancel them (500)."""
        loop = asyncio.get_running_loop()
        loop.call_soon_threadsafe(loop.call_later, grace, self._reads.expire)  # may run in a signal handler
        self._stopping = True

    def update_limits(self, listen: ListenConfig) -> None:
        """New body limits from a reload; requests already reading keep the ones they started with."""
        self._listen = listen
        if listen.max_inflight_body_bytes != self._budget.limit:
            self._budget = MemoryBudget(listen.max_inflight_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        signature: bytes | None = None
        signatures = 0
        event = transport_id = timestamp = length = encoding = None
        for name, value in scope["headers"]:
            if name == b"x-hub-signature":
                signature, signatures = value, signatures + 1
            elif name == b"x-snyk-event":
                event = value
            elif name == b"x-snyk-transport-id":
                transport_id = value
            elif name == b"x-snyk-timestamp":
                timestamp = value
            elif name == b"content-length":
                length = value
            elif name == b"content-encoding":
                encoding = value
        held = 0
        event_name = _text(event)
        tid = _text(transport_id)
        try:
            if self._stopping:
                raise SHUTTING_DOWN
            refused = self._admission()
            if refused is not None:
                raise REFUSALS[refused]
            if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
                raise UnsupportedEncoding(
                    f"Content-Encoding {_text(encoding)!r} is not supported: the signature covers the body as "
                    "sent, so send it uncompressed (a proxy that compresses requests must not do so on this path)"
                )
            body, held = await read_body(
                receive,
                content_length=_content_length(length),
                max_bytes=self._listen.max_body_bytes,
                budget=self._budget,
                total_timeout=self._listen.body_timeout,
                idle_timeout=self._listen.body_idle_timeout,
                timers=self._reads,
            )
            status, answer = await self._handle(
                body, signature if signatures == 1 else None, event_name, tid, _text(timestamp)
            )
        except ReceiveError as exc:
            client = scope.get("client")
            telemetry.webhook_rejected(
                exc.status_code,
                exc.code,
                exc.message,
                client=client[0] if client else None,
                transport_id=tid,
                event_name=event_name,
            )
            await _respond(send, exc.status_code, {"error": exc.code, "message": exc.message}, exc.headers())
            return
        finally:
            self._budget.release(held)
        await _respond(send, status, answer)

    async def _handle(
        self,
        body: bytes,
        signature: bytes | None,
        event: str | None,
        transport_id: str | None,
        timestamp: str | None,
    ) -> tuple[int, dict[str, Any]]:
        secret_index = self.verifier.match(signature, body)
        if secret_index is None:
            raise BadSignature(
                f"{why_not(signature)}; nothing was stored. Check that the webhook's secret in Snyk equals one of "
                "webhook.secrets, and that no proxy re-encodes the body"
            )
        if event is None:
            raise BadRequest(
                "X-Snyk-Event header is missing; send the event name, e.g. project_snapshot/v0",
                code="missing_event",
            )
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if "UTF-8" in str(exc):
                raise BadRequest(
                    "body is not valid UTF-8; JSON must be sent UTF-8 encoded (RFC 8259). Nothing was stored: "
                    "check for a proxy or script that re-encodes the body",
                    code="malformed_json",
                ) from None
            raise BadRequest(f"body is not valid JSON ({exc}); nothing was stored", code="malformed_json") from None
        if event == KNOWN_PING:
            webhook_id = payload.get("webhookId") if isinstance(payload, dict) else None
            telemetry.webhook_ping(webhook_id if isinstance(webhook_id, str) else None, secret_index)
            return 200, {"status": "ok", "event": event}
        known = event == KNOWN_SNAPSHOT
        if known and not isinstance(payload, dict):
            raise BadRequest(
                "a project_snapshot/v0 body must be a JSON object; nothing was stored",
                code="malformed_payload",
            )
        webhook = Webhook(
            body=body,
            body_sha256=hashlib.sha256(body).hexdigest(),
            event_name=event,
            received_at=self._clock(),
            kind="snapshot" if known else "unknown",
            transport_id=transport_id,
            snyk_timestamp=timestamp,
        )
        try:
            result = await self._store(webhook)
        except StorageError as exc:
            refused = self._admission()
            if refused is not None:  # the store just found the disk full
                raise REFUSALS[refused] from exc
            raise Unavailable(
                f"the event could not be stored durably ({exc}); it was NOT accepted, please retry",
                retry_after=30,
                code="storage_failed",
            ) from exc
        if result.duplicate:
            telemetry.webhook_duplicate(result.event_id, transport_id)
            return 200, {"status": "duplicate", "event_id": result.event_id}
        if result.quarantined:
            match = _EVENT.match(event)
            telemetry.webhook_quarantined(
                match.group(1) if match else event, match.group(2) if match else None, result.event_id
            )
            return 202, {"status": "quarantined", "event": event}
        telemetry.webhook_stored(result.event_id, event, len(body), transport_id)
        if known and (problems := shape_problems(payload)):
            telemetry.snapshot_unexpected_shape(result.event_id, problems)
        return 202, {"status": "stored", "event_id": result.event_id}


async def _respond(
    send: Any, status: int, answer: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    telemetry.webhook_answered(status)
    body = orjson.dumps(answer)
    headers = [_JSON, (b"content-length", str(len(body)).encode()), *(extra or ())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _text(value: bytes | None) -> str | None:
    """A header as text; absent, empty or absurdly long values count as absent."""
    if not value or len(value) > _MAX_HEADER_TEXT:
        return None
    text = value.decode("latin-1").strip()
    return text or None


def _content_length(value: bytes | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest("Content-Length is not a number", code="bad_content_length")
    return int(value)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.app.state.webhook_path
    hints = {
        404: f"no endpoint here; Snyk webhooks go to POST {path}",
        405: f"only POST is accepted on {path}",
    }
    message = hints.get(exc.status_code, exc.detail)
    return JSONResponse(
        {"error": exc.detail.lower().replace(" ", "_"), "message": message},
        status_code=exc.status_code,
        headers=exc.headers,
    )


class _Dispatch:
    """POST on the webhook path goes straight to the endpoint; everything else (404, 405, errors)
    through Starlette. Skipping the middleware stack for the one hot route saves a tenth of a
    request's CPU, and the endpoint handles its own errors."""

    def __init__(self, endpoint: WebhookEndpoint, path: str, fallback: Starlette) -> None:
        self._endpoint = endpoint
        self._path = path
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self._path:
            await self._endpoint(scope, receive, send)
        else:
            await self._fallback(scope, receive, send)


def build_app(endpoint: WebhookEndpoint, path: str) -> _Dispatch:
    app = Starlette(routes=[Route(path, endpoint, methods=["POST"])], exception_handlers={HTTPException: _http_error})
    app.state.webhook_path = path
    # Starlette would answer a trailing-slash variant with a 307 to a URL built from the Host
    # header (an open redirect, and Snyk does not follow redirects): a clear 404 is better.
    app.router.redirect_slashes = False
    return _Dispatch(endpoint, path, app)
