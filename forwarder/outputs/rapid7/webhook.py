"""The Rapid7 output's HTTP I/O: Log Search HTTP POST, ``POST <endpoint>/v1/noformat/<token>``.

Batching: one record per request by default, ``concurrency`` requests in flight on keep-alive
connections. Rapid7 does not document whether several JSON documents in one body become several
events, so a body never holds more than one record unless ``records_per_request`` says so; the
throughput lost to one record per request is won back by keep-alive and a few requests in flight
(measurements in ``docs/outputs/rapid7.md``).

Delivery: a record is delivered when its request was answered 2xx. Records of a batch that were
answered 2xx before another request of the same batch failed are remembered, and skipped when the
shipper sends that batch (or a part of it) again, so a retry does not duplicate them. Duplicates
remain possible only for a request Rapid7 stored but whose answer never arrived (reset, timeout),
and for requests answered 2xx in a batch this process did not finish before it stopped.

The log token is part of the URL. It never appears in an outcome's reason or in a log line: reasons
show ``/v1/noformat/***``, and httpx's own request log is redacted the same way.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal
from urllib.parse import urlsplit

import httpx

from forwarder.outputs.rapid7.config import WebhookSettings
from forwarder.outputs.rapid7.encode import webhook_body
from forwarder.outputs.stream import StreamConnection
from forwarder.outputs.tls import client_context
from forwarder.types import Delivered, Message, Outcome, Pause, Record, Reject, Retry, Split

DOC = "https://docs.rapid7.com/insightops/insightops-webhook"
MAX_RETRY_AFTER = 3600.0
USER_AGENT = "snyk-forwarder"
_NOFORMAT = re.compile(r"/v1/noformat/[^/\s\"'?#]+")

Key = tuple[int, int, str]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one request's answer means for the records in it."""

    kind: Literal["ok", "retry", "pause", "reject", "too_large"]
    reason: str = ""
    after: float | None = None


def classify(status: int, retry_after: str | None, url: str) -> Verdict:
    """Rapid7's HTTP POST answers (https://docs.rapid7.com/insightops/insightops-webhook).

    Documented: 204 No Content when the event is stored. Everything else is our reading:

    * 2xx → stored;
    * 408, 429 and 5xx → transient, retried after a backoff (``Retry-After`` is a floor);
    * 413 → the body is too large: split the batch; a single record is refused for good;
    * 401, 403, 404 (an unknown or deleted log token), 405 and 3xx (a wrong endpoint) → the
      output's configuration is wrong: keep every record and pause (acceptance case C-15);
    * other 4xx → Rapid7 refuses these records; they go to the dead-letter store;
    * anything else → transient.
    """
    where = f"POST {url} answered {status}"
    if 200 <= status < 300:
        return Verdict("ok")
    if status in (408, 429) or 500 <= status < 600:
        return Verdict("retry", where, _retry_after(retry_after))
    if status == 413:
        return Verdict("too_large", f"{where} (body too large)")
    if status in (401, 403, 404, 405) or 300 <= status < 400:
        return Verdict(
            "pause",
            f"{where}: the log token or endpoint is wrong; check the token of the log in Log Search and "
            "the region or endpoint setting",
        )
    if 400 <= status < 500:
        return Verdict("reject", where)
    return Verdict("retry", where)


def _retry_after(value: str | None) -> float | None:
    """Seconds from ``Retry-After`` (delta-seconds or an HTTP-date), capped at an hour."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return min(max(moment.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER)


class _RedactTokens(logging.Filter):
    """httpx logs every request URL at INFO; the Rapid7 URL carries the log token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "/v1/noformat/" in record.msg:
            record.msg = _NOFORMAT.sub("/v1/noformat/***", record.msg)
        if isinstance(record.args, tuple) and any("/v1/noformat/" in str(a) for a in record.args):
            record.args = tuple(
                _NOFORMAT.sub("/v1/noformat/***", str(a)) if "/v1/noformat/" in str(a) else a for a in record.args
            )
        return True


_REDACT = _RedactTokens()


