"""Checks that the Rapid7 test doubles accept, flag, break and recover the way ``rapid7.py`` documents.

The line receiver is driven with raw sockets (and ``ssl``), the webhook with httpx, so nothing here depends on
the forwarder's own Rapid7 outputs.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from .ports import LOOPBACK
from .rapid7 import NO_CACHE, Fault, TokenLineReceiver, WebhookReceiver

TOKEN = "8f0c6d2e-1b7a-4c3e-9d55-0a1b2c3d4e5f"  # cases.md C-21
TOKEN2 = "2bfbea1e-10c3-4419-bdad-7e6435882e1f"  # the example token of the Token TCP page
UNKNOWN = "00000000-1111-4222-8333-444444444444"
WAIT = 3.0


@dataclass(frozen=True)
class Pki:
    cert_file: Path
    key_file: Path
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("rapid7-pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(d / "server.pem"))
    leaf.private_key_pem.write_to_path(str(d / "server.key"))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return Pki(d / "server.pem", d / "server.key", client)


def line(token: str, payload: str | bytes) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return token.encode() + b" " + data + b"\n"


@contextlib.contextmanager
def connect(rx: TokenLineReceiver, pki: Pki | None = None) -> Iterator[socket.socket]:
    sock = socket.create_connection(rx.address, timeout=WAIT)
    if pki is not None:
        sock = pki.client.wrap_socket(sock, server_hostname="127.0.0.1")
    with sock:
        yield sock


def expect_reset(sock: socket.socket) -> None:
    """The peer's RST surfaces as ECONNRESET on the next read (not as an orderly EOF)."""
    sock.settimeout(WAIT)
    with pytest.raises(ConnectionResetError):
        sock.recv(1)


# ------------------------------------------------------------------------------------------ token TCP / TLS


def test_tcp_accepts_token_lines_for_several_logs_in_one_write() -> None:
    with TokenLineReceiver([TOKEN, TOKEN2]) as rx, connect(rx) as sock:
        sock.sendall(line(TOKEN, '{"n":1}') + line(TOKEN2, '{"n":2}') + line(TOKEN, '{"n":3}'))
        got = rx.wait_for_lines(3, WAIT)
        assert [(ln.token, ln.payload) for ln in got] == [
            (TOKEN, b'{"n":1}'),
            (TOKEN2, b'{"n":2}'),
            (TOKEN, b'{"n":3}'),
        ]
        assert rx.payloads(TOKEN) == [b'{"n":1}', b'{"n":3}']
        assert rx.payloads(TOKEN2) == [b'{"n":2}']
        assert len({ln.conn_id for ln in got}) == 1
        assert got[0].arrival <= got[2].arrival <= time.monotonic()
        assert rx.problems == []


def test_tls_carries_the_same_bytes(pki: Pki) -> None:
    record = {"description": "line1\nline2", "id": "SNYK-1"}
    stream = line(TOKEN, json.dumps(record)) + line(TOKEN, '{"id":"SNYK-2"}')
    with TokenLineReceiver([TOKEN], cert_file=pki.cert_file, key_file=pki.key_file) as rx:
        assert rx.tls
        with connect(rx, pki) as sock:
            sock.sendall(stream)
            got = rx.wait_for_lines(2, WAIT)
        assert [json.loads(ln.payload) for ln in got] == [record, {"id": "SNYK-2"}]
        assert rx.raw(got[0].conn_id) == stream
        assert rx.connections[0].tls
        assert rx.problems == []


def test_tls_port_does_not_take_plaintext(pki: Pki) -> None:
    with TokenLineReceiver([TOKEN], cert_file=pki.cert_file, key_file=pki.key_file) as rx:
        with connect(rx) as sock:
            sock.sendall(line(TOKEN, "plaintext"))
            sock.settimeout(WAIT)
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(4096):  # an alert at most, then the server closes
                    pass
        assert rx.lines == []
        assert rx.problems == []


