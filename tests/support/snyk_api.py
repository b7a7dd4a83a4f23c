"""A fake of Snyk's v1 webhook management API, for testing the ``snyk-forwarder snyk …`` CLI.

:class:`FakeSnykApi` is a real HTTPS server on 127.0.0.1 (port chosen by the kernel at start) that serves
the five v1 webhook operations under ``/v1``, so a client given ``fake.base_url``
(``https://127.0.0.1:PORT/v1/``) behaves as with ``https://api.snyk.io/v1/``. Like Snyk, it sends a signed
``ping/v0`` delivery to a webhook after creating it and on ``POST …/ping``; the delivery target is usually
a local HTTPS receiver that uses a test CA (``delivery_ca_file`` / ``delivery_ssl_context``).

Facts it follows (``shared/notes/snyk-webhooks.md`` §1, §2, §4, §8 and Snyk's v1 API reference):

* ``POST /v1/org/{orgId}/webhooks`` ``{"url", "secret"}`` → 200 ``{"id", "url"}``; ``http://`` is refused.
* ``GET /v1/org/{orgId}/webhooks`` → 200 ``{"results": [{"id", "url"}], "total": N}``.
* ``GET /v1/org/{orgId}/webhooks/{id}`` → 200 ``{"id", "url"}``; ``DELETE`` → 200 with an empty body;
  ``POST …/{id}/ping`` (no body) → 200. There is no update endpoint. The secret is never returned.
* ``Authorization: token <API_TOKEN>``; a bad token gets 401 ``{"code":401,"error":"Not authorised",
  "message":"Not authorised"}``. Errors are JSON ``{"code", "error", "message"}`` with an
  ``x-error-reference`` (UUID) header. Every call needs View Organization + View Outbound Webhooks; create
  adds Create Outbound Webhooks, delete adds Remove Outbound Webhooks.
* Deliveries: ``POST`` of compact JSON ``{"webhookId":"<id>"}`` with ``Content-Type: application/json``,
  ``X-Snyk-Event: ping/v0``, ``X-Snyk-Transport-ID: <uuid4>``, ``X-Snyk-Timestamp`` (ISO 8601 UTC, whole
  seconds, ``Z``), ``User-Agent: Snyk-Webhooks/<7 hex>`` and ``X-Hub-Signature: sha256=<lowercase hex
  HMAC-SHA256(secret as UTF-8, exact body bytes)>``.

Choices where Snyk documents nothing (conservative: a client that passes here should pass against Snyk):

* **Other org**: a token that may not access the org gets **404** with Snyk's documented org-not-found
  message (``Org <id> was not found or you may not have the correct permissions to access the org.``),
  not 403. An org no token grants is treated the same.
* **Missing permission**: 403 JSON error naming the permission. ``view=False`` makes every call 403.
* **Check order**: unreadable body (bad ``Content-Length``: 400; over 1 MiB: 413) → scripted reply → real
  rate limit (429) → route (unknown route or method: 404, before
  auth) → auth (401) → org access (404) → permission (403) → body validation (400) → webhook lookup (404)
  → duplicate URL (422, only with ``refuse_duplicate_urls``).
* **Auth scheme**: only ``token <T>`` and ``Token <T>`` (exactly one space, exact token). ``Bearer`` and
  other spellings get 401.
* **Paths** are matched exactly on the raw (undecoded) path: a trailing slash, a double slash or a missing
  ``/v1`` gives 404. The query string is ignored (but recorded).
* **Create validation**: body must be a JSON object (the request ``Content-Type`` is not checked); ``url``
  a non-empty string whose scheme is ``https`` (case-insensitive) and that has a host; ``secret`` a
  non-empty string of at least ``min_secret_length`` (default 1) characters; extra fields are ignored;
  anything else → 400. Non-ASCII secrets are accepted and signed as UTF-8.
* **Duplicate URL** in one org: allowed by default; ``refuse_duplicate_urls=True`` answers 422 (the
  third-party claim in notes §9).
* **Create status** is 200 by default; ``create_status=201`` mimics the other third-party claim.
* **Ping answer**: 200 with an empty body (a client must not expect JSON). Delete: 200, empty body.
* **List order**: creation order.
* **Rate limit**: no limit by default. ``set_rate_limit(n, window)`` is a fixed window counted from the
  first request; refused requests do not count; ``Retry-After`` is sent only if asked for (Snyk does not
  document it). Scripted 429s (:meth:`FakeSnykApi.throttle_next`) do not count either.
* **Deliveries** run on one background thread, in order, one attempt each: no retries, no redirects (Snyk's
  retry policy is unknown). A delivery is queued only after the API response has been written. Deliveries
  still queued when the server stops are dropped without a record. ``X-Snyk-Timestamp`` is the send time.
  The ``User-Agent`` build suffix is random per instance unless ``user_agent_build`` is given.
* **Plain HTTP** (``plain_http=True``) serves the same API without TLS, for tests that do not care about
  TLS; real Snyk answers 404 to every plain-HTTP request.
* The secret is visible only through :meth:`FakeSnykApi.webhooks` (a test-side view), never over HTTP.

Observability: :meth:`FakeSnykApi.requests` (every request in order, with the response it got; recorded
before the response is written), :meth:`FakeSnykApi.webhooks`, :meth:`FakeSnykApi.deliveries` and
:meth:`FakeSnykApi.wait_for_deliveries`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import math
import queue
import re
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, cast
from urllib.parse import urlsplit

from .ports import LOOPBACK

__all__ = [
    "API_PREFIX",
    "NOT_AUTHORISED",
    "PING_EVENT",
    "Delivery",
    "FakeSnykApi",
    "RecordedRequest",
    "ScriptedReply",
    "TokenGrant",
    "Webhook",
    "error_body",
    "sign",
]

API_PREFIX: Final = "/v1"
PING_EVENT: Final = "ping/v0"
NOT_AUTHORISED: Final[Mapping[str, object]] = {"code": 401, "error": "Not authorised", "message": "Not authorised"}
JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"

MAX_BODY: Final = 1024 * 1024
_HANDLER_TIMEOUT: Final = 10.0

Operation = Literal["create", "list", "get", "delete", "ping"]

_ROUTES: Final[tuple[tuple[str, re.Pattern[str], Operation], ...]] = (
    ("POST", re.compile(r"/v1/org/(?P<org>[^/]+)/webhooks"), "create"),
    ("GET", re.compile(r"/v1/org/(?P<org>[^/]+)/webhooks"), "list"),
    ("GET", re.compile(r"/v1/org/(?P<org>[^/]+)/webhooks/(?P<hook>[^/]+)"), "get"),
    ("DELETE", re.compile(r"/v1/org/(?P<org>[^/]+)/webhooks/(?P<hook>[^/]+)"), "delete"),
    ("POST", re.compile(r"/v1/org/(?P<org>[^/]+)/webhooks/(?P<hook>[^/]+)/ping"), "ping"),
)

_PERMISSION_NAMES: Final = {
    "view": "View Outbound Webhooks",
    "create": "Create Outbound Webhooks",
    "delete": "Remove Outbound Webhooks",
}


def sign(secret: str, body: bytes) -> str:
    """``X-Hub-Signature`` value: ``sha256=`` + lowercase hex HMAC-SHA256(secret as UTF-8, body)."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def error_body(code: int, message: str) -> dict[str, object]:
    """Snyk v1's error shape: ``{"code", "error", "message"}`` (the last two carry the same text)."""
    return {"code": code, "error": message, "message": message}


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


