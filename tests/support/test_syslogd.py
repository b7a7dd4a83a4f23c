"""Checks that the test receivers really receive, parse and report what a sender puts on the wire.

Everything else in the suite trusts these helpers to say what rsyslog and syslog-ng made of the
forwarder's output, so they are tested against hand-built frames whose every field is known.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme

from . import syslogd
from .ports import free_port, wait_for_port
from .syslogd import (
    LISTENERS,
    Listener,
    ReceiversNotInstalled,
    Rsyslog,
    RsyslogGtls,
    SyslogMessage,
    SyslogNg,
    SyslogReceiver,
)

RECEIVERS: list[type[SyslogReceiver]] = [Rsyslog, SyslogNg]

HEADER = "<134>1 2024-03-07T09:05:03.120Z ci-runner-07 snykfwd - - - "
PAYLOAD = {"project": "Café 🚒", "note": "line1\nline2", "quote": 'say "hi" \\ bye'}
# json.dumps escapes the LF as the two characters \n: the frame itself has no LF.
JSON_MSG = json.dumps(PAYLOAD, ensure_ascii=False)
FRAME = (HEADER + JSON_MSG).encode()
SENT_AT = datetime(2024, 3, 7, 9, 5, 3, 120000, tzinfo=UTC)

SD = r'[snyk@32473 project="acme/api \"v2\" [beta\]\\legacy"][meta sequenceId="7"]'
SD_FRAME = f"<131>1 2024-03-07T09:05:03.120Z ci-runner-07 snykfwd 4711 issue {SD} sd check".encode()


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path
    client: trustme.LeafCert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    pki = Pki(ca, d / "ca.pem", d / "server.pem", d / "server.key", ca.issue_cert("client.example"))
    ca.cert_pem.write_to_path(str(pki.ca_file))
    server.cert_chain_pems[0].write_to_path(str(pki.cert_file))
    server.private_key_pem.write_to_path(str(pki.key_file))
    return pki


@pytest.fixture(params=RECEIVERS, ids=lambda cls: cls.name)
def receiver_cls(request: pytest.FixtureRequest) -> type[SyslogReceiver]:
    cls: type[SyslogReceiver] = request.param
    return cls


@pytest.fixture
def receiver(receiver_cls: type[SyslogReceiver], pki: Pki, tmp_path: Path) -> Iterator[SyslogReceiver]:
    with receiver_cls(tmp_path, LISTENERS, cert_file=pki.cert_file, key_file=pki.key_file) as rcv:
        yield rcv


def octet(frame: bytes) -> bytes:
    return b"%d %s" % (len(frame), frame)


def tls_context(pki: Pki, *, with_client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if with_client_cert:
        pki.client.configure_cert(ctx)
    return ctx


HANDSHAKE_ATTEMPTS = 3


def handshake(addr: tuple[str, int], ctx: ssl.SSLContext) -> ssl.SSLSocket:
    """A TLS connection, retrying a handshake the receiver dropped (a busy machine's freshly started
    daemon can accept TCP before its TLS layer serves). Nothing was sent yet, so a retry cannot
    duplicate a message; a certificate error is not retried."""
    for attempt in range(HANDSHAKE_ATTEMPTS):
        raw = socket.create_connection(addr, timeout=5)
        try:
            return ctx.wrap_socket(raw, server_hostname="localhost")
        except (ssl.SSLEOFError, ConnectionResetError):
            raw.close()
            if attempt == HANDSHAKE_ATTEMPTS - 1:
                raise
        except BaseException:
            raw.close()
            raise
    raise AssertionError("unreachable")


def send_tls(addr: tuple[str, int], data: bytes, ctx: ssl.SSLContext) -> None:
    with handshake(addr, ctx) as tls:
        tls.sendall(data)
        tls.settimeout(2)
        # Whether close_notify is answered depends on the receiver and its TLS library (notes §10; rsyslog
        # gtls does not, ossl does): sending it is what RFC 5425 asks, a reply is not to be relied on.
        with contextlib.suppress(OSError):
            tls.unwrap()


def send(rcv: SyslogReceiver, listener: Listener, frame: bytes, pki: Pki | None = None) -> None:
    addr = rcv.address(listener)
    if listener == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(frame, addr)
    elif listener in ("tcp", "tcp_lf"):
        data = octet(frame) if listener == "tcp" else frame + b"\n"
        with socket.create_connection(addr, timeout=5) as sock:
            sock.sendall(data)
    else:
        assert pki is not None, "TLS needs the test CA"
        send_tls(addr, octet(frame) if listener == "tls" else frame + b"\n", tls_context(pki))


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.02) + 1):
        if condition():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return condition()


def nil(rcv: SyslogReceiver) -> str:
    """How the receiver stores an RFC 5424 NILVALUE field."""
    return "-" if isinstance(rcv, Rsyslog) else ""


def test_rfc5424_frame_arrives_intact_on_every_listener(receiver: SyslogReceiver, pki: Pki) -> None:
    for listener in LISTENERS:
        send(receiver, listener, FRAME, pki)
    got = receiver.wait_for_messages(len(LISTENERS), timeout=10)

    assert sorted(m["listener"] for m in got) == sorted(LISTENERS)
    for m in got:
        assert m["receiver"] == receiver.name
        assert m["raw"] == FRAME.decode()
        assert (m["pri"], m["facility"], m["severity"]) == (134, 16, 6)
        assert datetime.fromisoformat(m["timestamp"]) == SENT_AT
        assert m["hostname"] == "ci-runner-07"
        assert m["app_name"] == "snykfwd"
        assert m["procid"] == m["msgid"] == m["structured_data"] == nil(receiver)
        assert m["sdata"] == {}
        assert m["msg"] == JSON_MSG
        assert json.loads(m["msg"]) == PAYLOAD
    # The UDP readiness probe is written by the receiver but never reported as a test message.
    assert len(receiver.messages(include_probes=True)) == len(got) + 1


@pytest.mark.parametrize("listener", ["tcp", "tls", "udp"])
def test_structured_data_kept_verbatim_and_unescaped_in_sdata(
    receiver: SyslogReceiver, pki: Pki, listener: Listener
) -> None:
    send(receiver, listener, SD_FRAME, pki)
    [m] = receiver.wait_for_messages(1)

    assert m["listener"] == listener
    assert (m["pri"], m["facility"], m["severity"]) == (131, 16, 3)
    assert (m["procid"], m["msgid"]) == ("4711", "issue")
    assert m["structured_data"] == SD
    assert m["sdata"] == {
        "snyk@32473": {"project": 'acme/api "v2" [beta]\\legacy'},
        "meta": {"sequenceId": "7"},  # case kept: SD names are case-sensitive (RFC 5424 §6.3.3)
    }
    assert m["msg"] == "sd check"


def test_lf_inside_octet_counted_frame_is_kept_but_splits_lf_framing(receiver: SyslogReceiver, pki: Pki) -> None:
    frame = (HEADER + "first\nsecond").encode()
    send(receiver, "tcp", frame, pki)
    [counted] = receiver.wait_for_messages(1)
    # rsyslog would store #012 here without parser.escapeControlCharactersOnReceive="off".
    assert counted["msg"] == "first\nsecond"
    assert counted["raw"] == frame.decode()

    send(receiver, "tcp_lf", frame, pki)
    lf_framed = receiver.wait_for_messages(2, where=lambda m: m["listener"] == "tcp_lf")
    assert len(lf_framed) == 2
    assert lf_framed[0]["msg"] == "first"
    assert lf_framed[0]["app_name"] == "snykfwd"
    assert lf_framed[1]["app_name"] != "snykfwd"  # the remainder is parsed as a broken message of its own


@pytest.mark.parametrize(("listener", "size"), [("tcp", 200_000), ("tls", 200_000), ("udp", 60_000)])
def test_large_message_within_the_limit_arrives_whole(
    receiver: SyslogReceiver, pki: Pki, listener: Listener, size: int
) -> None:
    frame = (HEADER + "Café " + "x" * size).encode()
    send(receiver, listener, frame, pki)
    [m] = receiver.wait_for_messages(1)
    assert m["raw"] == frame.decode()
    assert len(m["msg"].encode()) == len(frame) - len(HEADER)


def test_rsyslog_gnutls_driver_receives_both_tls_framings(pki: Pki, tmp_path: Path) -> None:
    with RsyslogGtls(tmp_path, ["tls", "tls_lf"], cert_file=pki.cert_file, key_file=pki.key_file) as rcv:
        send(rcv, "tls", FRAME, pki)
        send(rcv, "tls_lf", FRAME, pki)
        got = rcv.wait_for_messages(2)
    assert sorted(m["listener"] for m in got) == ["tls", "tls_lf"]
    assert all(m["raw"] == FRAME.decode() and m["msg"] == JSON_MSG for m in got)


def test_restart_and_kill_keep_ports(receiver_cls: type[SyslogReceiver], pki: Pki, tmp_path: Path) -> None:
    # A work dir too long for an AF_UNIX path: syslog-ng's control socket must still find a home.
    workdir = tmp_path / ("long-path-" * 8)
    with receiver_cls(workdir, ["udp", "tcp", "tls"], cert_file=pki.cert_file, key_file=pki.key_file) as rcv:
        ports = dict(rcv.ports)
        first_pid = rcv.pid
        send(rcv, "tcp", FRAME, pki)
        rcv.wait_for_messages(1)

        rcv.restart()
        assert rcv.ports == ports
        assert rcv.pid != first_pid
        send(rcv, "udp", FRAME, pki)
        rcv.wait_for_messages(2)

        rcv.kill()
        assert not rcv.is_running()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(rcv.address("tcp"), timeout=2).close()

        rcv.restart()
        assert rcv.ports == ports
        send(rcv, "tls", FRAME, pki)
        got = rcv.wait_for_messages(3)
    assert [m["listener"] for m in got] == ["tcp", "udp", "tls"]
    assert all(m["msg"] == JSON_MSG for m in got)
    assert not rcv.is_running()


def test_record_torn_by_kill_does_not_break_reading_after_restart(
    receiver_cls: type[SyslogReceiver], tmp_path: Path
) -> None:
    with receiver_cls(tmp_path, ["tcp"]) as rcv:
        send(rcv, "tcp", FRAME)
        rcv.wait_for_messages(1)
        rcv.kill()
        # What a SIGKILL between two write() calls of one large record leaves behind.
        with rcv.output_path.open("ab") as out:
            out.write(b'{"raw":"<134>1 2024-03-07T09:05:03.120Z ci-runner-07 snykfwd - - - {\\"proj')
        rcv.restart()
        send(rcv, "tcp", (HEADER + "after restart").encode())
        got = rcv.wait_for_messages(2)
    assert [m["msg"] for m in got] == [JSON_MSG, "after restart"]


def test_mutual_tls_rejects_clients_without_certificate(
    receiver_cls: type[SyslogReceiver], pki: Pki, tmp_path: Path
) -> None:
    with receiver_cls(
        tmp_path,
        ["tls"],
        cert_file=pki.cert_file,
        key_file=pki.key_file,
        client_ca_file=pki.ca_file,
    ) as rcv:
        anonymous = (HEADER + "anonymous").encode()
        # TLS 1.3 finishes the client's side of the handshake before the server checks the certificate,
        # so the refusal may show up on the handshake, the write or the close: any of them is fine.
        with contextlib.suppress(OSError):
            send_tls(rcv.address("tls"), octet(anonymous), tls_context(pki))
        send_tls(rcv.address("tls"), octet(FRAME), tls_context(pki, with_client_cert=True))
        rcv.wait_for_messages(1, where=lambda m: m["msg"] == JSON_MSG)
        # Under TLS 1.3 the sender is not told: the refusal is only visible on the receiver's side.
        refused = wait_until(lambda: "peer did not return a certificate" in rcv.log_text(), timeout=5)
        got = rcv.messages()
    assert [m["msg"] for m in got] == [JSON_MSG]
    assert refused, "the receiver did not log why it refused the anonymous client"


def test_max_message_size_reaches_the_daemon(receiver_cls: type[SyslogReceiver], pki: Pki, tmp_path: Path) -> None:
    limit = 1024
    big = (HEADER + "x" * 2000).encode()
    small = (HEADER + "after").encode()
    with receiver_cls(tmp_path, ["tcp"], max_message_size=limit) as rcv:
        send(rcv, "tcp", big)
        send(rcv, "tcp", small)
        got: list[SyslogMessage] = rcv.wait_for_messages(1, where=lambda m: m["msg"] == "after")
        got = rcv.messages()
        log = rcv.log_text()
    if receiver_cls is Rsyslog:
        # Cut at the limit, the rest delivered as a garbage record, and a warning (notes §7).
        assert got[0]["raw"] == big[:limit].decode()
        assert "oversize message" in log
    else:
        # Frame dropped with its connection, nothing truncated is stored (notes §8).
        assert [m["msg"] for m in got] == ["after"]
        assert "Incoming frame larger than log_msg_size()" in log


def test_retries_with_new_ports_when_one_is_taken(
    receiver_cls: type[SyslogReceiver], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        handed_out: list[int] = []

        def racy_free_port(kind: str = "tcp", host: str = "127.0.0.1") -> int:
            port = taken if not handed_out else free_port("tcp")
            handed_out.append(port)
            return port

        monkeypatch.setattr(syslogd, "free_port", racy_free_port)
        with receiver_cls(tmp_path, ["tcp"]) as rcv:
            assert handed_out[0] == taken
            assert rcv.ports["tcp"] != taken
            send(rcv, "tcp", FRAME)
            assert rcv.wait_for_messages(1)[0]["msg"] == JSON_MSG


def test_missing_receivers_fail_loudly(receiver_cls: type[SyslogReceiver], tmp_path: Path) -> None:
    with pytest.raises(ReceiversNotInstalled, match="scripts/fetch-receivers"):
        receiver_cls(tmp_path / "work", ["tcp"], root=tmp_path / "empty-root")


def test_tls_listener_requires_a_certificate(receiver_cls: type[SyslogReceiver], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cert_file"):
        receiver_cls(tmp_path, ["tls"])


def test_free_port_is_bindable_and_wait_for_port_times_out() -> None:
    for kind in ("tcp", "udp"):
        port = free_port(kind)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))
            if kind == "tcp":
                s.listen()
                wait_for_port("127.0.0.1", port, timeout=1)
    closed = free_port("tcp")
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{closed}"):
        wait_for_port("127.0.0.1", closed, timeout=0.3)