def test_one_line_split_across_many_writes() -> None:
    payload = '{"note":"' + "x" * 200 + '"}'
    data = line(TOKEN, payload)
    with TokenLineReceiver([TOKEN]) as rx, connect(rx) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(data), 16):
            sock.sendall(data[i : i + 16])
            time.sleep(0.003)
        got = rx.wait_for_lines(1, WAIT)
        assert got[0].payload == payload.encode()
        assert rx.connections[0].reads > 1  # it really arrived in pieces
        assert rx.problems == []


def test_tokenless_nul_and_empty_lines_are_flagged_not_accepted() -> None:
    stream = (
        b"no token here\n"
        + line(TOKEN, b'{"a":"\x00"}')
        + b"\n"
        + line(UNKNOWN, "{}")
        + TOKEN.encode()
        + b'{"glued":1}\n'
        + line(TOKEN, ' {"two":"spaces"}')
        + line(TOKEN, "")
        + line(TOKEN, '{"ok":true}')
    )
    with TokenLineReceiver([TOKEN]) as rx, connect(rx) as sock:
        sock.sendall(stream)
        rx.wait_for_lines(1, WAIT)
        problems = rx.wait_for_problems(7, WAIT)
    assert rx.payloads() == [b'{"ok":true}']
    assert [p.kinds for p in problems] == [
        ("no_token",),
        ("nul_byte",),
        ("empty_line",),
        ("no_token",),
        ("no_token",),
        ("extra_space",),
        ("empty_payload",),
    ]
    assert problems[0].raw == b"no token here"
    assert problems[1].token == TOKEN and not problems[1].accepted
    assert "not followed by a space" in problems[4].detail


def test_raw_lf_inside_a_record_becomes_a_tokenless_second_line() -> None:
    """C-21: an unescaped LF splits the event; the tail has no token and Rapid7 drops it."""
    with TokenLineReceiver([TOKEN]) as rx, connect(rx) as sock:
        sock.sendall(line(TOKEN, '{"description":"line1\nline2"}'))
        sock.sendall(line(TOKEN, json.dumps({"description": "line1\nline2"})))
        got = rx.wait_for_lines(2, WAIT)
        problems = rx.wait_for_problems(1, WAIT)
    assert got[0].payload == b'{"description":"line1'
    assert json.loads(got[1].payload) == {"description": "line1\nline2"}
    assert [(p.kind, p.raw) for p in problems] == [("no_token", b'line2"}')]


def test_invalid_utf8_is_rejected_when_strict_and_flagged_when_not() -> None:
    bad = line(TOKEN, b'{"x":"\xff"}')
    with TokenLineReceiver([TOKEN]) as rx, connect(rx) as sock:
        sock.sendall(bad + line(TOKEN, "{}"))
        rx.wait_for_lines(1, WAIT)
        assert rx.payloads() == [b"{}"]
        assert [p.kind for p in rx.problems] == ["invalid_utf8"]
    with TokenLineReceiver([TOKEN], strict=False) as rx, connect(rx) as sock:
        sock.sendall(bad)
        assert rx.wait_for_lines(1, WAIT)[0].payload == b'{"x":"\xff"}'
        assert [(p.kind, p.accepted) for p in rx.problems] == [("invalid_utf8", True)]


def test_max_line_bytes_flags_long_lines() -> None:
    with TokenLineReceiver([TOKEN], max_line_bytes=100) as rx, connect(rx) as sock:
        sock.sendall(line(TOKEN, "y" * 200) + line(TOKEN, "short"))
        assert rx.wait_for_lines(1, WAIT)[0].payload == b"short"
        assert [p.kind for p in rx.problems] == ["too_long"]


