"""The syslog output against real rsyslog and syslog-ng: every transport and framing, TLS, size limits.

What the receivers wrote is read back and compared field by field (tests/support/syslogd.py).
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import trustme

from forwarder.formats import ecs_json
from forwarder.formats.cef import CefFormatter
from forwarder.formats.shorten import fit
from forwarder.outputs.syslog.client import syslog_output
from forwarder.outputs.syslog.config import SyslogSettings
from forwarder.types import Delivered, Message, Record, Retry
from tests.helpers import flatten_all, issue, sample, snapshot_body
from tests.support.cef_parser import parse as parse_cef
from tests.support.syslogd import Rsyslog, SyslogNg, SyslogReceiver

pytestmark = pytest.mark.anyio
RECEIVERS = [Rsyslog, SyslogNg]
TIMESTAMP = "2024-03-07T09:05:03.120Z"


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("forwarder.example")
    paths = {n: d / f"{n}.pem" for n in ("ca", "cert", "key", "client_cert", "client_key")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    client.cert_chain_pems[0].write_to_path(str(paths["client_cert"]))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    return Pki(ca, paths["ca"], paths["cert"], paths["key"], paths["client_cert"], paths["client_key"])


def records(*names: str) -> list[Record]:
    out: list[Record] = []
    for name in names:
        out.extend(flatten_all(sample(name), timestamp=TIMESTAMP))
    return out


def settings_for(receiver: SyslogReceiver, listener: str, pki: Pki | None = None, **extra: object) -> SyslogSettings:
    transport = "udp" if listener == "udp" else ("tls" if listener.startswith("tls") else "tcp")
    base = SyslogSettings(
        host="127.0.0.1",
        port=receiver.ports[listener],
        transport=transport,
        framing="lf" if listener.endswith("_lf") else "octet-counting",
        hostname="ci-runner-07",
        app_name="snykfwd",
        tls_ca_file=pki.ca_file if pki else None,
        connect_timeout=2,
        send_timeout=5,
    )
    return replace(base, **extra)  # type: ignore[arg-type]


async def ship(settings: SyslogSettings, messages: list[Message]) -> None:
    output = syslog_output("siem", settings)
    try:
        assert isinstance(await output.send(messages), Delivered)
    finally:
        await output.aclose()


def ecs_messages(recs: list[Record]) -> list[Message]:
    return [Message(r, ecs_json.encode(r)) for r in recs]


@pytest.mark.parametrize("receiver_class", RECEIVERS)
@pytest.mark.parametrize("listener", ["udp", "tcp", "tcp_lf", "tls", "tls_lf"])
async def test_every_transport_and_framing_delivers_whole_records(
    tmp_path: Path, pki: Pki, receiver_class: type[SyslogReceiver], listener: str
) -> None:
    recs = records("snapshot_small.json", "body_b.json")
    with receiver_class(tmp_path, [listener], cert_file=pki.cert_file, key_file=pki.key_file) as receiver:  # type: ignore[list-item]
        await ship(settings_for(receiver, listener, pki), ecs_messages(recs))
        got = receiver.wait_for_messages(len(recs))
    assert [json.loads(m["msg"])["event"]["id"] for m in got] == [r.id for r in recs]
    assert all(m["hostname"] == "ci-runner-07" and m["app_name"] == "snykfwd" for m in got)
    assert all(datetime.fromisoformat(m["timestamp"]) == datetime.fromisoformat(TIMESTAMP) for m in got)
    assert [m["severity"] for m in got] == [3, 4, 3, 4]  # high, medium, high (removed), medium
    assert json.loads(got[-1]["msg"])["snyk"]["issue"]["title"] == "Café sandbox escape 🚒"
    description = json.loads(got[0]["msg"])["vulnerability"]["description"]
    assert "\n" in description  # the JSON escape survived as a newline inside the value, not a frame break


@pytest.mark.parametrize("receiver_class", RECEIVERS)
async def test_c11_cef_over_lf_framed_tcp_and_tls(
    tmp_path: Path, pki: Pki, receiver_class: type[SyslogReceiver]
) -> None:
    first = flatten_all(
        snapshot_body([issue("SNYK-JS-EXAMPLE-2000003", title="Example", severity="low", description="line1\nline2")]),
        timestamp=TIMESTAMP,
    )[0]
    second = records("body_a.json")[0]
    cef = CefFormatter()
    messages = [Message(r, cef(r)) for r in (first, second)]
    severity_map = dict.fromkeys(("critical", "high", "medium", "low", "none"), 6)
    with receiver_class(tmp_path, ["tcp_lf", "tls_lf"], cert_file=pki.cert_file, key_file=pki.key_file) as receiver:
        for listener in ("tcp_lf", "tls_lf"):
            await ship(settings_for(receiver, listener, pki, severity_map=severity_map), messages)
        got = receiver.wait_for_messages(4)
    assert len(got) == 4
    for message in got:
        assert message["raw"].startswith(
            "<134>1 2024-03-07T09:05:03.120Z ci-runner-07 snykfwd - - - CEF:0|Snyk|Snyk|1.0|"
        )
    first_cef = parse_cef(got[0]["msg"].lstrip())
    assert first_cef.event_class == "SNYK-JS-EXAMPLE-2000003" and first_cef.severity == "3"
    assert first_cef.extension["msg"] == "line1\nline2"
    assert "msg=line1\\nline2" in got[0]["raw"]


class RawCapture:
    """A bare TCP (or TLS) server that keeps the exact bytes of one connection."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.context = context
        self.data = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.sock.accept()
        if self.context is not None:
            conn = self.context.wrap_socket(conn, server_side=True)
        with conn:
            for _ in range(10_000):
                try:
                    chunk = conn.recv(65536)
                except (OSError, ssl.SSLError):
                    break
                if not chunk:
                    break
                self.data += chunk

    def close(self) -> bytes:
        self.thread.join(timeout=5)
        self.sock.close()
        return self.data


