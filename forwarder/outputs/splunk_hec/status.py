"""What one HEC answer means for the batch: the status-code table, as one function. Pure.

The table is ``shared/notes/splunk-hec.md`` §6, from Splunk's "Troubleshoot HTTP Event Collector"
page and the community list of reply codes. Every reason says what the operator should do; none
contains the token.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from forwarder.types import Delivered, Outcome, Pause, Reject, Retry, Split

DOCS = (
    "https://help.splunk.com/en/splunk-enterprise/get-data-in/collect-http-event-data/troubleshoot-http-event-collector"
)
# A Retry-After further away than this is treated as this: a proxy's "come back tomorrow" must not
# silence the output for a day; the shipper's backoff still grows on its own.
MAX_RETRY_AFTER = 600.0
# Accepted: 0 Success; 24/25 "queue / ACK approaching capacity" (seen only in a re-implementation,
# but they are 200s that still took the data).
_ACCEPTED = frozenset({0, 24, 25})
# Per-event refusals: the event named by invalid-event-number is bad, the others were not taken.
_EVENT_CODES = frozenset({5, 6, 12, 13, 15})
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_EVENT_HINT = (
    "the record is kept in the dead-letter store (`snyk-forwarder status`); please report it as a bug "
    "with the reply, then replay it"
)

# code → what to do about a configuration the indexer refuses. Records are kept meanwhile.
_CONFIG_HINTS = {
    1: "enable the HEC token in Splunk (Settings → Data inputs → HTTP Event Collector) or change {key}.token",
    2: "set {key}.token; the Authorization header did not reach Splunk (a proxy may strip it)",
    3: "check {key}.token and any proxy in between: Splunk needs exactly `Authorization: Splunk <token>`",
    4: "set {key}.token to a valid HEC token (Settings → Data inputs → HTTP Event Collector)",
    7: "add the index to the token's allowed indexes in Splunk, or change {key}.index",
    10: "the token requires indexer acknowledgement: set {key}.ack = true, or turn off useACK on the token",
    11: "set {key}.channel to a GUID, or remove it",
    14: "the token has indexer acknowledgement off: set {key}.ack = false, or turn on useACK for the token",
    16: "use the Authorization header (the default), not ?token= in the endpoint",
}


@dataclass(frozen=True, slots=True)
class HecReply:
    """One HEC answer, parsed leniently: proxies in front of HEC answer with HTML too."""

    status: int
    text: str
    code: int | None = None
    ack_id: int | None = None
    invalid_event: int | None = None
    retry_after: float | None = None
    acks: dict[str, Any] | None = None

    @classmethod
    def parse(cls, status: int, body: bytes, retry_after: str | None = None, *, now: float | None = None) -> HecReply:
        payload: Any = None
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            snippet = body[:200].decode("utf-8", "replace").strip()
            text = f"non-HEC reply: {snippet!r}" if snippet else "empty reply"
            return cls(status, text, retry_after=parse_retry_after(retry_after, now))
        message = payload.get("text")
        acks = payload.get("acks")
        return cls(
            status=status,
            text=message if isinstance(message, str) else "",
            code=_int(payload.get("code")),
            ack_id=_int(payload.get("ackId")),
            invalid_event=_int(payload.get("invalid-event-number")),
            retry_after=parse_retry_after(retry_after, now),
            acks=acks if isinstance(acks, dict) else None,
        )

    def describe(self) -> str:
        """``Invalid token (HTTP 403, code 4)`` — Splunk's own words first, for log searches."""
        code = f", code {self.code}" if self.code is not None else ""
        return f"{self.text or 'no text'} (HTTP {self.status}{code})"


def classify(reply: HecReply, *, batch_size: int, key: str) -> Outcome:
    """The outcome of one event POST, from Splunk's status-code table.

    Docs: https://help.splunk.com/en/splunk-enterprise/get-data-in/collect-http-event-data/troubleshoot-http-event-collector
    (and ``shared/notes/splunk-hec.md`` §6). ``key`` names the output's settings (``outputs.splunk``)
    in hints.

    ====================================  ===========================================================
    2xx with code 0 (24, 25)              Delivered (with ack on, the caller then waits for the ack)
    2xx without a HEC code                Pause: something that is not HEC answered
    400 code 5/6/12/13/15 + event number  Reject that event; the others were not taken: resend them
    the same without an event number      Split (bisect) until the bad record is alone, then Reject
    401, 403; 400 code 7/10/11/14/16      Pause: token, index or channel configuration
    404, 405, 3xx                         Pause: wrong endpoint (a rolling-restart 404 waits a probe)
    413                                   Split: halve; a lone record is dead-lettered
    408, 429, 500, 502, 503, 504, 5xx     Retry, no sooner than Retry-After
    any other 4xx                         Pause, with Splunk's text
    ====================================  ===========================================================
    """
    status, code, what = reply.status, reply.code, reply.describe()
    if 200 <= status < 300:
        if code in _ACCEPTED:
            return Delivered()
        return Pause(
            f"the endpoint answered {what}, which is not a HEC reply: check that {key}.endpoint is Splunk's "
            "HEC (port 8088 by default) and not a proxy or web UI"
        )
    if status == 413:
        return Split(
            f"exceeds max request size: Splunk answered {what}; the batch is split, and a single record this "
            f"large is dead-lettered. Fix: lower {key}.max_request_bytes and max_event_bytes to the indexer's "
            "limit, or raise max_content_length in Splunk's server.conf [httpServer]"
        )
    if status in _TRANSIENT_STATUS or status >= 500:
        return Retry(f"Splunk HEC is unavailable or busy: {what}; retrying with backoff", after=reply.retry_after)
    if status == 400 and code in _EVENT_CODES:
        number = reply.invalid_event
        if number is not None and 0 <= number < batch_size:
            return Reject(f"Splunk refused the event: {what}; {_EVENT_HINT}", indices=(number,))
        if batch_size > 1:
            return Split(f"Splunk refused the batch without naming an event: {what}; bisecting to find it")
        return Reject(f"Splunk refused the event: {what}; {_EVENT_HINT}")
    if code in _CONFIG_HINTS and status in (400, 401, 403):
        return Pause(f"Splunk refused our configuration: {what}; fix: {_CONFIG_HINTS[code].format(key=key)}")
    if status in (401, 403):
        return Pause(f"Splunk refused the token: {what}; fix: check {key}.token and the token's state in Splunk")
    if status in (404, 405) or 300 <= status < 400:
        return Pause(
            f"wrong endpoint path: {what}; fix: {key}.endpoint must be the base URL of HEC (e.g. "
            "https://splunk.example.com:8088), with HEC enabled (Settings → Data inputs → HTTP Event Collector "
            "→ Global Settings). A 404 during an indexer rolling restart clears at the next probe"
        )
    return Pause(f"Splunk refused the request: {what}; fix the output's settings (see {DOCS})")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from ``Retry-After`` (delta-seconds or an HTTP-date), capped at ``MAX_RETRY_AFTER``."""
    if value is None:
        return None
    text = value.strip()
    seconds: float | None = None
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