def test_partial_trailing_line_on_close_is_not_an_event() -> None:
    with TokenLineReceiver([TOKEN]) as rx:
        with connect(rx) as sock:
            sock.sendall(line(TOKEN, '{"n":1}') + TOKEN.encode() + b' {"n":2')
        problems = rx.wait_for_problems(1, WAIT)
        assert rx.payloads() == [b'{"n":1}']
        assert problems[0].kind == "partial_line"
        assert problems[0].raw == TOKEN.encode() + b' {"n":2'
        assert rx.connections[0].close_reason == "peer closed"


def test_many_concurrent_connections_keep_per_connection_order() -> None:
    with TokenLineReceiver([TOKEN]) as rx, contextlib.ExitStack() as stack:
        socks = [stack.enter_context(connect(rx)) for _ in range(20)]
        for i in range(5):
            for c, sock in enumerate(socks):
                sock.sendall(line(TOKEN, f"{c}:{i}"))
        got = rx.wait_for_lines(100, WAIT)
        assert rx.open_connections == 20
    by_conn: dict[int, list[str]] = {}
    for ln in got:
        by_conn.setdefault(ln.conn_id, []).append(ln.text)
    assert len(by_conn) == 20
    for texts in by_conn.values():
        sender = texts[0].split(":")[0]
        assert texts == [f"{sender}:{i}" for i in range(5)]


def test_stop_refuses_and_resets_then_restart_reuses_the_port() -> None:
    with TokenLineReceiver([TOKEN]) as rx:
        port = rx.port
        with connect(rx) as sock:
            sock.sendall(line(TOKEN, "before"))
            rx.wait_for_lines(1, WAIT)
            rx.stop()
            assert not rx.running
            expect_reset(sock)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((LOOPBACK, port), timeout=WAIT).close()
        rx.restart()
        assert rx.port == port and rx.running
        with connect(rx) as sock:
            sock.sendall(line(TOKEN, "after"))
            got = rx.wait_for_lines(2, WAIT)
        assert rx.payloads() == [b"before", b"after"]
        assert got[0].conn_id != got[1].conn_id
        assert rx.connections[0].close_reason == "stop"


def test_reset_connections_keeps_the_listener() -> None:
    with TokenLineReceiver([TOKEN]) as rx, connect(rx) as a, connect(rx) as b:
        rx.wait_for_connections(2, WAIT, open_only=True)
        assert rx.reset_connections() == 2
        expect_reset(a)
        expect_reset(b)
        assert rx.open_connections == 0
        with connect(rx) as c:
            c.sendall(line(TOKEN, "still here"))
            assert rx.wait_for_lines(1, WAIT)[0].payload == b"still here"
        assert [ci.close_reason for ci in rx.connections[:2]] == ["reset", "reset"]