@pytest.mark.parametrize("tls", [False, True])
async def test_c11_the_wire_holds_exactly_one_lf_per_frame_and_no_nul(pki: Pki, tls: bool) -> None:
    context = None
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.cert_file, pki.key_file)
    capture = RawCapture(context)
    first = flatten_all(
        snapshot_body([issue("SNYK-JS-EXAMPLE-2000003", title="Example", severity="low", description="line1\nline2")]),
        timestamp=TIMESTAMP,
    )[0]
    second = records("body_a.json")[0]
    settings = SyslogSettings(
        host="127.0.0.1",
        port=capture.port,
        transport="tls" if tls else "tcp",
        framing="lf",
        hostname="ci-runner-07",
        app_name="snykfwd",
        tls_ca_file=pki.ca_file,
        severity_map=dict.fromkeys(("critical", "high", "medium", "low", "none"), 6),
    )
    cef = CefFormatter()
    await ship(settings, [Message(r, cef(r)) for r in (first, second)])
    data = capture.close()
    assert data.count(b"\n") == 2 and data.endswith(b"\n") and b"\x00" not in data
    assert data.startswith(
        b"<134>1 2024-03-07T09:05:03.120Z ci-runner-07 snykfwd - - - CEF:0|Snyk|Snyk|1.0|SNYK-JS-EXAMPLE-2000003|Example|3|"  # noqa: E501 - exact bytes of C-11
    )
    assert b"msg=line1\\nline2" in data.split(b"\n")[0]


async def test_mutual_tls_presents_the_client_certificate(tmp_path: Path, pki: Pki) -> None:
    recs = records("body_a.json")
    with Rsyslog(
        tmp_path, ["tls"], cert_file=pki.cert_file, key_file=pki.key_file, client_ca_file=pki.ca_file
    ) as receiver:
        await ship(
            settings_for(receiver, "tls", pki, tls_client_cert=pki.client_cert, tls_client_key=pki.client_key),
            ecs_messages(recs),
        )
        got = receiver.wait_for_messages(1)
    assert json.loads(got[0]["msg"])["event"]["id"] == recs[0].id


async def test_tls_verification_is_on_by_default(tmp_path: Path, pki: Pki) -> None:
    with Rsyslog(tmp_path, ["tls"], cert_file=pki.cert_file, key_file=pki.key_file) as receiver:
        untrusted = settings_for(receiver, "tls", None)  # system CAs only: the test CA is unknown
        output = syslog_output("siem", untrusted)
        outcome = await output.send(ecs_messages(records("body_a.json")))
        await output.aclose()
        assert isinstance(outcome, Retry) and "certificate verify failed" in outcome.reason.lower()
        wrong_name = settings_for(receiver, "tls", pki, tls_server_name="siem.example.com")
        output = syslog_output("siem", wrong_name)
        outcome = await output.send(ecs_messages(records("body_a.json")))
        await output.aclose()
        assert isinstance(outcome, Retry) and "hostname" in outcome.reason.lower()
        assert receiver.messages() == []