@dataclass(frozen=True)
class TokenGrant:
    """What one API token may do: the orgs it can access and which webhook permissions it holds."""

    orgs: frozenset[str]
    view: bool = True
    create: bool = True
    delete: bool = True


@dataclass(frozen=True)
class Webhook:
    """A stored webhook. ``secret`` is visible here for tests only; no endpoint ever returns it."""

    id: str
    org_id: str
    url: str
    secret: str
    created: datetime


@dataclass(frozen=True)
class ScriptedReply:
    """A reply forced on a matching request, ahead of all normal processing.

    ``status=None`` means "process normally" (use with ``delay`` for a slow but correct reply).
    ``body``: bytes/str sent as is; any other value JSON-encoded; ``None`` gives Snyk's error shape for
    statuses >= 400 and an empty body otherwise. Statuses >= 400 get an ``x-error-reference`` unless
    ``error_reference`` is false or ``headers`` already has one. ``drop_connection`` closes the connection
    without any reply (after ``delay``).
    """

    status: int | None = None
    body: object = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop_connection: bool = False
    error_reference: bool = True


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received, with the reply it got (``status`` is None when the connection was dropped)."""

    seq: int  # 1-based position in the log (restarts after clear_logs)
    method: str
    target: str  # raw request target, query included
    path: str  # target without the query string
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    json: Any  # parsed body, or None when empty or not JSON
    status: int | None
    response_headers: tuple[tuple[str, str], ...]
    response_body: bytes
    scripted: bool
    received_at: float  # time.time()

    def header(self, name: str) -> str | None:
        """First request header called ``name`` (case-insensitive), or None."""
        return _header(self.headers, name)

    def response_header(self, name: str) -> str | None:
        """First response header called ``name`` (case-insensitive), or None."""
        return _header(self.response_headers, name)


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt: what was sent and what came back (``status``) or went wrong (``error``)."""

    seq: int
    webhook_id: str
    org_id: str
    url: str
    event: str
    transport_id: str
    headers: tuple[tuple[str, str], ...]  # as sent, without Host and Content-Length
    body: bytes
    status: int | None
    error: str | None
    response_body: bytes
    started_at: float  # time.time()
    duration: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def signature(self) -> str | None:
        return self.header("X-Hub-Signature")

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)


