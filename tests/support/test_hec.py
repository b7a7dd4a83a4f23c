"""Checks that the HEC double answers like Splunk's documented HEC, so the Splunk output's tests can trust it.

Expected statuses and texts are written out from the notes' status-code table (§6) rather than read from
the module's own table, so a typo in either shows up here.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from .hec import (
    ACK_PATH,
    DEFAULT_TOKEN,
    EVENT_PATHS,
    HEC_CODES,
    RAW_PATH,
    AckPlan,
    HecReceiver,
    Reply,
    TokenSettings,
)

EVENT = "/services/collector/event"
HEALTH = "/services/collector/health"
TOKEN = DEFAULT_TOKEN
ACK_TOKEN = "aaaaaaaa-0000-0000-0000-000000000001"
DISABLED_TOKEN = "dddddddd-0000-0000-0000-000000000002"
QS_TOKEN = "cccccccc-0000-0000-0000-000000000003"
INDEX_TOKEN = "eeeeeeee-0000-0000-0000-000000000004"
UNKNOWN_TOKEN = "ffffffff-0000-0000-0000-000000000005"
CHANNEL = "0f3b2a9c-6a55-4a63-9b4e-1d2c3b4a5f60"
OTHER_CHANNEL = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f"

TOKENS = {
    TOKEN: TokenSettings(sourcetype="snyk:issue", name="snyk"),
    ACK_TOKEN: TokenSettings(use_ack=True),
    DISABLED_TOKEN: TokenSettings(disabled=True),
    QS_TOKEN: TokenSettings(allow_query_string_auth=True),
    INDEX_TOKEN: TokenSettings(indexes=["snyk"], index="snyk"),
}

ONE = b'{"event": {"id": "SNYK-1"}}'


@dataclass(frozen=True)
class Pki:
    cert_file: Path
    key_file: Path
    client_context: ssl.SSLContext


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("hec-pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    leaf.cert_chain_pems[0].write_to_path(cert_file)
    for extra in leaf.cert_chain_pems[1:]:
        extra.write_to_path(cert_file, append=True)
    leaf.private_key_pem.write_to_path(key_file)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return Pki(cert_file, key_file, context)


Factory = Callable[..., HecReceiver]


@pytest.fixture
def make_hec(pki: Pki) -> Iterator[Factory]:
    started: list[HecReceiver] = []

    def make(**kwargs: Any) -> HecReceiver:
        kwargs.setdefault("tokens", TOKENS)
        if kwargs.get("tls", True):
            kwargs.setdefault("cert_file", pki.cert_file)
            kwargs.setdefault("key_file", pki.key_file)
        receiver = HecReceiver(**kwargs)
        started.append(receiver)
        return receiver.start()

    yield make
    for receiver in started:
        receiver.stop()
        assert receiver.errors == []


@pytest.fixture
def hec(make_hec: Factory) -> HecReceiver:
    return make_hec()


@pytest.fixture
def client(hec: HecReceiver, pki: Pki) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hec.url, verify=pki.client_context, timeout=5.0) as c:
        yield c


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Splunk {token}"}


def post(
    c: httpx.Client,
    body: bytes = ONE,
    path: str = EVENT,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    all_headers = (auth(token) if token is not None else {}) | (headers or {})
    return c.post(path, content=body, headers=all_headers, params=params)


def channel_headers(channel: str = CHANNEL) -> dict[str, str]:
    return {"X-Splunk-Request-Channel": channel}


def poll(c: httpx.Client, ids: list[int], channel: str = CHANNEL, token: str = ACK_TOKEN) -> dict[str, bool]:
    resp = post(c, json.dumps({"acks": ids}).encode(), ACK_PATH, token, channel_headers(channel))
    assert resp.status_code == 200, resp.text
    acks: dict[str, bool] = resp.json()["acks"]
    return acks


def plain_request(port: int, request: bytes, timeout: float = 2.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(request)
    return sock


def http_bytes(body: bytes = ONE, path: str = EVENT, extra: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Splunk {TOKEN}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


# ------------------------------------------------------------------------------------------ status table


Send = Callable[[HecReceiver, httpx.Client], httpx.Response]


def _health(token: str | None = None) -> Send:
    return lambda h, c: c.get(HEALTH, headers=auth(token) if token else {})


def _scripted(code: int) -> Send:
    def send(h: HecReceiver, c: httpx.Client) -> httpx.Response:
        h.script(lambda request: Reply(code=code), times=1)
        return post(c)

    return send


def _unhealthy(code: int) -> Send:
    def send(h: HecReceiver, c: httpx.Client) -> httpx.Response:
        h.set_health(code)
        return c.get(HEALTH)

    return send


# (code, HTTP status, text) exactly as in the notes' §6, and a request that must produce it.
STATUS_TABLE: list[tuple[int, int, str, Send]] = [
    (0, 200, "Success", lambda h, c: post(c)),
    (1, 403, "Token disabled", lambda h, c: post(c, token=DISABLED_TOKEN)),
    (2, 401, "Token is required", lambda h, c: post(c, token=None)),
    (3, 401, "Invalid authorization", lambda h, c: post(c, token=None, headers={"Authorization": "Bearer x"})),
    (4, 403, "Invalid token", lambda h, c: post(c, token=UNKNOWN_TOKEN)),
    (5, 400, "No data", lambda h, c: post(c, b"")),
    (6, 400, "Invalid data format", lambda h, c: post(c, b'{"event": "x"')),
    (7, 400, "Incorrect index", lambda h, c: post(c, b'{"event": "x", "index": "main"}', token=INDEX_TOKEN)),
    (8, 500, "Internal server error", _scripted(8)),
    (9, 503, "Server is busy", _scripted(9)),
    (10, 400, "Data channel is missing", lambda h, c: post(c, token=ACK_TOKEN)),
    (11, 400, "Invalid data channel", lambda h, c: post(c, token=ACK_TOKEN, headers=channel_headers("chan-1"))),
    (12, 400, "Event field is required", lambda h, c: post(c, b'{"host": "a"}')),
    (13, 400, "Event field cannot be blank", lambda h, c: post(c, b'{"event": "  "}')),
    (14, 400, "ACK is disabled", lambda h, c: post(c, b'{"acks": [0]}', ACK_PATH, TOKEN, channel_headers())),
    (15, 400, "Error in handling indexed fields", lambda h, c: post(c, b'{"event": "x", "fields": {"a": {"b": 1}}}')),
    (16, 400, "Query string authorization is not enabled", lambda h, c: post(c, token=None, params={"token": TOKEN})),
    (17, 200, "HEC is healthy", _health()),
    (18, 503, "HEC is unhealthy, queues are full", _unhealthy(18)),
    (19, 503, "HEC is unhealthy, ack service unavailable", _unhealthy(19)),
    (20, 503, "HEC is unhealthy, queues are full, ack service unavailable", _unhealthy(20)),
    (21, 400, "Invalid token", _health(UNKNOWN_TOKEN)),
    (22, 400, "Token disabled", _health(DISABLED_TOKEN)),
    (23, 503, "Server is shutting down", _scripted(23)),
    (24, 200, "HEC queue approaching capacity", _scripted(24)),
    (25, 200, "ACK approaching capacity", _scripted(25)),
    (26, 429, "HEC queue at capacity", _scripted(26)),
    (27, 429, "ACK channel at capacity", _scripted(27)),
]


@pytest.mark.parametrize(
    ("code", "status", "text", "send"), STATUS_TABLE, ids=[f"code{row[0]}" for row in STATUS_TABLE]
)
def test_status_code_table(
    hec: HecReceiver, client: httpx.Client, code: int, status: int, text: str, send: Send
) -> None:
    resp = send(hec, client)
    assert resp.status_code == status
    body = resp.json()
    assert (body["code"], body["text"]) == (code, text)
    assert resp.headers["content-type"].startswith("application/json")
    assert HEC_CODES[code] == (status, text)
    assert hec.codes[code] == 1
    assert hec.requests[-1].status == status


def test_table_covers_every_documented_code() -> None:
    assert sorted(HEC_CODES) == list(range(28))
    assert sorted(row[0] for row in STATUS_TABLE) == list(range(28))


# ------------------------------------------------------------------------------------------ authentication


@pytest.mark.parametrize(
    "header",
    ["Bearer x", TOKEN, "Splunk", f"splunk {TOKEN}", "Basic !!!not-base64", "Basic bm9jb2xvbg=="],
    ids=["bearer", "bare-token", "no-token", "lowercase-scheme", "bad-base64", "basic-no-colon"],
)
def test_malformed_authorization_is_code_3(client: httpx.Client, hec: HecReceiver, header: str) -> None:
    resp = post(client, token=None, headers={"Authorization": header})
    assert (resp.status_code, resp.json()["code"]) == (401, 3)
    assert hec.events == []


def test_basic_auth_takes_the_token_as_password(client: httpx.Client, hec: HecReceiver) -> None:
    ok = client.post(EVENT, content=ONE, auth=("any-user", TOKEN))
    bad = client.post(EVENT, content=ONE, auth=("any-user", UNKNOWN_TOKEN))
    assert (ok.status_code, ok.json()["code"]) == (200, 0)
    assert (bad.status_code, bad.json()["code"]) == (403, 4)
    assert len(hec.events) == 1


def test_query_string_token_when_allowed_and_it_wins_over_the_header(client: httpx.Client, hec: HecReceiver) -> None:
    allowed = post(client, token=None, params={"token": QS_TOKEN}, headers={"Authorization": "Bearer junk"})
    unknown = post(client, params={"token": UNKNOWN_TOKEN})
    assert (allowed.status_code, allowed.json()["code"]) == (200, 0)
    assert (unknown.status_code, unknown.json()["code"]) == (403, 4)
    assert [event.token for event in hec.indexed] == [QS_TOKEN]


def test_token_disabled_at_run_time(client: httpx.Client, hec: HecReceiver) -> None:
    assert post(client).status_code == 200
    hec.set_token(TOKEN, TokenSettings(disabled=True))
    resp = post(client)
    assert (resp.status_code, resp.json()["code"]) == (403, 1)


# ------------------------------------------------------------------------------------------ paths and methods


@pytest.mark.parametrize("path", EVENT_PATHS)
def test_every_event_path_indexes(client: httpx.Client, hec: HecReceiver, path: str) -> None:
    resp = post(client, path=path)
    assert resp.json() == {"text": "Success", "code": 0}
    assert hec.events == [{"event": {"id": "SNYK-1"}}]


@pytest.mark.parametrize("path", ["/", "/services/collector/events", "/services/collector/event/", "/services/x"])
def test_unknown_paths_are_404_with_json(client: httpx.Client, path: str) -> None:
    resp = post(client, path=path)
    assert resp.status_code == 404
    assert resp.json() == {"text": "The requested URL was not found on this server.", "code": 404}


def test_wrong_methods_are_405(client: httpx.Client) -> None:
    get_event = client.get(EVENT, headers=auth())
    post_health = client.post(HEALTH, content=b"")
    assert (get_event.status_code, get_event.headers["allow"], get_event.json()["code"]) == (405, "POST", 405)
    assert (post_health.status_code, post_health.headers["allow"]) == (405, "GET")


def test_health_1_0_and_token_via_query(client: httpx.Client, hec: HecReceiver) -> None:
    assert client.get("/services/collector/health/1.0").json() == {"text": "HEC is healthy", "code": 17}
    assert client.get(HEALTH, params={"token": DISABLED_TOKEN}).json()["code"] == 22
    assert client.get(HEALTH, headers={"Authorization": "Bearer x"}).json()["code"] == 21
    hec.set_health(17)
    assert client.get(HEALTH, headers=auth()).status_code == 200
    with pytest.raises(ValueError, match="health code"):
        hec.set_health(9)


# ------------------------------------------------------------------------------------------ body parsing


def test_concatenated_objects_with_any_json_whitespace(client: httpx.Client, hec: HecReceiver) -> None:
    body = b' \n{"event": "a"}{"event": "b"}\r\n\t{"event": {"c": [1, 2]}, "time": 1433188255.5}  \n\n'
    resp = post(client, body)
    assert resp.json() == {"text": "Success", "code": 0}
    assert hec.events == [{"event": "a"}, {"event": "b"}, {"event": {"c": [1, 2]}, "time": 1433188255.5}]
    assert hec.requests[-1].events == hec.events


BAD_BATCHES = [
    (b'[{"event": "a"}]', 6, 0),
    (b'{"event": "a"}[{"event": "b"}]', 6, 1),
    (b'{"event": "a"}{"event": "b"}5', 6, 2),
    (b'{"event": "a"},{"event": "b"}', 6, 1),
    (b'{"event": "a"}{"event": "b"', 6, 1),
    (b'{"event": "a"}{"event": NaN}', 6, 1),
    (b'"just a string"', 6, 0),
    (b'{"event": "a"}{"event": "\xff\xfe"}', 6, 1),
    (b'{"event": "a"}{"event": "b", "time": "yesterday"}', 6, 1),
    (b'{"event": "a"}{"event": "b", "time": true}', 6, 1),
    (b'{"event": "a"}{"event": "b", "host": 5}', 6, 1),
    (b'{"event": "a"}{"event": "b"}{"x": 1}', 12, 2),
    (b'{"event": "a"}{"event": null}', 13, 1),
    (b'{"event": ""}', 13, 0),
    (b'{"event": "a"}{"event": "\\n\\t "}', 13, 1),
    (b'{"event": {}}', 13, 0),
    (b'{"event": "a", "fields": {"k": 1}}', 15, 0),
    (b'{"event": "a"}{"event": "b", "fields": {"k": ["x", 2]}}', 15, 1),
    (b'{"event": "a", "fields": ["k"]}', 15, 0),
    (b'{"event": "a", "index": "snyk"}{"event": "b", "index": "main"}', 7, 1),
    (b'{"event": "a"}{"event": ' + b"[" * 100_000, 6, 1),
]


@pytest.mark.parametrize(("body", "code", "number"), BAD_BATCHES)
def test_invalid_event_number_and_nothing_indexed(
    client: httpx.Client, hec: HecReceiver, body: bytes, code: int, number: int
) -> None:
    resp = post(client, body, token=INDEX_TOKEN)
    assert resp.status_code == 400
    assert resp.json() == {"text": HEC_CODES[code][1], "code": code, "invalid-event-number": number}
    assert hec.events == []


def test_index_before_invalid_option_keeps_the_good_prefix(make_hec: Factory, pki: Pki) -> None:
    hec = make_hec(index_before_invalid=True)
    with httpx.Client(base_url=hec.url, verify=pki.client_context) as c:
        resp = post(c, b'{"event": "a"}{"event": "b"}{"event": ""}{"event": "d"}')
    assert resp.json() == {"text": "Event field cannot be blank", "code": 13, "invalid-event-number": 2}
    assert hec.events == [{"event": "a"}, {"event": "b"}]
    assert [event.ack_id for event in hec.indexed] == [None, None]


def test_accepted_values_and_effective_metadata(client: httpx.Client, hec: HecReceiver) -> None:
    body = (
        b'{"event": 42}{"event": true, "time": "1433188255.500"}'
        b'{"event": "x", "time": 1433188255, "fields": {"a": "b", "c": ["d", "e"]}, "sourcetype": "st",'
        b' "source": "src", "host": "h1", "index": "idx"}'
    )
    assert post(client, body).json()["code"] == 0
    first, second, third = hec.indexed
    assert (first.sourcetype, first.source, first.host, first.index, first.time) == (
        "snyk:issue",
        "http:snyk",
        "127.0.0.1",
        "main",
        None,
    )
    assert second.time == 1433188255.5
    assert (third.sourcetype, third.source, third.host, third.index, third.time) == (
        "st",
        "src",
        "h1",
        "idx",
        1433188255,
    )
    assert third.raw.startswith('{"event": "x"')


def test_numeric_string_time_can_be_refused(make_hec: Factory, pki: Pki) -> None:
    hec = make_hec(accept_numeric_string_time=False)
    with httpx.Client(base_url=hec.url, verify=pki.client_context) as c:
        resp = post(c, b'{"event": "a", "time": 1}{"event": "b", "time": "1433188255"}')
    assert resp.json() == {"text": "Invalid data format", "code": 6, "invalid-event-number": 1}


def test_oversize_event_is_code_6_with_its_number(make_hec: Factory, pki: Pki) -> None:
    hec = make_hec(max_event_size=100)
    big = json.dumps({"event": "x" * 100}).encode()
    with httpx.Client(base_url=hec.url, verify=pki.client_context) as c:
        resp = post(c, b'{"event": "a"}{"event": "b"}' + big)
        small = post(c, json.dumps({"event": "x" * 80}).encode())
    assert resp.json() == {"text": "Invalid data format", "code": 6, "invalid-event-number": 2}
    assert small.json()["code"] == 0
    assert len(hec.events) == 1


# ------------------------------------------------------------------------------------------ encoding and sizes


def test_gzip_body_single_and_multi_member(client: httpx.Client, hec: HecReceiver) -> None:
    plain = b'{"event": "a"}\n{"event": "b"}'
    packed = gzip.compress(plain)
    resp = post(client, packed, headers={"Content-Encoding": "gzip"})
    multi = post(
        client,
        gzip.compress(b'{"event": "c"}') + gzip.compress(b'{"event": "d"}'),
        headers={"Content-Encoding": "gzip"},
    )
    assert resp.json()["code"] == 0 and multi.json()["code"] == 0
    assert hec.events == [{"event": "a"}, {"event": "b"}, {"event": "c"}, {"event": "d"}]
    recorded = hec.requests[0]
    assert (recorded.raw_size, recorded.body) == (len(packed), plain)


@pytest.mark.parametrize(
    ("encoding", "body"),
    [("gzip", b"not gzip at all"), ("gzip", gzip.compress(ONE)[:-6]), ("br", ONE)],
    ids=["garbage", "truncated", "unsupported"],
)
def test_undecodable_bodies_are_code_6_without_event_number(
    client: httpx.Client, hec: HecReceiver, encoding: str, body: bytes
) -> None:
    resp = post(client, body, headers={"Content-Encoding": encoding})
    assert resp.status_code == 400
    assert resp.json() == {"text": "Invalid data format", "code": 6}
    assert hec.events == []


def test_request_over_max_content_length_is_413_and_the_connection_survives(make_hec: Factory, pki: Pki) -> None:
    hec = make_hec(max_content_length=1000)
    body = b"".join(json.dumps({"event": f"e{i}" * 10}).encode() for i in range(40))
    assert len(body) > 1000
    with httpx.Client(base_url=hec.url, verify=pki.client_context) as c:
        too_big = post(c, body)
        after = post(c)
    assert too_big.status_code == 413
    assert too_big.json() == {"text": f"Content-Length of {len(body)} too large (maximum is 1000)", "code": 413}
    assert after.json()["code"] == 0
    first, second = hec.requests
    assert first.connection == second.connection
    assert hec.events == [{"event": {"id": "SNYK-1"}}]


def test_max_content_length_counts_compressed_bytes(make_hec: Factory, pki: Pki) -> None:
    hec = make_hec(max_content_length=1000)
    plain = b"".join(b'{"event": "the same finding again"}\n' for _ in range(500))
    packed = gzip.compress(plain)
    assert len(packed) < 1000 < len(plain)
    with httpx.Client(base_url=hec.url, verify=pki.client_context) as c:
        resp = post(c, packed, headers={"Content-Encoding": "gzip"})
    assert resp.json()["code"] == 0
    assert len(hec.events) == 500


def test_decompressed_size_is_guarded(make_hec: Factory, pki: Pki) -> None:
    hec = make_hec(max_decompressed_size=10_000)
    packed = gzip.compress(b'{"event": "' + b"A" * 50_000 + b'"}')
    with httpx.Client(base_url=hec.url, verify=pki.client_context) as c:
        resp = post(c, packed, headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 413
    assert resp.json()["code"] == 413
    assert hec.events == []


def test_chunked_request_body(make_hec: Factory) -> None:
    hec = make_hec(tls=False, max_content_length=200)
    conn = http.client.HTTPConnection("127.0.0.1", hec.port, timeout=5)
    try:
        conn.request("POST", EVENT, body=iter([b'{"event": "a"}', b'{"event": "b"}']), headers=auth())
        first = conn.getresponse()
        first_body = json.loads(first.read())
        conn.request("POST", EVENT, body=iter([b'{"event": "' + b"x" * 150, b'"}' * 50]), headers=auth())
        second = conn.getresponse()
        second_body = json.loads(second.read())
    finally:
        conn.close()
    assert (first.status, first_body["code"]) == (200, 0)
    assert (second.status, second_body["code"]) == (413, 413)
    assert hec.events == [{"event": "a"}, {"event": "b"}]


# ------------------------------------------------------------------------------------------ channels and acks


def test_ack_ids_count_per_channel_and_are_forgotten_after_true(client: httpx.Client, hec: HecReceiver) -> None:
    ids = [post(client, token=ACK_TOKEN, headers=channel_headers()).json()["ackId"] for _ in range(3)]
    other = post(client, token=ACK_TOKEN, params={"channel": OTHER_CHANNEL}).json()
    assert ids == [0, 1, 2]
    assert other == {"text": "Success", "code": 0, "ackId": 0}
    assert hec.acked_events == []
    assert poll(client, [0, 1, 2, 7]) == {"0": True, "1": True, "2": True, "7": False}
    assert poll(client, [0, 1, 2]) == {"0": False, "1": False, "2": False}
    assert poll(client, [0], OTHER_CHANNEL) == {"0": True}
    assert len(hec.acked_events) == 4 == len(hec.events)
    assert hec.pending_acks() == {}


def test_ack_after_polls_keeps_ids_false_for_n_polls(make_hec: Factory, pki: Pki) -> None:
    hec = make_hec(ack_after_polls=2)
    with httpx.Client(base_url=hec.url, verify=pki.client_context) as c:
        post(c, token=ACK_TOKEN, headers=channel_headers())
        answers = [poll(c, [0])["0"] for _ in range(4)]
    assert answers == [False, False, True, False]


def test_scripted_slow_and_lost_acks_separate_belief_from_holding(client: httpx.Client, hec: HecReceiver) -> None:
    hec.delay_ack(0, polls=1)
    hec.lose_ack(1)
    hec.lose_ack(2, indexed=False, channel=CHANNEL)
    for name in ("zero", "one", "two"):
        post(client, json.dumps({"event": name}).encode(), token=ACK_TOKEN, headers=channel_headers())
    assert poll(client, [0, 1, 2]) == {"0": False, "1": False, "2": False}
    assert poll(client, [0, 1, 2]) == {"0": True, "1": False, "2": False}
    for _ in range(5):
        assert poll(client, [1, 2]) == {"1": False, "2": False}
    assert hec.events == [{"event": "zero"}, {"event": "one"}]
    assert hec.acked_events == [{"event": "zero"}]
    assert hec.lost_ack_events == [{"event": "one"}]
    assert hec.dropped_events == [{"event": "two"}]
    assert hec.pending_acks() == {CHANNEL: [1, 2]}


def test_ack_plans_are_validated() -> None:
    with pytest.raises(ValueError, match="lost=True"):
        AckPlan(indexed=False)
    with pytest.raises(ValueError, match="false_polls"):
        AckPlan(false_polls=-1)


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({}, b'{"acks": [0]}', 400, 10),
        (channel_headers("not-a-guid"), b'{"acks": [0]}', 400, 11),
        (channel_headers(), b"[0]", 400, 6),
        (channel_headers(), b'{"acks": [-1]}', 400, 6),
        (channel_headers(), b'{"acks": ["0"]}', 400, 6),
        (channel_headers(), b"", 400, 5),
    ],
    ids=["no-channel", "bad-channel", "array", "negative", "string-id", "empty"],
)
def test_ack_query_errors(client: httpx.Client, headers: dict[str, str], body: bytes, status: int, code: int) -> None:
    resp = post(client, body, ACK_PATH, ACK_TOKEN, headers)
    assert (resp.status_code, resp.json()["code"]) == (status, code)


def test_ack_ids_belong_to_their_token_and_channel(client: httpx.Client, hec: HecReceiver) -> None:
    hec.set_token(TOKEN, TokenSettings(use_ack=True))
    assert post(client, token=ACK_TOKEN, headers=channel_headers()).json()["ackId"] == 0
    assert poll(client, [0], token=TOKEN) == {"0": False}
    assert poll(client, [0], channel=OTHER_CHANNEL) == {"0": False}
    assert poll(client, [0]) == {"0": True}


def test_channel_is_validated_even_without_ack(client: httpx.Client, hec: HecReceiver) -> None:
    good = post(client, headers=channel_headers())
    bad = post(client, headers=channel_headers("1234"))
    assert (good.json(), bad.json()["code"]) == ({"text": "Success", "code": 0}, 11)
    assert hec.requests[0].channel == CHANNEL


@pytest.mark.parametrize("how", ["restart", "stop-start"])
def test_restart_forgets_pending_acks(client: httpx.Client, hec: HecReceiver, how: str) -> None:
    hec.delay_ack(0, polls=100)
    post(client, token=ACK_TOKEN, headers=channel_headers())
    if how == "restart":
        hec.restart()
    else:
        hec.stop()
        hec.start()
    assert poll(client, [0]) == {"0": False}
    assert hec.lost_ack_events == [{"event": {"id": "SNYK-1"}}]
    assert post(client, token=ACK_TOKEN, headers=channel_headers()).json()["ackId"] == 0
    assert poll(client, [0]) == {"0": True}
    assert len(hec.events) == 2


def test_restart_can_keep_pending_acks(client: httpx.Client, hec: HecReceiver) -> None:
    hec.delay_ack(0, polls=1)
    post(client, token=ACK_TOKEN, headers=channel_headers())
    assert poll(client, [0]) == {"0": False}
    hec.restart(reset_acks=False)
    assert poll(client, [0]) == {"0": True}
    assert hec.lost_ack_events == []


# ------------------------------------------------------------------------------------------ raw endpoint


def test_raw_endpoint_one_line_per_event(client: httpx.Client, hec: HecReceiver) -> None:
    params = {"channel": CHANNEL, "sourcetype": "snyk:raw", "host": "h"}
    resp = post(client, b"line one\r\n\nline two\n", RAW_PATH, params=params)
    no_channel = post(client, b"x", RAW_PATH)
    bad_index = post(client, b"x", RAW_PATH, INDEX_TOKEN, params={"channel": CHANNEL, "index": "main"})
    assert resp.json() == {"text": "Success", "code": 0}
    assert hec.events == [
        {"event": "line one", "host": "h", "sourcetype": "snyk:raw"},
        {"event": "line two", "host": "h", "sourcetype": "snyk:raw"},
    ]
    assert [event.endpoint for event in hec.indexed] == ["raw", "raw"]
    assert (no_channel.json()["code"], bad_index.json()["code"]) == (10, 7)


def test_raw_channel_requirement_can_be_relaxed(make_hec: Factory, pki: Pki) -> None:
    hec = make_hec(raw_requires_channel=False)
    with httpx.Client(base_url=hec.url, verify=pki.client_context) as c:
        assert post(c, b"x", RAW_PATH).json()["code"] == 0
        assert post(c, b"\n\n", RAW_PATH).json()["code"] == 5


# ------------------------------------------------------------------------------------------ connections


def test_keep_alive_reuses_one_connection(client: httpx.Client, hec: HecReceiver) -> None:
    for _ in range(3):
        assert post(client).status_code == 200
    assert len({request.connection for request in hec.requests}) == 1


def test_connection_close_is_honoured(client: httpx.Client, hec: HecReceiver) -> None:
    closing = post(client, headers={"Connection": "close"})
    after = post(client)
    assert closing.headers["connection"] == "close"
    assert after.status_code == 200
    first, second = hec.requests
    assert first.connection != second.connection


def test_pipelined_keep_alive_on_a_raw_socket(make_hec: Factory) -> None:
    hec = make_hec(tls=False)
    with plain_request(hec.port, http_bytes() + http_bytes(b'{"event": "2"}', extra="Connection: close\r\n")) as sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert len(hec.events) == 2
    assert len({request.connection for request in hec.requests}) == 1


def test_stop_refuses_connections_and_restart_returns_on_the_same_port(hec: HecReceiver, pki: Pki) -> None:
    port, url = hec.port, hec.url
    with httpx.Client(base_url=url, verify=pki.client_context, timeout=2) as c:
        assert post(c).status_code == 200
        hec.stop()
        assert not hec.is_running
        with pytest.raises(httpx.ConnectError):
            post(c)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        hec.restart()
        assert (hec.port, hec.url, hec.is_running) == (port, url, True)
        assert post(c).status_code == 200
    assert len(hec.events) == 2
    assert hec.starts == 2


def test_stop_closes_live_keep_alive_connections(make_hec: Factory) -> None:
    hec = make_hec(tls=False)
    conn = http.client.HTTPConnection("127.0.0.1", hec.port, timeout=2)
    try:
        conn.request("POST", EVENT, body=ONE, headers=auth())
        assert conn.getresponse().read() == b'{"text":"Success","code":0}'
        assert conn.sock is not None
        started = time.monotonic()
        hec.stop()
        assert conn.sock.recv(1) == b""  # the idle keep-alive connection was closed by the outage
    finally:
        conn.close()
    assert time.monotonic() - started < 2


def test_plain_http_mode_and_tls_requirement(make_hec: Factory) -> None:
    hec = make_hec(tls=False)
    assert hec.url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=hec.url) as c:
        assert post(c).json()["code"] == 0
    with pytest.raises(ValueError, match="cert_file"):
        HecReceiver()


def test_asyncio_client(hec: HecReceiver, pki: Pki) -> None:
    async def send_all() -> list[int]:
        async with httpx.AsyncClient(base_url=hec.url, verify=pki.client_context) as c:
            responses = await asyncio.gather(*(c.post(EVENT, content=ONE, headers=auth()) for _ in range(5)))
            return [resp.status_code for resp in responses]

    assert asyncio.run(send_all()) == [200] * 5
    assert len(hec.events) == 5


# ------------------------------------------------------------------------------------------ fault injection


def test_busy_then_success(client: httpx.Client, hec: HecReceiver) -> None:
    hec.busy(2)
    answers = [post(client) for _ in range(3)]
    assert [(resp.status_code, resp.json()["code"]) for resp in answers] == [(503, 9), (503, 9), (200, 0)]
    assert answers[0].json()["text"] == "Server is busy"
    assert len(hec.events) == 1
    assert [request.scripted for request in hec.requests] == [True, True, False]


@pytest.mark.parametrize(
    ("status", "code", "headers", "body_code"),
    [
        (429, None, {"Retry-After": "5"}, 429),
        (500, 8, {}, 8),
        (408, None, {}, 408),
        (502, None, {}, 502),
        (504, None, {}, 504),
        (413, None, {}, 413),
    ],
)
def test_fail_next_replies(
    client: httpx.Client, hec: HecReceiver, status: int, code: int | None, headers: dict[str, str], body_code: int
) -> None:
    hec.fail_next(status, code, headers=headers)
    failed = post(client)
    assert (failed.status_code, failed.json()["code"]) == (status, body_code)
    for name, value in headers.items():
        assert failed.headers[name] == value
    assert post(client).status_code == 200
    assert len(hec.events) == 1


def test_scripted_faults_hit_ingest_paths_only_by_default(client: httpx.Client, hec: HecReceiver) -> None:
    hec.busy()
    assert client.get(HEALTH).status_code == 200
    assert post(client).status_code == 503


def test_script_by_predicate(client: httpx.Client, hec: HecReceiver) -> None:
    def reject_big_batches(request: Any) -> Reply | None:
        return Reply(code=9) if request.events is not None and len(request.events) > 1 else None

    hec.script(reject_big_batches)
    assert post(client, b'{"event": 1}{"event": 2}').status_code == 503
    assert post(client, b'{"event": 1}').status_code == 200
    assert post(client, b'{"event": 1}{"event": 2}').status_code == 503
    hec.clear_scripts()
    assert post(client, b'{"event": 1}{"event": 2}').status_code == 200


def test_poison_rejects_the_matching_event(client: httpx.Client, hec: HecReceiver) -> None:
    hec.poison("SNYK-JS-EVIL", times=1)
    batch = b'{"event": "ok"}{"event": {"id": "SNYK-JS-EVIL-1"}}{"event": "ok too"}'
    first = post(client, batch)
    second = post(client, batch)
    assert first.json() == {"text": "Invalid data format", "code": 6, "invalid-event-number": 1}
    assert second.json()["code"] == 0
    assert len(hec.events) == 3


def test_reset_sends_rst_without_a_reply(make_hec: Factory) -> None:
    hec = make_hec(tls=False)
    hec.reset_next()
    with plain_request(hec.port, http_bytes()) as sock, pytest.raises(ConnectionResetError):
        sock.recv(65536)
    assert [request.outcome for request in hec.requests] == ["reset"]
    assert hec.events == []


def test_reset_over_tls_is_a_client_error(client: httpx.Client, hec: HecReceiver) -> None:
    hec.reset_next()
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        post(client)
    assert post(client).status_code == 200


def test_close_sends_fin_without_a_reply(make_hec: Factory) -> None:
    hec = make_hec(tls=False)
    hec.close_next()
    with plain_request(hec.port, http_bytes()) as sock:
        assert sock.recv(65536) == b""
    assert [request.outcome for request in hec.requests] == ["close"]


def test_slow_reply(client: httpx.Client, hec: HecReceiver, pki: Pki) -> None:
    hec.delay_next(0.3)
    started = time.monotonic()
    assert post(client).status_code == 200
    assert time.monotonic() - started >= 0.3
    hec.delay_next(1.0, then=Reply(code=9))
    impatient = httpx.Client(base_url=hec.url, verify=pki.client_context, timeout=0.2)
    with impatient, pytest.raises(httpx.ReadTimeout):
        post(impatient)
    assert len(hec.events) == 1


def test_hang_until_the_client_gives_up_and_stop_is_prompt(hec: HecReceiver, pki: Pki) -> None:
    hec.hang_next()
    with httpx.Client(base_url=hec.url, verify=pki.client_context, timeout=0.2) as c, pytest.raises(httpx.ReadTimeout):
        post(c)
    hec.wait_for_requests(1, timeout=2)
    assert hec.requests[0].outcome == "hang"
    started = time.monotonic()
    hec.stop()
    assert time.monotonic() - started < 1.5


def test_a_raising_script_is_reported_and_answered_as_code_8(pki: Pki) -> None:
    def broken(request: Any) -> Reply | None:
        raise KeyError("bug in a test script")

    with HecReceiver(TOKENS, cert_file=pki.cert_file, key_file=pki.key_file) as hec:
        hec.script(broken)
        with httpx.Client(base_url=hec.url, verify=pki.client_context) as c:
            resp = post(c)
    assert (resp.status_code, resp.json()["code"]) == (500, 8)
    assert [type(error) for error in hec.errors] == [KeyError]
    assert hec.events == []


def test_reply_needs_a_code_or_status() -> None:
    with pytest.raises(ValueError, match="code, a status"):
        Reply()
    with pytest.raises(ValueError, match="no known HTTP status"):
        Reply(code=99)
    assert Reply(code=99, status=418).payload() == {"text": "I'm a Teapot", "code": 99}


# ------------------------------------------------------------------------------------------ observability


def test_requests_are_recorded_in_full(client: httpx.Client, hec: HecReceiver) -> None:
    packed = gzip.compress(ONE)
    post(client, packed, headers={"Content-Encoding": "gzip", "X-Trace": "t1"}, params={"channel": CHANNEL})
    post(client, b"{oops")
    first, second = hec.requests
    assert (first.method, first.path, first.target) == ("POST", EVENT, f"{EVENT}?channel={CHANNEL}")
    assert first.query == {"channel": [CHANNEL]}
    assert first.header("x-trace") == "t1"
    assert first.header_values("AUTHORIZATION") == [f"Splunk {TOKEN}"]
    assert (first.raw_size, first.body, first.events) == (len(packed), ONE, [{"event": {"id": "SNYK-1"}}])
    assert (first.status, first.reply, first.token, first.channel) == (
        200,
        {"text": "Success", "code": 0},
        TOKEN,
        CHANNEL,
    )
    assert (second.events, second.code, second.outcome) == (None, 6, "reply")
    assert second.seq > first.seq and second.time >= first.time
    assert hec.codes == {0: 1, 6: 1}
    assert hec.statuses == {200: 1, 400: 1}


def test_wait_for_events_is_bounded_and_wakes_up(client: httpx.Client, hec: HecReceiver) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="0 of 1"):
        hec.wait_for_events(1, timeout=0.1)
    assert time.monotonic() - started < 1
    sender = threading.Timer(0.05, lambda: post(client, b'{"event": 1}{"event": 2}'))
    sender.start()
    try:
        assert hec.wait_for_events(2, timeout=5) == [{"event": 1}, {"event": 2}]
    finally:
        sender.join()


def test_concurrent_senders_are_all_recorded(hec: HecReceiver, pki: Pki) -> None:
    def send(i: int) -> int:
        with httpx.Client(base_url=hec.url, verify=pki.client_context) as c:
            return post(c, json.dumps({"event": i}).encode()).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(send, range(16)))
    assert statuses == [200] * 16
    assert sorted(event["event"] for event in hec.events) == list(range(16))
    assert len(hec.requests) == 16