@pytest.mark.parametrize(("receiver_class", "limit"), [(Rsyslog, 8096), (SyslogNg, 65536)])
async def test_oversize_records_arrive_shortened_and_valid(
    tmp_path: Path, pki: Pki, receiver_class: type[SyslogReceiver], limit: int
) -> None:
    description = "Ünïcödé advisory text. " * (limit // 10)
    (record,) = flatten_all(snapshot_body([issue("SNYK-BIG-1", description=description)]), timestamp=TIMESTAMP)
    with receiver_class(tmp_path, ["tcp"], max_message_size=limit) as receiver:
        settings = settings_for(receiver, "tcp", max_message_bytes=limit)
        output = syslog_output("siem", settings)
        fitted = fit(record, ecs_json.encode, output.message_budget(record))
        assert fitted is not None
        body, shortened = fitted
        assert isinstance(await output.send([Message(shortened, body)]), Delivered)
        await output.aclose()
        (got,) = receiver.wait_for_messages(1)
    document = orjson.loads(got["msg"])
    assert document["vulnerability"]["description"].endswith("…")
    assert document["snyk"]["shortened_fields"] == ["vulnerability.description"]
    assert len(got["raw"].encode()) <= limit
    assert "oversize" not in receiver.log_text().lower()


async def test_a_receiver_restart_is_a_retry_then_delivery(tmp_path: Path) -> None:
    with Rsyslog(tmp_path, ["tcp"]) as receiver:
        settings = settings_for(receiver, "tcp")
        output = syslog_output("siem", settings)
        first, second = ecs_messages(records("body_a.json", "body_b.json"))
        assert isinstance(await output.send([first]), Delivered)
        receiver.stop()
        outcome = await output.send([second])
        assert isinstance(outcome, Retry), "a closed receiver must not count as delivered"
        assert str(receiver.ports["tcp"]) in outcome.reason
        receiver.restart()
        assert isinstance(await output.send([second]), Delivered)
        second_id = second.record.id
        receiver.wait_for_messages(1, where=lambda m: json.loads(m["msg"])["event"]["id"] == second_id)
        got = receiver.messages()
        await output.aclose()
    ids = [json.loads(m["msg"])["event"]["id"] for m in got]
    # The first frame was acknowledged shortly before the receiver went away, so it is written again
    # on the next connection (the resend window): rsyslog has it twice if it had stored it before
    # stopping, once if it had not — never zero times, and only ever with the same id.
    assert ids[-1] == second.record.id and ids.count(second.record.id) == 1
    assert ids.count(first.record.id) in (1, 2) and ids.index(first.record.id) == 0
    assert len(ids) == ids.count(first.record.id) + 1


async def test_structured_data_and_rfc3164_reach_the_receivers(tmp_path: Path) -> None:
    body = snapshot_body([issue("SNYK-1")], project={"name": 'acme/api "v2" [beta]\\legacy'})
    recs = flatten_all(body, timestamp=TIMESTAMP)
    with SyslogNg(tmp_path / "ng", ["tcp"]) as ng, Rsyslog(tmp_path / "rs", ["tcp_lf"]) as rs:
        await ship(settings_for(ng, "tcp", structured_data=True), ecs_messages(recs))
        await ship(settings_for(rs, "tcp_lf", protocol="rfc3164", procid="4242"), ecs_messages(recs))
        (sd_msg,) = ng.wait_for_messages(1)
        (bsd_msg,) = rs.wait_for_messages(1)
    assert sd_msg["sdata"]["snyk@32473"]["project"] == 'acme/api "v2" [beta]\\legacy'
    assert sd_msg["sdata"]["snyk@32473"]["id"] == recs[0].id
    assert bsd_msg["app_name"] == "snykfwd" and bsd_msg["procid"] == "4242"
    assert json.loads(bsd_msg["msg"])["event"]["id"] == recs[0].id


def _unused(_: Iterator[None]) -> None:  # keeps typing imports honest
    return None