@dataclass
class _Script:
    reply: ScriptedReply
    remaining: int | None
    method: str | None
    path: re.Pattern[str] | None


@dataclass(frozen=True)
class _Job:
    webhook_id: str
    org_id: str
    url: str
    secret: str
    event: str
    body: bytes
    transport_id: str


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    jobs: list[_Job] = field(default_factory=list)


def _route(method: str, path: str) -> tuple[Operation, re.Match[str]] | None:
    for route_method, pattern, operation in _ROUTES:
        match = pattern.fullmatch(path)
        if match is not None and route_method == method:
            return operation, match
    return None


def _json_reply(status: int, value: object, headers: Iterable[tuple[str, str]] = ()) -> _Reply:
    return _Reply(status, _json_bytes(value), [("Content-Type", JSON_CONTENT_TYPE), *headers])


def _error(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> _Reply:
    return _json_reply(status, error_body(status, message), [*headers, ("x-error-reference", str(uuid.uuid4()))])


class FakeSnykApi:
    """Fake Snyk v1 webhook API on 127.0.0.1 over HTTPS (or plain HTTP); see the module docstring.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. ``cert_file`` is a PEM chain (may also
    hold the key when ``key_file`` is None); ``server_ssl_context`` may be given instead.
    """

    def __init__(
        self,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        *,
        server_ssl_context: ssl.SSLContext | None = None,
        plain_http: bool = False,
        tokens: Mapping[str, TokenGrant] | None = None,
        delivery_ca_file: str | Path | None = None,
        delivery_ssl_context: ssl.SSLContext | None = None,
        delivery_timeout: float = 10.0,
        deliver_pings: bool = True,
        refuse_duplicate_urls: bool = False,
        create_status: int = 200,
        min_secret_length: int = 1,
        user_agent_build: str | None = None,
    ) -> None:
        if plain_http:
            self._server_ctx: ssl.SSLContext | None = None
        elif server_ssl_context is not None:
            self._server_ctx = server_ssl_context
        elif cert_file is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(cert_file), None if key_file is None else str(key_file))
            self._server_ctx = ctx
        else:
            raise ValueError("FakeSnykApi needs cert_file (and key_file) or server_ssl_context, or plain_http=True")
        if delivery_ssl_context is not None:
            self._delivery_ctx = delivery_ssl_context
        else:
            self._delivery_ctx = ssl.create_default_context(
                cafile=None if delivery_ca_file is None else str(delivery_ca_file)
            )
        self.delivery_timeout = delivery_timeout
        self.deliver_pings = deliver_pings
        self.refuse_duplicate_urls = refuse_duplicate_urls
        self.create_status = create_status
        self.min_secret_length = min_secret_length
        self.user_agent = "Snyk-Webhooks/" + (user_agent_build or secrets.token_hex(4)[:7])

        self._lock = threading.Lock()
        self._delivered = threading.Condition(self._lock)
        self._tokens: dict[str, TokenGrant] = dict(tokens or {})
        self._hooks: dict[str, dict[str, Webhook]] = {}
        self._requests: list[RecordedRequest] = []
        self._deliveries: list[Delivery] = []
        self._scripts: list[_Script] = []
        self._rate_limit: tuple[int, float, bool] | None = None
        self._window_start = 0.0
        self._window_count = 0

        self._stopping = threading.Event()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._started:
            raise RuntimeError("FakeSnykApi can be started only once")
        self._started = True
        self._server = _Server(self, self._server_ctx)
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-snyk-api", daemon=True
        )
        self._serve_thread.start()
        self._worker = threading.Thread(target=self._deliver_loop, name="fake-snyk-deliveries", daemon=True)
        self._worker.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections, drop queued deliveries; waits for the threads (bounded)."""
        if self._server is None or self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._jobs.put(None)
        if self._worker is not None:
            self._worker.join(self.delivery_timeout + 5)
        if self._serve_thread is not None:
            self._serve_thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeSnykApi is not started")
        return int(self._server.server_address[1])

    @property
    def scheme(self) -> str:
        return "http" if self._server_ctx is None else "https"

    @property
    def base_url(self) -> str:
        """The v1 base URL, with trailing slash, as for ``https://api.snyk.io/v1/``."""
        return f"{self.scheme}://{LOOPBACK}:{self.port}{API_PREFIX}/"

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` (e.g. ``/v1/org/x/webhooks``) on this server."""
        return f"{self.scheme}://{LOOPBACK}:{self.port}{path}"

    # -- configuration -----------------------------------------------------------------------------------

    def add_token(
        self, token: str, orgs: Iterable[str], *, view: bool = True, create: bool = True, delete: bool = True
    ) -> TokenGrant:
        grant = TokenGrant(frozenset(orgs), view=view, create=create, delete=delete)
        with self._lock:
            self._tokens[token] = grant
        return grant

    def add_webhook(self, org_id: str, url: str, secret: str, *, webhook_id: str | None = None) -> Webhook:
        """Store a webhook directly (no validation, no ping), e.g. to seed state or fix a known id."""
        hook = Webhook(webhook_id or str(uuid.uuid4()), org_id, url, secret, datetime.now(UTC))
        with self._lock:
            self._hooks.setdefault(org_id, {})[hook.id] = hook
        return hook

    def script(
        self,
        reply: ScriptedReply,
        *,
        times: int | None = 1,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Force ``reply`` on the next ``times`` matching requests (``None``: until :meth:`clear_scripts`).

        ``method`` matches exactly (case-insensitive); ``path`` is a regex searched in the path (no query).
        Scripts are tried in the order they were added; the first match is used.
        """
        if times is not None and times < 1:
            raise ValueError(f"times must be positive or None, not {times!r}")
        pattern = None if path is None else re.compile(path)
        with self._lock:
            self._scripts.append(_Script(reply, times, None if method is None else method.upper(), pattern))

    def throttle_next(self, n: int, *, retry_after: float | str | None = None) -> None:
        """Answer the next ``n`` requests with 429 (Snyk's error shape), optionally with ``Retry-After``."""
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        self.script(ScriptedReply(429, error_body(429, "Too many requests"), headers), times=n)

    def clear_scripts(self) -> None:
        with self._lock:
            self._scripts.clear()

    def set_rate_limit(self, max_requests: int | None, window: float = 60.0, *, send_retry_after: bool = False) -> None:
        """Allow ``max_requests`` per fixed ``window`` seconds, then 429 (``None`` turns the limit off).

        Snyk's own limit is 2,000 requests per minute.
        """
        with self._lock:
            if max_requests is None:
                self._rate_limit = None
            else:
                self._rate_limit = (max_requests, window, send_retry_after)
                self._window_start = time.monotonic()
                self._window_count = 0

    # -- observability -----------------------------------------------------------------------------------

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def webhooks(self, org_id: str | None = None) -> list[Webhook]:
        """Current webhooks of ``org_id`` (or of every org), in creation order."""
        with self._lock:
            orgs = [self._hooks.get(org_id, {})] if org_id is not None else list(self._hooks.values())
            return [hook for org in orgs for hook in org.values()]

    def deliveries(self, webhook_id: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self._deliveries if webhook_id is None or d.webhook_id == webhook_id]

    def wait_for_deliveries(self, n: int, timeout: float) -> list[Delivery]:
        """Block until at least ``n`` delivery attempts have completed; return all of them.

        Raises ``TimeoutError`` (listing what did arrive) after ``timeout`` seconds.
        """
        with self._delivered:
            if not self._delivered.wait_for(lambda: len(self._deliveries) >= n, timeout):
                got = [(d.event, d.url, d.status, d.error) for d in self._deliveries]
                raise TimeoutError(f"expected {n} deliveries within {timeout:.1f}s, got {len(got)}: {got}")
            return list(self._deliveries)

    def clear_logs(self) -> None:
        """Forget recorded requests and deliveries (webhooks, tokens and scripts stay)."""
        with self._lock:
            self._requests.clear()
            self._deliveries.clear()

    # -- deliveries --------------------------------------------------------------------------------------

    def deliver(self, webhook_id: str, event: str, body: bytes) -> str:
        """Queue a delivery of ``body`` as ``event`` (e.g. ``project_snapshot/v0``) to a stored webhook.

        Signed with the webhook's secret like a real delivery. Returns the transport ID.
        """
        with self._lock:
            hook = next((org[webhook_id] for org in self._hooks.values() if webhook_id in org), None)
        if hook is None:
            raise KeyError(f"no webhook {webhook_id!r}")
        job = self._job(hook, event, body)
        self._jobs.put(job)
        return job.transport_id

    @staticmethod
    def _job(hook: Webhook, event: str, body: bytes) -> _Job:
        return _Job(hook.id, hook.org_id, hook.url, hook.secret, event, body, str(uuid.uuid4()))

    def _ping_job(self, hook: Webhook) -> _Job:
        return self._job(hook, PING_EVENT, _json_bytes({"webhookId": hook.id}))

    def _enqueue(self, jobs: Iterable[_Job]) -> None:
        for job in jobs:
            self._jobs.put(job)

    def _deliver_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._stopping.is_set():
                return
            delivery = self._send(job)
            with self._delivered:
                self._deliveries.append(replace(delivery, seq=len(self._deliveries) + 1))
                self._delivered.notify_all()

    def _send(self, job: _Job) -> Delivery:
        headers = (
            ("Content-Type", "application/json"),
            ("User-Agent", self.user_agent),
            ("X-Snyk-Event", job.event),
            ("X-Snyk-Transport-ID", job.transport_id),
            ("X-Snyk-Timestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")),
            ("X-Hub-Signature", sign(job.secret, job.body)),
        )
        started, t0 = time.time(), time.monotonic()
        status: int | None = None
        error: str | None = None
        response_body = b""
        conn: http.client.HTTPConnection | None = None
        try:
            parts = urlsplit(job.url)
            if parts.hostname is None:
                raise ValueError(f"URL has no host: {job.url!r}")
            if parts.scheme.lower() == "https":
                conn = http.client.HTTPSConnection(
                    parts.hostname, parts.port, timeout=self.delivery_timeout, context=self._delivery_ctx
                )
            elif parts.scheme.lower() == "http":
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.delivery_timeout)
            else:
                raise ValueError(f"unsupported URL scheme: {job.url!r}")
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.putrequest("POST", target, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(job.body)))
            conn.endheaders(job.body)
            response = conn.getresponse()
            response_body = response.read()
            status = response.status
        except (OSError, http.client.HTTPException, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if conn is not None:
                conn.close()
        return Delivery(
            seq=0,  # numbered when logged
            webhook_id=job.webhook_id,
            org_id=job.org_id,
            url=job.url,
            event=job.event,
            transport_id=job.transport_id,
            headers=headers,
            body=job.body,
            status=status,
            error=error,
            response_body=response_body,
            started_at=started,
            duration=time.monotonic() - t0,
        )

    # -- request handling (called from handler threads) --------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _take_script(self, method: str, path: str) -> ScriptedReply | None:
        with self._lock:
            for script in self._scripts:
                if script.method is not None and script.method != method:
                    continue
                if script.path is not None and not script.path.search(path):
                    continue
                if script.remaining is not None:
                    script.remaining -= 1
                    if script.remaining <= 0:
                        self._scripts.remove(script)
                return script.reply
        return None

    @staticmethod
    def _scripted_reply(reply: ScriptedReply, status: int) -> _Reply:
        headers = list(reply.headers.items())
        if isinstance(reply.body, bytes):
            body = reply.body
        elif isinstance(reply.body, str):
            body = reply.body.encode("utf-8")
        elif reply.body is None and status < 400:
            body = b""
        else:
            value = reply.body if reply.body is not None else error_body(status, HTTPStatus(status).phrase)
            body = _json_bytes(value)
            if _header(headers, "Content-Type") is None:
                headers.append(("Content-Type", JSON_CONTENT_TYPE))
        if status >= 400 and reply.error_reference and _header(headers, "x-error-reference") is None:
            headers.append(("x-error-reference", str(uuid.uuid4())))
        return _Reply(status, body, headers)

    def _record(
        self,
        method: str,
        target: str,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        reply: _Reply | None,
        *,
        scripted: bool,
    ) -> None:
        path, _, query = target.partition("?")
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    seq=len(self._requests) + 1,
                    method=method,
                    target=target,
                    path=path,
                    query=query,
                    headers=headers,
                    body=body,
                    json=parsed,
                    status=None if reply is None else reply.status,
                    response_headers=() if reply is None else tuple(reply.headers),
                    response_body=b"" if reply is None else reply.body,
                    scripted=scripted,
                    received_at=time.time(),
                )
            )

    def _rate_limited(self) -> _Reply | None:
        """Count this request against the real limit; a 429 reply if it is over. Caller holds the lock."""
        if self._rate_limit is None:
            return None
        max_requests, window, send_retry_after = self._rate_limit
        now = time.monotonic()
        if now - self._window_start >= window:
            self._window_start, self._window_count = now, 0
        if self._window_count < max_requests:
            self._window_count += 1
            return None
        extra = [("Retry-After", str(max(1, math.ceil(self._window_start + window - now))))] if send_retry_after else []
        return _error(429, "Too many requests", extra)

    def _dispatch(self, method: str, path: str, headers: tuple[tuple[str, str], ...], body: bytes) -> _Reply:
        with self._lock:
            limited = self._rate_limited()
            if limited is not None:
                return limited
            routed = _route(method, path)
            if routed is None:
                return _error(404, "Not found")
            operation, match = routed
            grant = self._authenticate([value for name, value in headers if name.lower() == "authorization"])
            if grant is None:
                return _json_reply(401, NOT_AUTHORISED, [("x-error-reference", str(uuid.uuid4()))])
            org_id = match["org"]
            if org_id not in grant.orgs:
                return _error(
                    404,
                    f"Org {org_id} was not found or you may not have the correct permissions to access the org.",
                )
            for permission in ("view", *((operation,) if operation in ("create", "delete") else ())):
                if not getattr(grant, permission):
                    return _error(403, f"Forbidden: the API token lacks the {_PERMISSION_NAMES[permission]} permission")
            if operation == "create":
                return self._create(org_id, body)
            if operation == "list":
                hooks = [{"id": h.id, "url": h.url} for h in self._hooks.get(org_id, {}).values()]
                return _json_reply(200, {"results": hooks, "total": len(hooks)})
            hook = self._hooks.get(org_id, {}).get(match["hook"])
            if hook is None:
                return _error(404, f"Webhook {match['hook']} was not found")
            if operation == "get":
                return _json_reply(200, {"id": hook.id, "url": hook.url})
            if operation == "delete":
                del self._hooks[org_id][hook.id]
                return _Reply(200)
            return _Reply(200, jobs=[self._ping_job(hook)])

    def _authenticate(self, values: list[str]) -> TokenGrant | None:
        if len(values) != 1:
            return None
        scheme, sep, token = values[0].partition(" ")
        if not sep or scheme not in ("token", "Token"):
            return None
        return self._tokens.get(token)

    def _create(self, org_id: str, body: bytes) -> _Reply:
        try:
            data: Any = json.loads(body)
        except ValueError:
            return _error(400, "Request body must be a JSON object with url and secret")
        if not isinstance(data, dict):
            return _error(400, "Request body must be a JSON object with url and secret")
        url, secret = data.get("url"), data.get("secret")
        if not isinstance(url, str) or not url:
            return _error(400, "url is required and must be a string")
        parts = urlsplit(url)
        if parts.scheme.lower() != "https" or not parts.hostname:
            return _error(400, "url must be an https:// URL")
        if not isinstance(secret, str) or not secret:
            return _error(400, "secret is required and must be a string")
        if len(secret) < self.min_secret_length:
            return _error(400, f"secret must be at least {self.min_secret_length} characters long")
        org = self._hooks.setdefault(org_id, {})
        if self.refuse_duplicate_urls and any(h.url == url for h in org.values()):
            return _error(422, "A webhook with this url already exists in this organization")
        hook = Webhook(str(uuid.uuid4()), org_id, url, secret, datetime.now(UTC))
        org[hook.id] = hook
        jobs = [self._ping_job(hook)] if self.deliver_pings else []
        return _Reply(
            self.create_status,
            _json_bytes({"id": hook.id, "url": hook.url}),
            [("Content-Type", JSON_CONTENT_TYPE)],
            jobs,
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, api: FakeSnykApi, ssl_context: ssl.SSLContext | None) -> None:
        self.api = api
        self.ssl_context = ssl_context
        self._live: set[socket.socket] = set()
        self._live_lock = threading.Lock()
        super().__init__((LOOPBACK, 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._live_lock:
            self._live.add(request)
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock = cast(socket.socket, request)
        if self.ssl_context is not None:
            sock.settimeout(_HANDLER_TIMEOUT)
            try:
                tls = self.ssl_context.wrap_socket(sock, server_side=True)
            except (OSError, ValueError):
                return  # handshake failed (client refused our cert, port scan, …): nothing to serve
            with self._live_lock:
                self._live.discard(sock)
                self._live.add(tls)
            try:
                _Handler(tls, client_address, self)
            finally:
                with self._live_lock:
                    self._live.discard(tls)
                tls.close()
        else:
            _Handler(sock, client_address, self)

    def shutdown_request(self, request: Any) -> None:
        with self._live_lock:
            self._live.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Unblock handler threads waiting on idle keep-alive connections."""
        with self._live_lock:
            live = list(self._live)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client-side disconnects are normal here; keep test output clean."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeSnykApi/1.0"
    sys_version = ""
    timeout = _HANDLER_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read :meth:`FakeSnykApi.requests` instead."""

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle + delayed ACK add ~40 ms a reply.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def api(self) -> FakeSnykApi:
        return cast(_Server, self.server).api

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_OPTIONS(self) -> None:
        self._serve()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, unsupported method, …) in Snyk's JSON error shape."""
        text = message or HTTPStatus(code).phrase
        body = _json_bytes(error_body(code, text))
        self.send_response(code)
        self.send_header("Content-Type", JSON_CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-error-reference", str(uuid.uuid4()))
        self.send_header("Connection", "close")
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def _read_body(self) -> bytes | _Reply:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    return _error(413, "Request entity too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length_text = self.headers.get("Content-Length", "0")
        try:
            length = int(length_text)
        except ValueError:
            return _error(400, "Invalid Content-Length")
        if length < 0:
            return _error(400, "Invalid Content-Length")
        if length > MAX_BODY:
            return _error(413, "Request entity too large")
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        api = self.api
        method, target = self.command, self.path
        headers = tuple(self.headers.items())
        try:
            read = self._read_body()
        except ValueError:
            read = _error(400, "Malformed chunked body")
        if isinstance(read, _Reply):
            self.close_connection = True
            api._record(method, target, headers, b"", read, scripted=False)
            self._write(read)
            return
        body = read
        path = target.partition("?")[0]
        scripted = api._take_script(method, path)
        if scripted is not None:
            api._sleep(scripted.delay)
            if scripted.drop_connection:
                api._record(method, target, headers, body, None, scripted=True)
                self.close_connection = True
                return
        if scripted is not None and scripted.status is not None:
            reply = api._scripted_reply(scripted, scripted.status)
        else:
            reply = api._dispatch(method, path, headers, body)
        api._record(method, target, headers, body, reply, scripted=scripted is not None)
        self._write(reply)
        api._enqueue(reply.jobs)

    def _write(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if reply.body:
            self.wfile.write(reply.body)
        self.wfile.flush()
