"""A Splunk HTTP Event Collector (HEC) test double that behaves like Splunk's documented HEC, faults included.

Why a double at all: Splunk cannot be installed in CI, yet the forwarder's Splunk output is only correct if a
real HEC would accept what it sends and if the sender reacts correctly to everything a real HEC answers
(status codes, ``invalid-event-number``, indexer acknowledgement, outages). So this receiver implements
the documented HEC contract as strictly as the documentation allows, and lets tests script the faults
that a real deployment produces only occasionally.

Sources (the project's notes, ``shared/notes/splunk-hec.md``, collect them with confidence tags):

* EP   https://help.splunk.com/en/splunk-enterprise/get-data-in/collect-http-event-data/http-event-collector-rest-api-endpoints
* FMT  https://help.splunk.com/splunk-enterprise/get-data-in/collect-http-event-data/format-events-for-http-event-collector
* TS   https://help.splunk.com/en/splunk-enterprise/get-data-in/collect-http-event-data/troubleshoot-http-event-collector
* ACK  help.splunk.com "About HTTP Event Collector Indexer Acknowledgment"; vectordotdev/vector
  rfcs/2021-10-29-9465-splunk-hec-indexer-acknowledgements.md
* SPEC splunk/vscode-extension-splunk spec_files/9.2/inputs.conf.spec ``[http]``, ``[http://name]``; server.conf.spec
* CODES gjanders/SplunkAdmins lookups/splunkadmins_hec_reply_code_lookup.csv (the status-code table, :data:`HEC_CODES`)
* A real Splunk reply and log line for an oversize event: https://github.com/signalfx/splunk-otel-collector-chart/issues/696
  (``{"text":"Invalid data format","code":6,"invalid-event-number":75}`` with ``events_processed=0``).
* splunk/splunk-connect-for-syslog docs show real ``{"text":"Incorrect index","code":7,"invalid-event-number":1}``.
* splunk/splunk-library-javalogging sends ``"time"`` as a JSON *string* of epoch digits.

What is modelled: the endpoints ``/services/collector``, ``/event``, ``/event/1.0``, ``/raw``, ``/ack``, ``/health``
and ``/health/1.0``; token auth (``Authorization: Splunk <token>``, Basic auth with the token as password,
``?token=`` only where allowed, query token taking precedence); per-token ``useACK``, index allow-list,
``disabled``, default sourcetype; concatenated-JSON batches; the per-event checks behind codes 6, 7, 12, 13
and 15; gzip request bodies; request and event size limits; channels and per-channel ack IDs with
forget-after-true; the health endpoint; HTTP/1.1 keep-alive, ``Connection: close``, ``Content-Length`` and
chunked bodies; TLS (default) or plain HTTP. Not modelled: search-time behaviour, line breaking beyond
"one line = one event" on ``/raw``, ``auto_extract_timestamp``, metrics events, ack-channel idle cleanup.

Choices where Splunk's documentation is silent ([U] in the notes). The rule was: be at least as strict as
Splunk could be, so a sender that passes here does not rely on leniency Splunk may not have.

* Partial failure: when event *k* of a batch is rejected, NONE of the batch is indexed by default (the
  sender must resend the others); ``index_before_invalid=True`` indexes events ``0..k-1`` instead (still
  without an ackId, because the reply is an error). The signalfx log line (``events_processed=0``) supports
  the default.
* ``invalid-event-number`` is sent with every per-event error (codes 6, 7, 12, 13, 15), as re-implementations
  and the SC4S docs show; request-level errors (bad gzip, unsupported encoding, bad ``/ack`` body) omit it.
* Sizes: ``max_content_length`` limits the bytes on the wire (compressed, like Splunk's
  ``[httpServer] max_content_length``) and answers 413. ``max_decompressed_size`` guards the decompressed
  body (413 too; Splunk's behaviour there is unknown). ``max_event_size`` is measured on the decompressed
  JSON text of the whole envelope object, which is at least the event's raw text Splunk measures, so it is
  never more lenient (code 6). Default ``max_content_length`` is 1,000,000 bytes, the smallest limit
  reported (Splunk Cloud, per one summary); Splunk Enterprise's default is far larger.
* A 413 body is ``{"text":"Content-Length of N too large (maximum is M)","code":413}``; 404 is
  ``{"text":"The requested URL was not found on this server.","code":404}``; a wrong method is 405 with
  ``Allow``. Non-HEC HTTP errors carry the HTTP status as ``code``.
* ``time``: numbers (not booleans, not negative, finite) are accepted; strings of epoch digits
  (``"1433188255.500"``) are accepted because Splunk's own Java library sends them
  (``accept_numeric_string_time=False`` rejects them); any other value is code 6.
* ``host``, ``source``, ``sourcetype`` and ``index`` must be strings if present (code 6).
* ``event`` that is ``null``, ``""``, whitespace-only, ``{}`` or ``[]`` is blank (code 13). Numbers, booleans,
  non-empty strings and non-empty objects are accepted.
* ``fields`` must be an object of string -> string | list of strings (code 15); numbers are refused too.
* ``NaN``/``Infinity`` literals and invalid UTF-8 are code 6 for the event containing them.
* A whitespace-only body is "No data" (code 5), like an empty one.
* Auth schemes are matched case-sensitively (``Splunk``, ``Basic``); only the first ``Authorization`` header
  counts. A query token is looked up first: unknown -> 403 code 4, known but without
  ``allow_query_string_auth`` -> 400 code 16, disabled -> 403 code 1.
* Check order: scripted actions (once the body is read) -> 413 -> path (404) -> method (405) -> auth ->
  channel -> body. A request over ``max_content_length`` is still read and dropped (up to 64 MiB), so the
  client can read the 413 and keep the connection; beyond that the 413 closes it.
* Channels: header ``X-Splunk-Request-Channel`` wins over ``?channel=``; any channel present is validated as a
  GUID (code 11) even when ack is off. ``/raw`` requires a channel even without ack (the FMT page says the
  channel header is for raw events); ``raw_requires_channel=False`` relaxes it. Ack IDs are counted per
  (token, channel) pair, and an ``/ack`` query only sees IDs issued to the same token and channel.
* ``/ack``: the token's ``useACK`` is checked first (code 14), then the channel (10/11), then the body
  ``{"acks":[non-negative ints]}`` (code 5 if empty, 6 otherwise). Unknown IDs answer ``false``.
* Ack timing: an ID becomes ``true`` on poll number ``ack_after_polls + 1`` (default: the first poll), unless
  :meth:`HecReceiver.plan_ack` scripted otherwise (a plan is used by the next batch given that ID, once).
  A restart (``restart()``, or ``start()`` after ``stop()``) forgets every channel, since Splunk keeps ack
  state in memory: pending IDs then answer ``false`` for ever, their batches count as lost-but-indexed, and
  counters start again at 0 (``reset_acks_on_restart=False`` keeps them).
* Health: a token, if supplied (header or query), is checked first: malformed or unknown -> 400 code 21,
  disabled -> 400 code 22; then 200 code 17 or the scripted 503 code 18/19/20. Only ``GET`` is allowed.
* Paths are matched exactly (no trailing slash), as documented.
* Unsupported ``Content-Encoding`` or corrupt gzip -> 400 code 6 without ``invalid-event-number``.
* ``/raw``: one non-blank line is one event; metadata comes from the query and ``?index=`` is checked for the
  whole request (code 7, no event number); a bad line (size, invalid UTF-8, poison) is code 6 with its number
  among the non-blank lines.
* Default host is the client address (``connection_host = ip``), default source ``http:<token name>``,
  default sourcetype the token's or ``httpevent``, default index the token's ``index`` or ``main``.

Threading: the server runs in background threads (one per connection), so sync and asyncio tests can both use
it; every accessor is thread-safe and returns a new list (the envelope dicts in it are shared: read only).
Do not call :meth:`HecReceiver.stop` from a script.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import http.server
import json
import math
import os
import re
import socket
import socketserver
import ssl
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeAlias, cast
from urllib.parse import parse_qs, urlsplit

from .ports import LOOPBACK

__all__ = [
    "ACK_PATH",
    "ALL_PATHS",
    "DEFAULT_MAX_CONTENT_LENGTH",
    "DEFAULT_MAX_DECOMPRESSED_SIZE",
    "DEFAULT_MAX_EVENT_SIZE",
    "DEFAULT_TOKEN",
    "EVENT_PATHS",
    "HEALTH_PATHS",
    "HEC_CODES",
    "INGEST_PATHS",
    "RAW_PATH",
    "AckPlan",
    "Action",
    "Close",
    "Delay",
    "Hang",
    "HecReceiver",
    "IndexedEvent",
    "RecordedRequest",
    "Reply",
    "Reset",
    "Script",
    "TokenSettings",
]

EVENT_PATHS: Final = ("/services/collector", "/services/collector/event", "/services/collector/event/1.0")
RAW_PATH: Final = "/services/collector/raw"
ACK_PATH: Final = "/services/collector/ack"
HEALTH_PATHS: Final = ("/services/collector/health", "/services/collector/health/1.0")
INGEST_PATHS: Final = (*EVENT_PATHS, RAW_PATH)
ALL_PATHS: Final = (*INGEST_PATHS, ACK_PATH, *HEALTH_PATHS)

DEFAULT_TOKEN: Final = "00000000-1111-2222-3333-444444444444"
DEFAULT_MAX_CONTENT_LENGTH: Final = 1_000_000
DEFAULT_MAX_DECOMPRESSED_SIZE: Final = 64 * 1024 * 1024
DEFAULT_MAX_EVENT_SIZE: Final = 5 * 1024 * 1024

# code -> (HTTP status, text), from the notes' §6 (CODES [S], agreeing with TS [P]); 23-27 are [U].
HEC_CODES: Final[Mapping[int, tuple[int, str]]] = {
    0: (200, "Success"),
    1: (403, "Token disabled"),
    2: (401, "Token is required"),
    3: (401, "Invalid authorization"),
    4: (403, "Invalid token"),
    5: (400, "No data"),
    6: (400, "Invalid data format"),
    7: (400, "Incorrect index"),
    8: (500, "Internal server error"),
    9: (503, "Server is busy"),
    10: (400, "Data channel is missing"),
    11: (400, "Invalid data channel"),
    12: (400, "Event field is required"),
    13: (400, "Event field cannot be blank"),
    14: (400, "ACK is disabled"),
    15: (400, "Error in handling indexed fields"),
    16: (400, "Query string authorization is not enabled"),
    17: (200, "HEC is healthy"),
    18: (503, "HEC is unhealthy, queues are full"),
    19: (503, "HEC is unhealthy, ack service unavailable"),
    20: (503, "HEC is unhealthy, queues are full, ack service unavailable"),
    21: (400, "Invalid token"),
    22: (400, "Token disabled"),
    23: (503, "Server is shutting down"),
    24: (200, "HEC queue approaching capacity"),
    25: (200, "ACK approaching capacity"),
    26: (429, "HEC queue at capacity"),
    27: (429, "ACK channel at capacity"),
}
_HEALTH_CODES: Final = frozenset({17, 18, 19, 20})
_PER_EVENT_CODES: Final = frozenset({6, 7, 12, 13, 15})

_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_EPOCH_STRING = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_JSON_WS = re.compile(r"[ \t\n\r]*")
_NOT_FOUND_TEXT: Final = "The requested URL was not found on this server."

# A body over the limit is still read (and dropped) up to this size, so the client can read the 413 instead
# of having its upload reset by a close with unread data; bigger bodies get the 413 and a closed connection.
_DRAIN_LIMIT: Final = 64 * 1024 * 1024
_READ_CHUNK: Final = 64 * 1024
_BIND_ATTEMPTS: Final = 50
_BIND_DELAY: Final = 0.05
_JOIN_TIMEOUT: Final = 5.0
_POLL_INTERVAL: Final = 0.02
_HANDSHAKE_TIMEOUT: Final = 5.0
_MAX_HANG: Final = 60.0  # a hang that nobody ends still ends, so a broken test cannot block for ever


def _json_bytes(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity, which are not JSON: Splunk's parser is assumed to refuse them.
    raise ValueError(f"{name} is not valid JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


# --------------------------------------------------------------------------------------------- value types


@dataclass(frozen=True)
class TokenSettings:
    """One HEC token's configuration, mirroring ``inputs.conf [http://name]`` (SPEC).

    ``indexes`` is the allow-list (None = any index). ``index`` is the default index used when an event
    names none; it is not checked against the allow-list (Splunk's UI forces it into the list anyway).
    """

    use_ack: bool = False
    indexes: Collection[str] | None = None
    index: str = "main"
    disabled: bool = False
    allow_query_string_auth: bool = False
    sourcetype: str | None = None
    name: str = "snyk-forwarder-test"

    def __post_init__(self) -> None:
        if self.indexes is not None:
            if isinstance(self.indexes, str):
                raise TypeError("indexes must be a collection of index names, not a string")
            object.__setattr__(self, "indexes", frozenset(self.indexes))


@dataclass(frozen=True)
class AckPlan:
    """How one ackId behaves when polled: scripted so tests can exercise a sender's resend logic.

    ``false_polls`` polls answer false before it turns true; ``lost`` means it never turns true. A lost
    batch is still indexed when ``indexed`` (Splunk holds it, the sender will resend: a duplicate), or
    dropped when not (Splunk never held it).
    """

    false_polls: int = 0
    lost: bool = False
    indexed: bool = True

    def __post_init__(self) -> None:
        if self.false_polls < 0:
            raise ValueError(f"false_polls must be >= 0, not {self.false_polls}")
        if not self.lost and not self.indexed:
            raise ValueError("an ack that turns true must belong to indexed events (indexed=False needs lost=True)")


@dataclass(frozen=True)
class Reply:
    """A scripted reply. ``code`` alone takes status and text from :data:`HEC_CODES`; ``status`` alone
    (a proxy-style 502, 413, 408...) puts the status in the body's ``code`` and its reason in ``text``.
    """

    code: int | None = None
    status: int | None = None
    text: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    close: bool = False

    def __post_init__(self) -> None:
        if self.code is None and self.status is None:
            raise ValueError("a Reply needs a code, a status or both")
        if self.status is None and self.code not in HEC_CODES:
            raise ValueError(f"HEC code {self.code} has no known HTTP status: pass status= as well")

    @property
    def http_status(self) -> int:
        if self.status is not None:
            return self.status
        assert self.code is not None  # guarded in __post_init__
        return HEC_CODES[self.code][0]

    def payload(self) -> dict[str, Any]:
        code = self.code if self.code is not None else self.http_status
        if self.text is not None:
            text = self.text
        elif code in HEC_CODES:
            text = HEC_CODES[code][1]
        else:
            text = _reason(self.http_status)
        return {"text": text, "code": code, **self.extra}


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` (a slow server), then send ``then`` or, if None, answer normally."""

    seconds: float
    then: Reply | None = None


@dataclass(frozen=True)
class Reset:
    """Reset the connection (TCP RST) after reading the request, without a reply."""


@dataclass(frozen=True)
class Hang:
    """Read the request, then never answer: close after ``seconds`` (None: when the receiver stops)."""

    seconds: float | None = None


@dataclass(frozen=True)
class Close:
    """Close the connection cleanly (FIN) after reading the request, without a reply."""


Action: TypeAlias = Reply | Delay | Reset | Hang | Close
Outcome = Literal["reply", "reset", "hang", "close", "incomplete"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received, and what the receiver did about it. Scripts see it before ``status`` is set.

    ``raw_size`` counts body bytes on the wire; ``body`` is after gzip decoding (empty when the body was too
    large or could not be decoded). ``events`` are the parsed objects of a well-formed ``/event`` batch, or
    the synthesized envelopes of a ``/raw`` body, else None. ``connection`` identifies the TCP connection,
    so tests can see keep-alive reuse.
    """

    seq: int
    time: float
    connection: int
    method: str
    target: str
    path: str
    query: Mapping[str, list[str]]
    headers: tuple[tuple[str, str], ...]
    raw_size: int
    body: bytes
    events: list[dict[str, Any]] | None
    status: int | None = None
    reply: dict[str, Any] | None = None
    reply_headers: Mapping[str, str] = field(default_factory=dict)
    outcome: Outcome = "reply"
    scripted: bool = False
    token: str | None = None
    channel: str | None = None
    ack_id: int | None = None

    def header(self, name: str) -> str | None:
        """First value of a request header, case-insensitively (HTTP header names are)."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    @property
    def code(self) -> int | None:
        """The HEC ``code`` of the reply, if it had one (``/ack`` replies do not)."""
        if self.reply is None:
            return None
        code = self.reply.get("code")
        return code if isinstance(code, int) else None


@dataclass(frozen=True)
class IndexedEvent:
    """An event the receiver indexed, with the metadata Splunk would have given it."""

    envelope: dict[str, Any]
    raw: str
    endpoint: Literal["event", "raw"]
    token: str
    channel: str | None
    ack_id: int | None
    request_seq: int
    index: str
    sourcetype: str
    source: str
    host: str
    time: float | None


Script: TypeAlias = Callable[[RecordedRequest], Action | None]


# --------------------------------------------------------------------------------------------- internals


@dataclass
class _Batch:
    token: str
    channel: str
    ack_id: int
    plan: AckPlan
    events: list[IndexedEvent]
    state: Literal["pending", "acked", "lost"] = "pending"
    polls: int = 0


@dataclass
class _Channel:
    next_id: int = 0
    pending: dict[int, _Batch] = field(default_factory=dict)


@dataclass
class _ScriptEntry:
    fn: Script
    remaining: int | None


@dataclass
class _Poison:
    substring: str
    remaining: int | None


@dataclass
class _Conn:
    ident: int
    sock: socket.socket
    thread: threading.Thread | None = None
    reset: bool = False


@dataclass(frozen=True)
class _Result:
    status: int
    payload: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    token: str | None = None
    channel: str | None = None
    ack_id: int | None = None


@dataclass(frozen=True)
class _Body:
    raw: bytes = b""
    size: int = 0
    error: Reply | None = None
    incomplete: bool = False


class _TooLarge(Exception):
    pass


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _hec(code: int, **extra: Any) -> _Result:
    status, text = HEC_CODES[code]
    return _Result(status, {"text": text, "code": code, **extra})


def _http_error(status: int, text: str, headers: Mapping[str, str] | None = None) -> _Result:
    return _Result(status, {"text": text, "code": status}, dict(headers or {}))


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress (possibly multi-member) gzip without ever holding more than ``limit + 1`` bytes of output."""
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        pending = rest
        for _ in range(1 + len(rest)):  # each round consumes input or stops: bounded by the input size
            out += inflater.decompress(pending, limit + 1 - len(out))
            if len(out) > limit:
                raise _TooLarge
            pending = inflater.unconsumed_tail
            if not pending:
                break
        if not inflater.eof:
            raise ValueError("truncated gzip stream")
        rest = inflater.unused_data
    return bytes(out)


def _split_batch(text: str) -> tuple[list[tuple[str, Any]], int | None]:
    """Split concatenated JSON values; returns (span, value) pairs and the number of the first bad one."""
    items: list[tuple[str, Any]] = []
    pos = 0
    end = len(text)
    while True:
        match = _JSON_WS.match(text, pos)
        pos = match.end() if match else pos
        if pos >= end:
            return items, None
        try:
            value, stop = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError):  # JSONDecodeError, NaN/Infinity, absurd nesting
            return items, len(items)
        items.append((text[pos:stop], value))
        pos = stop


def _has_surrogates(text: str) -> bool:
    # Invalid UTF-8 bytes survive decoding with surrogateescape as lone surrogates U+DC80..U+DCFF.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, dict | list) and not value


def _valid_fields(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    for item in value.values():
        if isinstance(item, str):
            continue
        if isinstance(item, list) and all(isinstance(part, str) for part in item):
            continue
        return False
    return True


def _parse_authorization(value: str) -> str | None:
    """The token in an ``Authorization`` header, or None when the header is malformed (code 3)."""
    scheme, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    if scheme == "Splunk":
        return rest or None
    if scheme == "Basic":
        try:
            decoded = base64.b64decode(rest, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


# --------------------------------------------------------------------------------------------- HTTP layer


class _Server(http.server.HTTPServer):
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], receiver: HecReceiver) -> None:
        self.receiver = receiver
        # The handler class given here is never used: process_request builds a _Handler with its connection.
        super().__init__(address, http.server.BaseHTTPRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on hosts without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        conn = self.receiver._register(cast(socket.socket, request))
        thread = threading.Thread(
            target=self._serve_connection, args=(conn, client_address), name=f"hec-conn-{conn.ident}", daemon=True
        )
        conn.thread = thread
        thread.start()

    def _serve_connection(self, conn: _Conn, client_address: Any) -> None:
        receiver = self.receiver
        try:
            if receiver._ssl_context is not None:
                conn.sock.settimeout(_HANDSHAKE_TIMEOUT)
                wrapped = receiver._ssl_context.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
                if not receiver._adopt(conn, wrapped):
                    return
                wrapped.do_handshake()
            _Handler(conn.sock, client_address, self, conn)
        except (OSError, ValueError) as exc:  # resets, TLS failures, sockets closed by stop()
            receiver._note_connection_error(exc)
        except Exception as exc:  # a bug in the double: keep it for the test to see, never kill the thread noisily
            receiver._note_error(exc)
        finally:
            self._close_connection(conn)
            receiver._unregister(conn)

    @staticmethod
    def _close_connection(conn: _Conn) -> None:
        sock = conn.sock
        if not conn.reset:
            with contextlib.suppress(OSError, ValueError):
                socket.socket.shutdown(sock, socket.SHUT_WR)
        with contextlib.suppress(OSError, ValueError):
            sock.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Splunkd"
    sys_version = ""
    # Headers and body go out in two writes: with Nagle on, the second waits for the client's delayed ACK
    # (~40 ms per request on Linux), which would make every keep-alive exchange look slow.
    disable_nagle_algorithm = True

    def __init__(self, request: socket.socket, client_address: Any, server: _Server, conn: _Conn) -> None:
        self.conn = conn
        self.receiver = server.receiver
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.receiver.keepalive_timeout)

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: test output should show assertions, not access logs."""

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_OPTIONS(self) -> None:
        self._serve()

    # ----------------------------------------------------------------- request body

    def _read_body(self) -> _Body:
        limit = self.receiver.max_content_length
        encodings = self.headers.get_all("Transfer-Encoding") or []
        if encodings:
            if [enc.strip().lower() for enc in encodings] != ["chunked"]:
                self.close_connection = True
                return _Body(error=Reply(status=501, text="Transfer-Encoding not supported", close=True))
            return self._read_chunked(limit)
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return _Body()  # RFC 9112 §6.3: no length and no chunking means no body
        if len(set(lengths)) != 1 or not lengths[0].strip().isdigit():
            self.close_connection = True
            return _Body(error=Reply(status=400, text="Invalid Content-Length", close=True))
        length = int(lengths[0])
        if length > limit:
            return self._refuse_large(length, limit)
        data = self.rfile.read(length)
        if len(data) < length:
            return _Body(raw=data, size=len(data), incomplete=True)
        return _Body(raw=data, size=length)

    def _refuse_large(self, length: int, limit: int) -> _Body:
        error = Reply(status=413, text=f"Content-Length of {length} too large (maximum is {limit})")
        if length > _DRAIN_LIMIT:
            self.close_connection = True
            return _Body(size=length, error=replace(error, close=True))
        left = length
        while left:
            chunk = self.rfile.read(min(left, _READ_CHUNK))
            if not chunk:
                return _Body(size=length - left, incomplete=True)
            left -= len(chunk)
        return _Body(size=length, error=error)

    def _read_chunked(self, limit: int) -> _Body:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            if not line.endswith(b"\n"):
                return _Body(size=total, incomplete=True)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                return _Body(size=total, error=Reply(status=400, text="Invalid chunked encoding", close=True))
            if size == 0:
                for _ in range(100):  # trailer section, bounded
                    trailer = self.rfile.readline(8192)
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                return _Body(raw=b"".join(parts), size=total)
            if total + size > limit:
                self.close_connection = True
                text = f"Content-Length of {total + size} too large (maximum is {limit})"
                return _Body(size=total, error=Reply(status=413, text=text, close=True))
            data = self.rfile.read(size)
            if len(data) < size:
                return _Body(size=total + len(data), incomplete=True)
            parts.append(data)
            total += size
            self.rfile.readline(8)  # the CRLF after the chunk data

    # ----------------------------------------------------------------- request handling

    def _serve(self) -> None:
        receiver = self.receiver
        arrival = time.monotonic()
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        headers = tuple((str(key), str(value)) for key, value in self.headers.items())
        body = self._read_body()
        decoded, decode_error = b"", None
        if body.error is None and not body.incomplete:
            decoded, decode_error = receiver._decode(body.raw, self.headers.get("Content-Encoding"))
        request = RecordedRequest(
            seq=receiver._next_seq(),
            time=arrival,
            connection=self.conn.ident,
            method=self.command,
            target=self.path,
            path=split.path,
            query=query,
            headers=headers,
            raw_size=body.size,
            body=decoded,
            events=receiver._preview(split.path, query, decoded) if decode_error is None else None,
        )
        if body.incomplete:
            self.close_connection = True
            receiver._record(replace(request, outcome="incomplete"))
            return
        try:
            action = receiver._next_action(request)
        except Exception as exc:  # a script that raises is a test bug: keep it, answer like a failing Splunk
            receiver._note_error(exc)
            action = Reply(code=8)
        scripted = action is not None
        if isinstance(action, Delay):
            if receiver._stopping.wait(max(0.0, action.seconds)):
                self.close_connection = True
                receiver._record(replace(request, outcome="close", scripted=True))
                return
            action = action.then
        if isinstance(action, Reset):
            self._reset(request)
            return
        if isinstance(action, Hang | Close):
            self.close_connection = True
            receiver._record(replace(request, outcome="hang" if isinstance(action, Hang) else "close", scripted=True))
            if isinstance(action, Hang):
                receiver._stopping.wait(min(_MAX_HANG, action.seconds if action.seconds is not None else _MAX_HANG))
            return
        if isinstance(action, Reply):
            result = _Result(action.http_status, action.payload(), dict(action.headers))
            close = action.close
        elif body.error is not None:
            result = _Result(body.error.http_status, body.error.payload(), dict(body.error.headers))
            close = body.error.close
        else:
            close = False
            try:
                result = receiver._process(request, decoded, decode_error, str(self.client_address[0]))
            except Exception as exc:  # a bug in the double: surfaced through ``errors`` and a 500 code 8
                receiver._note_error(exc)
                result = _hec(8)
        receiver._record(
            replace(
                request,
                status=result.status,
                reply=result.payload,
                reply_headers=result.headers,
                scripted=scripted,
                token=result.token,
                channel=result.channel,
                ack_id=result.ack_id,
            )
        )
        self._send(result, close=close)

    def _send(self, result: _Result, *, close: bool) -> None:
        body = _json_bytes(result.payload)
        self.send_response(result.status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Vary", "Authorization")
        for name, value in result.headers.items():
            self.send_header(name, value)
        if close or self.close_connection:
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self, request: RecordedRequest) -> None:
        self.close_connection = True
        self.conn.reset = True
        with contextlib.suppress(OSError):
            # Linger on, timeout 0: close() then sends RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.receiver._record(replace(request, outcome="reset", scripted=True))


# --------------------------------------------------------------------------------------------- the receiver


class HecReceiver:
    """A Splunk HEC for tests; see the module docstring for what is modelled and every undocumented choice.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. :meth:`stop` is an outage (listening
    socket and live connections closed); :meth:`start` after it, or :meth:`restart`, comes back on the same
    port so a sender's retry logic can be tested end to end.
    """

    def __init__(
        self,
        tokens: Mapping[str, TokenSettings] | None = None,
        *,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        tls: bool = True,
        host: str = LOOPBACK,
        max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH,
        max_decompressed_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        index_before_invalid: bool = False,
        accept_numeric_string_time: bool = True,
        raw_requires_channel: bool = True,
        ack_after_polls: int = 0,
        reset_acks_on_restart: bool = True,
        keepalive_timeout: float = 60.0,
    ) -> None:
        """Prepare (but do not start) the receiver.

        ``tokens`` defaults to ``{DEFAULT_TOKEN: TokenSettings()}``. TLS is on by default because Splunk's
        ``enableSSL`` is; it needs PEM ``cert_file``/``key_file`` (e.g. from trustme). ``tls=False`` serves
        plain HTTP.
        """
        if tls and not (cert_file and key_file):
            raise ValueError("TLS needs cert_file and key_file (PEM paths); pass tls=False for plain HTTP")
        for name, value in (
            ("max_content_length", max_content_length),
            ("max_decompressed_size", max_decompressed_size),
            ("max_event_size", max_event_size),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        if ack_after_polls < 0:
            raise ValueError(f"ack_after_polls must be >= 0, not {ack_after_polls}")
        self._ssl_context: ssl.SSLContext | None = None
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(os.fspath(cast(str, cert_file)), os.fspath(cast(str, key_file)))
            self._ssl_context = context
        self.host = host
        self.max_content_length = max_content_length
        self.max_decompressed_size = max_decompressed_size
        self.max_event_size = max_event_size
        self.index_before_invalid = index_before_invalid
        self.accept_numeric_string_time = accept_numeric_string_time
        self.raw_requires_channel = raw_requires_channel
        self.ack_after_polls = ack_after_polls
        self.reset_acks_on_restart = reset_acks_on_restart
        self.keepalive_timeout = keepalive_timeout

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._tokens: dict[str, TokenSettings] = (
            dict(tokens) if tokens is not None else {DEFAULT_TOKEN: TokenSettings()}
        )
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._port: int | None = None
        self._conns: dict[int, _Conn] = {}
        self._conn_counter = 0
        self._seq = 0
        self._requests: list[RecordedRequest] = []
        self._indexed: list[IndexedEvent] = []
        self._dropped: list[IndexedEvent] = []
        self._batches: list[_Batch] = []
        self._channels: dict[tuple[str, str], _Channel] = {}
        self._ack_plans: dict[tuple[str | None, int], AckPlan] = {}
        self._scripts: list[_ScriptEntry] = []
        self._poisons: list[_Poison] = []
        self._health_code = 17
        self._codes: Counter[int] = Counter()
        self._statuses: Counter[int] = Counter()
        self._errors: list[BaseException] = []
        self.starts = 0

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Listen: on a port chosen by the kernel the first time, on the same port after :meth:`stop`.

        Coming back after :meth:`stop` is a Splunk restart, so ack channels are forgotten unless
        ``reset_acks_on_restart`` is False.
        """
        return self._start(forget_acks=self.reset_acks_on_restart)

    def _start(self, *, forget_acks: bool) -> Self:
        if self._server is not None:
            raise RuntimeError("the receiver is already running")
        if self.starts and forget_acks:
            self.forget_ack_channels()
        self._stopping.clear()
        server = self._bind(self._port or 0)
        self._server = server
        self._port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": _POLL_INTERVAL}, name="hec-serve", daemon=True
        )
        self._serve_thread = thread
        thread.start()
        self.starts += 1
        return self

    def _bind(self, port: int) -> _Server:
        # Re-binding the previous port can briefly fail while the old socket is torn down; anything else is real.
        last: OSError | None = None
        for _ in range(_BIND_ATTEMPTS if port else 1):
            try:
                return _Server((self.host, port), self)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                last = exc
                time.sleep(_BIND_DELAY)
        raise RuntimeError(f"could not bind {self.host}:{port} after {_BIND_ATTEMPTS} attempts") from last

    def stop(self) -> None:
        """An outage: stop accepting (clients get connection refused) and close every live connection."""
        server = self._server
        if server is None:
            return
        self._stopping.set()  # wakes delayed and hanging handlers
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns.values())
        for conn in conns:
            with contextlib.suppress(OSError, ValueError):
                # The base-class call works on the fd even for an SSLSocket, without touching its SSL state.
                socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for conn in conns:
            if conn.thread is not None:
                conn.thread.join(max(0.0, deadline - time.monotonic()))
        if self._serve_thread is not None:
            self._serve_thread.join(max(0.0, deadline - time.monotonic()))
        self._server = None
        self._serve_thread = None

    def restart(self, *, reset_acks: bool | None = None) -> None:
        """Stop and start again on the same port; by default forget ack channels as a restarted Splunk would."""
        if self._port is None:
            raise RuntimeError("restart() needs a receiver that was started before")
        self.stop()
        self._start(forget_acks=self.reset_acks_on_restart if reset_acks is None else reset_acks)

    @property
    def is_running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the receiver has not been started")
        return self._port

    @property
    def scheme(self) -> str:
        return "https" if self._ssl_context is not None else "http"

    @property
    def url(self) -> str:
        """Base URL, e.g. ``https://127.0.0.1:41234``; append a path such as ``/services/collector/event``."""
        return f"{self.scheme}://{self.host}:{self.port}"

    # ----------------------------------------------------------------- configuration at run time

    def set_token(self, token: str, settings: TokenSettings | None = None) -> None:
        """Add or change a token while running (e.g. disable it mid-test); None removes it."""
        with self._lock:
            if settings is None:
                self._tokens.pop(token, None)
            else:
                self._tokens[token] = settings

    @property
    def tokens(self) -> dict[str, TokenSettings]:
        with self._lock:
            return dict(self._tokens)

    def set_health(self, code: int) -> None:
        """Make ``/health`` answer 17 (healthy) or 18/19/20 (503, unhealthy)."""
        if code not in _HEALTH_CODES:
            raise ValueError(f"health code must be one of {sorted(_HEALTH_CODES)}, not {code}")
        with self._lock:
            self._health_code = code

    # ----------------------------------------------------------------- fault injection

    def script(self, fn: Script, *, times: int | None = None) -> None:
        """Add a rule consulted, in order of addition, for every request before normal handling.

        ``fn`` returns an action or None (not this request). A rule is removed once it acted ``times`` times.
        Rules run under the receiver's (re-entrant) lock so ``times`` is exact under concurrency: keep them quick.
        A rule that raises is recorded in :attr:`errors` and the request gets 500 code 8.
        """
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None, not {times}")
        with self._lock:
            self._scripts.append(_ScriptEntry(fn, times))

    def clear_scripts(self) -> None:
        with self._lock:
            self._scripts.clear()
            self._poisons.clear()

    def _on_paths(self, action: Action, times: int | None, paths: Collection[str] | None) -> None:
        allowed = None if paths is None else frozenset(paths)

        def rule(request: RecordedRequest) -> Action | None:
            return action if allowed is None or request.path in allowed else None

        self.script(rule, times=times)

    def fail_next(
        self,
        status: int | None = None,
        code: int | None = None,
        times: int | None = 1,
        *,
        text: str | None = None,
        headers: Mapping[str, str] | None = None,
        paths: Collection[str] | None = INGEST_PATHS,
    ) -> None:
        """Answer the next ``times`` ingest requests (``paths``; None = any) with this status/code instead."""
        self._on_paths(Reply(code=code, status=status, text=text, headers=dict(headers or {})), times, paths)

    def busy(self, times: int | None = 1, *, paths: Collection[str] | None = INGEST_PATHS) -> None:
        """503 code 9 "Server is busy": full indexer queues, which Splunk says is normal now and then."""
        self.fail_next(code=9, times=times, paths=paths)

    def delay_next(
        self,
        seconds: float,
        times: int | None = 1,
        *,
        then: Reply | None = None,
        paths: Collection[str] | None = INGEST_PATHS,
    ) -> None:
        """A slow server: wait before answering (normally, or with ``then``)."""
        self._on_paths(Delay(seconds, then), times, paths)

    def reset_next(self, times: int | None = 1, *, paths: Collection[str] | None = INGEST_PATHS) -> None:
        self._on_paths(Reset(), times, paths)

    def close_next(self, times: int | None = 1, *, paths: Collection[str] | None = INGEST_PATHS) -> None:
        self._on_paths(Close(), times, paths)

    def hang_next(
        self, times: int | None = 1, *, seconds: float | None = None, paths: Collection[str] | None = INGEST_PATHS
    ) -> None:
        """Accept the request and never answer, so the sender's timeout fires."""
        self._on_paths(Hang(seconds), times, paths)

    def poison(self, substring: str, *, times: int | None = None) -> None:
        """Reject any event whose JSON text contains ``substring`` as Splunk rejects a malformed one (code 6
        with its ``invalid-event-number``), ``times`` times (None: always)."""
        if not substring:
            raise ValueError("an empty substring would poison every event")
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None, not {times}")
        with self._lock:
            self._poisons.append(_Poison(substring, times))

    def plan_ack(self, ack_id: int, plan: AckPlan, *, channel: str | None = None) -> None:
        """Script how ``ack_id`` (on ``channel``, or on any channel) behaves; set it before the ID is issued.

        A plan applies once, to the next batch given that ID (a channel-specific plan wins over a general one).
        """
        with self._lock:
            self._ack_plans[(channel, ack_id)] = plan

    def delay_ack(self, ack_id: int, polls: int, *, channel: str | None = None) -> None:
        self.plan_ack(ack_id, AckPlan(false_polls=polls), channel=channel)

    def lose_ack(self, ack_id: int, *, indexed: bool = True, channel: str | None = None) -> None:
        self.plan_ack(ack_id, AckPlan(lost=True, indexed=indexed), channel=channel)

    def forget_ack_channels(self) -> None:
        """Drop all channels, as a Splunk restart does: pending IDs become lost, counters restart at 0."""
        with self._lock:
            for channel in self._channels.values():
                for batch in channel.pending.values():
                    batch.state = "lost"
            self._channels.clear()

    # ----------------------------------------------------------------- observability

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def indexed(self) -> list[IndexedEvent]:
        """Everything Splunk holds, in indexing order, with effective metadata."""
        with self._lock:
            return list(self._indexed)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Envelopes of everything Splunk holds (indexed), in order. Treat them as read-only."""
        with self._lock:
            return [event.envelope for event in self._indexed]

    def _batch_events(self, state: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                event.envelope
                for batch in self._batches
                if batch.state == state and (state != "lost" or batch.plan.indexed)
                for event in batch.events
            ]

    @property
    def acked_events(self) -> list[dict[str, Any]]:
        """Events whose ackId was reported true: what the sender has been told is safe."""
        return self._batch_events("acked")

    @property
    def lost_ack_events(self) -> list[dict[str, Any]]:
        """Indexed events whose ack will never be true: Splunk holds them but the sender must assume loss."""
        return self._batch_events("lost")

    @property
    def dropped_events(self) -> list[dict[str, Any]]:
        """Events answered with an ackId but never indexed (a lost ack with ``indexed=False``)."""
        with self._lock:
            return [event.envelope for event in self._dropped]

    def pending_acks(self) -> dict[str, list[int]]:
        """Issued ack IDs not yet reported true, per channel (lost ones included: Splunk can't tell either)."""
        with self._lock:
            result: dict[str, list[int]] = {}
            for (_token, channel), state in self._channels.items():
                if state.pending:
                    result.setdefault(channel, []).extend(sorted(state.pending))
            return result

    @property
    def codes(self) -> Counter[int]:
        """How many replies carried each HEC ``code``."""
        with self._lock:
            return Counter(self._codes)

    @property
    def statuses(self) -> Counter[int]:
        with self._lock:
            return Counter(self._statuses)

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions inside the double (not client resets): a non-empty list is a bug here."""
        with self._lock:
            return list(self._errors)

    def wait_for_events(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least ``n`` events are indexed, or raise ``TimeoutError`` after ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._indexed) >= n, timeout):
                raise TimeoutError(f"{len(self._indexed)} of {n} events indexed after {timeout:.1f}s")
            return [event.envelope for event in self._indexed]

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests are recorded, or raise ``TimeoutError``."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"{len(self._requests)} of {n} requests recorded after {timeout:.1f}s")
            return list(self._requests)

    # ----------------------------------------------------------------- connection bookkeeping (server side)

    def _register(self, sock: socket.socket) -> _Conn:
        with self._lock:
            self._conn_counter += 1
            conn = _Conn(self._conn_counter, sock)
            self._conns[conn.ident] = conn
            return conn

    def _adopt(self, conn: _Conn, wrapped: socket.socket) -> bool:
        # Under the lock so stop() either sees the TLS socket or this thread sees the stop.
        with self._lock:
            conn.sock = wrapped
            return not self._stopping.is_set()

    def _unregister(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.pop(conn.ident, None)

    def _note_connection_error(self, exc: BaseException) -> None:
        """Client-side aborts and TLS failures are normal in fault tests: not errors of the double."""

    def _note_error(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _record(self, request: RecordedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            if request.status is not None:
                self._statuses[request.status] += 1
            if request.code is not None:
                self._codes[request.code] += 1
            self._changed.notify_all()

    def _next_action(self, request: RecordedRequest) -> Action | None:
        with self._lock:
            for entry in list(self._scripts):
                action = entry.fn(request)
                if action is None:
                    continue
                if entry.remaining is not None:
                    entry.remaining -= 1
                    if entry.remaining <= 0:
                        self._scripts.remove(entry)
                return action
        return None

    # ----------------------------------------------------------------- HEC semantics

    def _decode(self, raw: bytes, encoding: str | None) -> tuple[bytes, _Result | None]:
        name = (encoding or "").strip().lower()
        if name in ("", "identity"):
            return raw, None
        if name in ("gzip", "x-gzip"):
            try:
                return _gunzip(raw, self.max_decompressed_size), None
            except _TooLarge:
                text = f"Decompressed content too large (maximum is {self.max_decompressed_size})"
                return b"", _http_error(413, text)
            except (zlib.error, ValueError):
                return b"", _hec(6)
        return b"", _hec(6)

    def _preview(self, path: str, query: Mapping[str, list[str]], body: bytes) -> list[dict[str, Any]] | None:
        if path in EVENT_PATHS:
            items, error_at = _split_batch(body.decode("utf-8", "surrogateescape"))
            if error_at is not None or not all(isinstance(value, dict) for _span, value in items):
                return None
            return [cast(dict[str, Any], value) for _span, value in items]
        if path == RAW_PATH:
            return [self._raw_envelope(line, query) for line in self._raw_lines(body)]
        return None

    @staticmethod
    def _raw_lines(body: bytes) -> list[str]:
        text = body.decode("utf-8", "surrogateescape")
        return [line.rstrip("\r") for line in text.split("\n") if line.strip()]

    @staticmethod
    def _raw_envelope(line: str, query: Mapping[str, list[str]]) -> dict[str, Any]:
        envelope: dict[str, Any] = {"event": line}
        for key in ("host", "source", "sourcetype", "index"):
            if key in query:
                envelope[key] = query[key][0]
        return envelope

    def _process(
        self, request: RecordedRequest, body: bytes, decode_error: _Result | None, client_host: str
    ) -> _Result:
        path, method = request.path, request.method
        if path not in ALL_PATHS:
            return _http_error(404, _NOT_FOUND_TEXT)
        allowed = ("GET",) if path in HEALTH_PATHS else ("POST",)
        if method not in allowed:
            return _http_error(405, "Method Not Allowed", {"Allow": ", ".join(allowed)})
        if path in HEALTH_PATHS:
            return self._health(request)
        auth = self._authenticate(request)
        if isinstance(auth, _Result):
            return auth
        token, settings = auth
        channel, channel_ok = self._channel(request)
        result = self._route(request, body, decode_error, client_host, token, settings, channel, channel_ok)
        return replace(result, token=token, channel=channel if channel_ok else None)

    def _route(
        self,
        request: RecordedRequest,
        body: bytes,
        decode_error: _Result | None,
        client_host: str,
        token: str,
        settings: TokenSettings,
        channel: str | None,
        channel_ok: bool,
    ) -> _Result:
        if request.path == ACK_PATH and not settings.use_ack:
            return _hec(14)
        if not channel_ok:
            return _hec(11)
        needs_channel = settings.use_ack or request.path == ACK_PATH
        needs_channel = needs_channel or (request.path == RAW_PATH and self.raw_requires_channel)
        if channel is None and needs_channel:
            return _hec(10)
        if decode_error is not None:
            return decode_error
        if request.path == ACK_PATH:
            assert channel is not None
            return self._ack_query(token, channel, body)
        if request.path == RAW_PATH:
            return self._ingest_raw(request, body, client_host, token, settings, channel)
        return self._ingest_events(request, body, client_host, token, settings, channel)

    def _authenticate(self, request: RecordedRequest) -> tuple[str, TokenSettings] | _Result:
        tokens = self.tokens
        if "token" in request.query:
            token = request.query["token"][0]
            settings = tokens.get(token)
            if settings is None:
                return _hec(4)
            if not settings.allow_query_string_auth:
                return _hec(16)
            return _hec(1) if settings.disabled else (token, settings)
        header = request.header("Authorization")
        if header is None:
            return _hec(2)
        parsed = _parse_authorization(header)
        if parsed is None:
            return _hec(3)
        settings = tokens.get(parsed)
        if settings is None:
            return _hec(4)
        return _hec(1) if settings.disabled else (parsed, settings)

    @staticmethod
    def _channel(request: RecordedRequest) -> tuple[str | None, bool]:
        channel = request.header("X-Splunk-Request-Channel")
        if channel is None and "channel" in request.query:
            channel = request.query["channel"][0]
        if channel is None:
            return None, True
        return channel, bool(_GUID.fullmatch(channel))

    def _health(self, request: RecordedRequest) -> _Result:
        token: str | None = None
        supplied = False
        if "token" in request.query:
            token, supplied = request.query["token"][0], True
        elif (header := request.header("Authorization")) is not None:
            token, supplied = _parse_authorization(header), True
        if supplied:
            settings = self.tokens.get(token) if token else None
            if settings is None:
                return _hec(21)
            if settings.disabled:
                return _hec(22)
        with self._lock:
            return _hec(self._health_code)

    def _poisoned(self, text: str) -> bool:
        with self._lock:
            for poison in self._poisons:
                if poison.substring in text:
                    if poison.remaining is not None:
                        poison.remaining -= 1
                        if poison.remaining <= 0:
                            self._poisons.remove(poison)
                    return True
        return False

    def _valid_time(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if isinstance(value, int | float):
            return math.isfinite(value) and value >= 0
        return self.accept_numeric_string_time and isinstance(value, str) and bool(_EPOCH_STRING.fullmatch(value))

    def _check_text(self, text: str) -> int | None:
        if _has_surrogates(text):
            return 6
        if len(text.encode("utf-8", "surrogateescape")) > self.max_event_size:
            return 6
        return 6 if self._poisoned(text) else None

    def _check_event(self, span: str, value: Any, settings: TokenSettings) -> int | None:
        if not isinstance(value, dict):
            return 6
        if (code := self._check_text(span)) is not None:
            return code
        if "event" not in value:
            return 12
        if _blank(value["event"]):
            return 13
        if "time" in value and not self._valid_time(value["time"]):
            return 6
        if any(key in value and not isinstance(value[key], str) for key in ("host", "source", "sourcetype", "index")):
            return 6
        if "fields" in value and not _valid_fields(value["fields"]):
            return 15
        index = value.get("index")
        if index is not None and settings.indexes is not None and index not in settings.indexes:
            return 7
        return None

    def _make_event(
        self,
        envelope: dict[str, Any],
        raw: str,
        endpoint: Literal["event", "raw"],
        request: RecordedRequest,
        client_host: str,
        token: str,
        settings: TokenSettings,
        channel: str | None,
    ) -> IndexedEvent:
        when = envelope.get("time")
        return IndexedEvent(
            envelope=envelope,
            raw=raw,
            endpoint=endpoint,
            token=token,
            channel=channel,
            ack_id=None,
            request_seq=request.seq,
            index=envelope.get("index") or settings.index,
            sourcetype=envelope.get("sourcetype") or settings.sourcetype or "httpevent",
            source=envelope.get("source") or f"http:{settings.name}",
            host=envelope.get("host") or client_host,
            time=float(when) if when is not None else None,
        )

    def _ingest_events(
        self,
        request: RecordedRequest,
        body: bytes,
        client_host: str,
        token: str,
        settings: TokenSettings,
        channel: str | None,
    ) -> _Result:
        text = body.decode("utf-8", "surrogateescape")
        if not text.strip(" \t\r\n"):
            return _hec(5)
        items, error_at = _split_batch(text)
        accepted: list[IndexedEvent] = []
        failure: tuple[int, int] | None = None
        for number, (span, value) in enumerate(items):
            code = self._check_event(span, value, settings)
            if code is not None:
                failure = (code, number)
                break
            accepted.append(self._make_event(value, span, "event", request, client_host, token, settings, channel))
        else:
            if error_at is not None:
                failure = (6, error_at)
        return self._commit(accepted, failure, token, settings, channel)

    def _ingest_raw(
        self,
        request: RecordedRequest,
        body: bytes,
        client_host: str,
        token: str,
        settings: TokenSettings,
        channel: str | None,
    ) -> _Result:
        index = request.query.get("index", [None])[0]
        if index is not None and settings.indexes is not None and index not in settings.indexes:
            return _hec(7)
        lines = self._raw_lines(body)
        if not lines:
            return _hec(5)
        accepted: list[IndexedEvent] = []
        failure: tuple[int, int] | None = None
        for number, line in enumerate(lines):
            if (code := self._check_text(line)) is not None:
                failure = (code, number)
                break
            envelope = self._raw_envelope(line, request.query)
            accepted.append(self._make_event(envelope, line, "raw", request, client_host, token, settings, channel))
        return self._commit(accepted, failure, token, settings, channel)

    def _commit(
        self,
        accepted: list[IndexedEvent],
        failure: tuple[int, int] | None,
        token: str,
        settings: TokenSettings,
        channel: str | None,
    ) -> _Result:
        with self._changed:
            if failure is not None:
                code, number = failure
                if self.index_before_invalid and accepted:
                    self._indexed.extend(accepted)
                    self._changed.notify_all()
                return _hec(code, **{"invalid-event-number": number}) if code in _PER_EVENT_CODES else _hec(code)
            if not settings.use_ack:
                self._indexed.extend(accepted)
                self._changed.notify_all()
                return _hec(0)
            assert channel is not None  # _route demands a channel when ack is on
            state = self._channels.setdefault((token, channel), _Channel())
            ack_id = state.next_id
            state.next_id += 1
            # A plan is used once: after a restart the counter starts at 0 again and must not inherit it.
            plan = self._ack_plans.pop((channel, ack_id), None) or self._ack_plans.pop((None, ack_id), None)
            plan = plan or AckPlan(false_polls=self.ack_after_polls)
            events = [replace(event, ack_id=ack_id) for event in accepted]
            batch = _Batch(token, channel, ack_id, plan, events, state="lost" if plan.lost else "pending")
            state.pending[ack_id] = batch
            self._batches.append(batch)
            if plan.indexed:
                self._indexed.extend(events)
            else:
                self._dropped.extend(events)
            self._changed.notify_all()
            return replace(_hec(0, ackId=ack_id), ack_id=ack_id)

    def _ack_query(self, token: str, channel: str, body: bytes) -> _Result:
        if not body.strip():
            return _hec(5)
        try:
            query = _DECODER.decode(body.decode("utf-8"))
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return _hec(6)
        ids = query.get("acks") if isinstance(query, dict) else None
        if not isinstance(ids, list) or not all(
            isinstance(ack, int) and not isinstance(ack, bool) and ack >= 0 for ack in ids
        ):
            return _hec(6)
        answers: dict[str, bool] = {}
        with self._lock:
            state = self._channels.get((token, channel))
            for ack_id in ids:
                key = str(ack_id)
                if key not in answers:
                    answers[key] = self._poll(state, ack_id)
        return _Result(200, {"acks": answers})

    @staticmethod
    def _poll(state: _Channel | None, ack_id: int) -> bool:
        batch = state.pending.get(ack_id) if state is not None else None
        if batch is None or state is None:
            return False  # never issued, or already reported true once and forgotten
        batch.polls += 1
        if batch.state == "lost" or batch.polls <= batch.plan.false_polls:
            return False
        batch.state = "acked"
        del state.pending[ack_id]
        return True

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return f"<HecReceiver {where} running={self.is_running} requests={len(self._requests)}>"