def redact_http_logs() -> None:
    """Install the redaction on the loggers of httpx and httpcore (idempotent)."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)


class WebhookOutput:
    def __init__(self, name: str, settings: WebhookSettings, *, client: httpx.AsyncClient | None = None) -> None:
        self.name = name
        self.settings = settings
        self._token = settings.token.reveal()
        self._url = f"{settings.endpoint}/v1/noformat/{self._token}"
        self.shown_url = f"{settings.endpoint}/v1/noformat/***"
        self._context = None
        if settings.endpoint.startswith("https:"):
            self._context = client_context(
                ca_file=settings.tls_ca_file,
                verify=settings.tls_verify,
                client_cert=None,
                client_key=None,
                key=f"outputs.{name}",
            )
        redact_http_logs()
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            verify=self._context if self._context is not None else True,
            timeout=httpx.Timeout(settings.request_timeout, connect=settings.connect_timeout),
            limits=httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,  # a redirect would replay the token to another URL
        )
        self._confirmed: set[Key] = set()
        self.requests = 0  # for status and tests

    def message_budget(self, record: Record) -> int:
        return self.settings.max_event_bytes

    async def send(self, batch: Sequence[Message]) -> Outcome:
        keys = [_key(m) for m in batch]
        self._confirmed.intersection_update(keys)  # forget records of batches that are settled
        todo = [i for i, k in enumerate(keys) if k not in self._confirmed]
        size = self.settings.records_per_request
        groups = iter([todo[j : j + size] for j in range(0, len(todo), size)])
        failures: list[tuple[list[int], Verdict]] = []

        async def worker() -> None:
            for group in groups:  # shared iterator: each group is taken by one worker
                if failures:
                    return  # no new requests after a failure; those in flight finish
                verdict = await self._post([batch[i] for i in group])
                if verdict.kind == "ok":
                    self._confirmed.update(keys[i] for i in group)
                else:
                    failures.append((group, verdict))

        await asyncio.gather(*(worker() for _ in range(min(self.settings.concurrency, len(todo)))))
        if not failures:
            self._confirmed.clear()
            return Delivered()
        return self._outcome(failures, keys)

    def _outcome(self, failures: list[tuple[list[int], Verdict]], keys: list[Key]) -> Outcome:
        verdicts = [v for _, v in failures]
        for verdict in verdicts:
            if verdict.kind == "pause":
                return Pause(verdict.reason)
        retries = [v for v in verdicts if v.kind == "retry"]
        if retries:
            afters = [v.after for v in retries if v.after is not None]
            return Retry(retries[0].reason, max(afters) if afters else None)
        for group, verdict in failures:
            if verdict.kind == "too_large" and len(group) > 1:
                return Split(verdict.reason)
        refused = sorted(i for group, _ in failures for i in group)
        others = set(range(len(keys))) - set(refused)
        return Reject(
            failures[0][1].reason,
            indices=tuple(refused),
            others_delivered=all(keys[i] in self._confirmed for i in others),
        )

    async def _post(self, messages: list[Message]) -> Verdict:
        body = webhook_body(messages)
        single_json = len(messages) == 1 and body[:1] == b"{"
        headers = {"Content-Type": "application/json" if single_json else "text/plain; charset=utf-8"}
        self.requests += 1
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            return Verdict("retry", self._redact(f"POST {self.shown_url} timed out ({exc.__class__.__name__})"))
        except httpx.HTTPError as exc:
            return Verdict("retry", self._redact(f"POST {self.shown_url} failed: {exc.__class__.__name__}: {exc}"))
        return classify(response.status_code, response.headers.get("Retry-After"), self.shown_url)

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***")

    async def healthcheck(self) -> None:
        """Open (and close) a connection to the endpoint: a POST would store an event."""
        parts = urlsplit(self.settings.endpoint)
        assert parts.hostname is not None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        probe = StreamConnection(
            parts.hostname, port, ssl_context=self._context, connect_timeout=self.settings.connect_timeout
        )
        try:
            await probe.connect()
        finally:
            await probe.close()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _key(message: Message) -> Key:
    """A record's place in the buffer plus its id: unique even when two stored events share a body."""
    record = message.record
    return (record.position.event_id, record.position.index, record.id)