def test_paused_reading_fills_the_client_send_buffer() -> None:
    record = line(TOKEN, "z" * 1000)
    with TokenLineReceiver([TOKEN], paused=True, recv_buffer=4096) as rx, connect(rx) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setblocking(False)
        sent = 0
        for _ in range(10_000):
            try:
                sent += sock.send(record)
            except BlockingIOError:
                break
        assert 0 < sent < 10_000 * len(record)  # the kernel took some bytes, then stopped taking them
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.sendall(record * 100)  # a blocking sender is stuck, not "delivered"
        time.sleep(0.1)
        assert rx.lines == []  # nothing the kernel accepted was read, let alone stored
        rx.resume_reading()
        got = rx.wait_for_lines(sent // len(record), WAIT)
        assert len(got) >= sent // len(record)
        assert all(ln.payload == b"z" * 1000 for ln in got)


def test_crash_after_n_lines_loses_the_rest_of_the_buffer() -> None:
    with TokenLineReceiver([TOKEN]) as rx:
        rx.crash_after(2)
        with connect(rx) as sock:
            sock.sendall(b"".join(line(TOKEN, f"n{i}") for i in range(1, 6)) + TOKEN.encode() + b" part")
            rx.wait_for_crash(WAIT)
            assert rx.crashed and not rx.running
            expect_reset(sock)
        assert rx.payloads() == [b"n1", b"n2"]
        assert rx.problems == []  # the lost tail is not reported: it models silent loss
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(rx.address, timeout=WAIT).close()
        rx.restart()
        assert not rx.crashed
        with connect(rx) as sock:
            sock.sendall(line(TOKEN, "n3"))
            rx.wait_for_lines(3, WAIT)
        assert rx.payloads() == [b"n1", b"n2", b"n3"]


def test_tokens_must_be_uuids() -> None:
    with pytest.raises(ValueError, match="UUID"):
        TokenLineReceiver(["abc123-abc2-xyz1-abc-1234567890"])
    with pytest.raises(ValueError, match="at least one"):
        WebhookReceiver([], plain_http=True)


# ---------------------------------------------------------------------------------------------- HTTP POST


@pytest.fixture
def hook(pki: Pki) -> Iterator[WebhookReceiver]:
    with WebhookReceiver([TOKEN, TOKEN2], cert_file=pki.cert_file, key_file=pki.key_file, max_body_bytes=4096) as rx:
        yield rx


@pytest.fixture
def client(pki: Pki) -> Iterator[httpx.Client]:
    with httpx.Client(verify=pki.client, timeout=WAIT) as c:
        yield c


def test_webhook_answers_204_with_no_cache_and_keeps_alive(hook: WebhookReceiver, client: httpx.Client) -> None:
    assert hook.url().startswith("https://127.0.0.1:")
    first = client.post(hook.url(), content=b'{"a":1}\n{"b":2}\n', headers={"Content-Type": "application/json"})
    second = client.post(hook.url(TOKEN2), json={"message": "hi", "success": True})
    for r in (first, second):
        assert r.status_code == 204
        assert r.headers["cache-control"] == NO_CACHE
        assert r.content == b""
    events = hook.events
    assert [e.token for e in events] == [TOKEN, TOKEN2]
    assert events[0].lines == [b'{"a":1}', b'{"b":2}']
    assert events[0].header("content-type") == "application/json"
    assert json.loads(events[1].body) == {"message": "hi", "success": True}
    assert hook.event_bodies(TOKEN2) == [events[1].body]
    assert events[0].conn_id == events[1].conn_id  # HTTP/1.1 keep-alive: one connection
    assert hook.connections_accepted == 1


def test_webhook_unknown_token_other_paths_and_methods(hook: WebhookReceiver, client: httpx.Client) -> None:
    assert client.post(hook.url(UNKNOWN), content=b"x").status_code == 404
    assert client.post(f"{hook.base_url}/v1/drain/{TOKEN}", content=b"x").status_code == 404
    assert client.post(hook.url() + "/", content=b"x").status_code == 404
    r = client.get(hook.url())
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert hook.events == []
    assert [(q.status, q.note) for q in hook.requests] == [
        (404, "unknown token"),
        (404, "unknown path"),
        (404, "unknown path"),
        (405, "method not allowed"),
    ]
    assert hook.bodies == [b"x", b"x", b"x", b""]


def test_webhook_unknown_token_status_is_configurable(pki: Pki, client: httpx.Client) -> None:
    with WebhookReceiver([TOKEN], cert_file=pki.cert_file, key_file=pki.key_file, unknown_token_status=401) as rx:
        assert client.post(rx.url(UNKNOWN), content=b"x").status_code == 401


def test_webhook_413_above_max_body(hook: WebhookReceiver, client: httpx.Client) -> None:
    big = client.post(hook.url(), content=b"a" * 5000)
    assert big.status_code == 413
    assert big.headers["connection"] == "close"
    chunked = client.post(hook.url(), content=iter([b"b" * 3000, b"b" * 3000]))
    assert chunked.status_code == 413
    ok = client.post(hook.url(), content=iter([b"c" * 2000, b"c" * 2000]))
    assert ok.status_code == 204
    assert [q.status for q in hook.requests] == [413, 413, 204]
    assert hook.event_bodies() == [b"c" * 4000]


def test_webhook_scripted_429_with_retry_after(hook: WebhookReceiver, client: httpx.Client) -> None:
    hook.fail(429, times=2, retry_after=3)
    answers = [client.post(hook.url(), content=b"same") for _ in range(3)]
    assert [r.status_code for r in answers] == [429, 429, 204]
    assert [r.headers.get("retry-after") for r in answers] == ["3", "3", None]
    assert hook.bodies == [b"same"] * 3
    assert len(hook.events) == 1
    assert [q.fault for q in hook.requests] == ["429", "429", None]
    assert hook.pending_faults == 0


def test_webhook_scripted_5xx_in_order(hook: WebhookReceiver, client: httpx.Client) -> None:
    hook.script(*(Fault.reply(s) for s in (500, 502, 503, 504)))
    codes = [client.post(hook.url(), content=b"e").status_code for _ in range(5)]
    assert codes == [500, 502, 503, 504, 204]
    assert len(hook.events) == 1


def test_webhook_scripted_reset_without_reply(pki: Pki) -> None:
    with WebhookReceiver([TOKEN], plain_http=True) as rx:
        rx.reset_next()
        request = (f"POST /v1/noformat/{TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi").encode()
        with socket.create_connection((LOOPBACK, rx.port), timeout=WAIT) as sock:
            sock.sendall(request)
            expect_reset(sock)
        with httpx.Client(timeout=WAIT) as c:
            rx.reset_next()
            with pytest.raises(httpx.TransportError):
                c.post(rx.url(), content=b"again")
            assert c.post(rx.url(), content=b"third").status_code == 204
        assert [(q.status, q.body) for q in rx.requests] == [(None, b"hi"), (None, b"again"), (204, b"third")]
        assert rx.event_bodies() == [b"third"]


def test_webhook_slow_reply_still_stores_the_event(hook: WebhookReceiver, pki: Pki) -> None:
    hook.slow_next(0.6)
    with httpx.Client(verify=pki.client, timeout=0.2) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post(hook.url(), content=b"slow")
    assert hook.wait_for_events(1, WAIT)[0].body == b"slow"  # stored although the client gave up
    hook.slow_next(0.3, status=503)
    with httpx.Client(verify=pki.client, timeout=WAIT) as patient:
        t0 = time.monotonic()
        r = patient.post(hook.url(), content=b"slow 503")
        assert r.status_code == 503
        assert time.monotonic() - t0 >= 0.3


def test_webhook_outage_and_restart_on_the_same_port(hook: WebhookReceiver, client: httpx.Client) -> None:
    port = hook.port
    assert client.post(hook.url(), content=b"before").status_code == 204
    hook.stop()
    assert not hook.running
    with pytest.raises(httpx.ConnectError):
        client.post(hook.url(), content=b"during")
    hook.restart()
    assert hook.port == port
    assert client.post(hook.url(), content=b"after").status_code == 204
    assert hook.event_bodies() == [b"before", b"after"]


def test_webhook_stop_interrupts_a_slow_reply(pki: Pki) -> None:
    with WebhookReceiver([TOKEN], plain_http=True) as rx:
        rx.slow_next(30)
        with socket.create_connection((LOOPBACK, rx.port), timeout=WAIT) as sock:
            sock.sendall(f"POST /v1/noformat/{TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz".encode())
            time.sleep(0.1)
            t0 = time.monotonic()
            rx.stop()
            assert time.monotonic() - t0 < 2
            expect_reset(sock)
        assert [(q.status, q.body) for q in rx.requests] == [(None, b"z")]


def test_webhook_needs_a_certificate_unless_plain_http() -> None:
    with pytest.raises(ValueError, match="cert_file"):
        WebhookReceiver([TOKEN])
    with WebhookReceiver([TOKEN], plain_http=True) as rx, httpx.Client(timeout=WAIT) as c:
        assert rx.url().startswith("http://")
        assert c.post(rx.url(), content=b"plain").status_code == 204
