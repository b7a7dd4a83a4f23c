"""The rapid7 output: configuration, exact bytes (C-21), and delivery through the real shipper.

Receivers: tests/support/rapid7.py (token TCP/TLS, HTTP POST) and real rsyslog / syslog-ng
(tests/support/syslogd.py) for the collector path. The delivery tests drive the real Shipper,
RecordStream and SqliteBuffer, break the receivers (stop/restart, resets, crash_after) and then
check that every record arrived at least once, and that every duplicate lies in the window the
output documents (forwarder/outputs/rapid7/client.py and webhook.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from forwarder.buffer import SqliteBuffer
from forwarder.config import parse_config
from forwarder.config.model import DeliveryConfig
from forwarder.config.secrets import Secret
from forwarder.errors import ConfigError
from forwarder.formats import ecs_json
from forwarder.formats.cef import CefFormatter
from forwarder.formats.shorten import fit
from forwarder.outputs import OUTPUT_TYPES
from forwarder.outputs.base import Output
from forwarder.outputs.rapid7.client import collector_output, token_tcp_output
from forwarder.outputs.rapid7.config import CollectorSettings, TokenTcpSettings, WebhookSettings
from forwarder.outputs.rapid7.encode import single_line
from forwarder.outputs.rapid7.webhook import WebhookOutput, classify
from forwarder.outputs.stream import RecentWrites, StreamOutput
from forwarder.records import RecordStream
from forwarder.shipper import Shipper
from forwarder.types import Delivered, Message, Pause, Record, Reject, Retry, Split, Webhook
from tests.helpers import SECRET, flatten_all, issue, sign, snapshot_body
from tests.support.daemon import LocalCA
from tests.support.rapid7 import TokenLineReceiver, WebhookReceiver
from tests.support.syslogd import Rsyslog, SyslogNg, SyslogReceiver

pytestmark = pytest.mark.anyio
TOKEN = "8f0c6d2e-1b7a-4c3e-9d55-0a1b2c3d4e5f"  # cases.md C-21
OTHER_TOKEN = "2bfbea1e-10c3-4419-bdad-7e6435882e1f"
TIMESTAMP = "2024-03-07T09:05:03.120Z"
WAIT = 10.0
# Scaled-down shipper: small batches so faults land mid-stream; backoff 0.05 s .. 0.5 s.
FAST = DeliveryConfig(
    batch_max_records=10,
    batch_timeout=0.0,
    retry_initial_backoff=0.05,
    retry_max_backoff=0.5,
    pause_probe_interval=0.1,
)


Pki = LocalCA  # a CA and a server certificate for 127.0.0.1, ::1 and localhost


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return LocalCA(tmp_path_factory.mktemp("rapid7-pki"))


def c21_records() -> list[Record]:
    """C-21: two records, the first with the description ``line1`` LF ``line2``."""
    body = snapshot_body([issue("SNYK-JS-EXAMPLE-2000003", description="line1\nline2"), issue("SNYK-JS-OTHER-1")])
    return flatten_all(body, timestamp=TIMESTAMP)


def ecs(records: list[Record]) -> list[Message]:
    return [Message(r, ecs_json.encode(r)) for r in records]


def token_settings(rx: TokenLineReceiver, pki: Pki | None = None, **extra: Any) -> TokenTcpSettings:
    base = TokenTcpSettings(
        token=Secret("inline", TOKEN),
        host="127.0.0.1",
        port=rx.port,
        transport="tls" if pki else "tcp",
        tls_ca_file=pki.ca_file if pki else None,
        connect_timeout=2,
        send_timeout=5,
    )
    return replace(base, **extra)


def webhook_settings(rx: WebhookReceiver, pki: Pki, **extra: Any) -> WebhookSettings:
    base = WebhookSettings(token=Secret("inline", TOKEN), endpoint=rx.base_url, tls_ca_file=pki.ca_file)
    return replace(base, **extra)


def ids_of(payloads: list[bytes]) -> list[str]:
    return [orjson.loads(p)["event"]["id"] for p in payloads]


# --- configuration --------------------------------------------------------------------------------------


def config(section: str, tmp_path: Path) -> Any:
    text = (
        f'[listen]\nplain_http = true\n[webhook]\nsecret = "{SECRET}"\n[state]\ndirectory = "{tmp_path}"\n'
        '[outputs.r7]\ntype = "rapid7"\n'
    )
    return parse_config(text + section, base_dir=tmp_path).outputs[0]


def test_each_mode_parses_with_its_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R7_TOKEN", TOKEN + "\n")
    token = config('mode = "token_tcp"\nregion = "eu"\ntoken = { env = "R7_TOKEN" }', tmp_path)
    assert (token.settings.host, token.settings.port, token.settings.transport) == (
        "eu.data.logs.insight.rapid7.com",
        443,
        "tls",
    )
    assert token.settings.token.reveal() == TOKEN and TOKEN not in repr(token.settings)
    assert token.delivery.batch_max_records == 100
    plain = config(f'mode = "token_tcp"\nregion = "us2"\ntransport = "tcp"\ntoken = "{TOKEN}"', tmp_path)
    assert (plain.settings.host, plain.settings.port) == ("us2.data.logs.insight.rapid7.com", 80)
    hook = config(f'mode = "webhook"\nregion = "ap"\ntoken = "{TOKEN}"', tmp_path)
    assert hook.settings.endpoint == "https://ap.webhook.logs.insight.rapid7.com"
    assert (hook.settings.records_per_request, hook.settings.concurrency) == (1, 4)
    collector = config('mode = "collector"\nendpoint = "10.0.0.5:5140"', tmp_path)
    assert collector.settings == CollectorSettings(host="10.0.0.5", port=5140, hostname=collector.settings.hostname)
    assert collector.settings.max_event_bytes == 65536 and collector.settings.header == "none"
    (tmp_path / "tok").write_text(TOKEN + "\n")
    from_file = config('mode = "webhook"\nregion = "us"\ntoken = { file = "tok" }', tmp_path)
    assert from_file.settings.token.reveal() == TOKEN
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    from_credential = config('mode = "webhook"\nregion = "us"\ntoken = { credential = "tok" }', tmp_path)
    assert from_credential.settings.token.reveal() == TOKEN


@pytest.mark.parametrize(
    ("section", "key", "words"),
    [
        ("", "outputs.r7.mode", "is required"),
        ('mode = "token_tcp"\ntoken = "' + TOKEN + '"', "outputs.r7.region", "dropped without an error"),
        ('mode = "token_tcp"\nregion = "mars"\ntoken = "' + TOKEN + '"', "outputs.r7.region", "us, us2"),
        ('mode = "webhook"\nregion = "us"', "outputs.r7.token", "is required"),
        ('mode = "collector"\nendpoint = "c:5140"\ntoken = "' + TOKEN + '"', "outputs.r7.token", "token_tcp / webhook"),
        ('mode = "webhook"\nregion = "us"\nheader = "rfc5424"\ntoken = "' + TOKEN + '"', "outputs.r7.header", "mode"),
        ('mode = "collector"\nendpoint = "c:5140"\napp_name = "x"', "outputs.r7.app_name", "syslog header"),
        ('mode = "collector"\nendpoint = "c:5140"\ntransport = "udp"\nresend_window = "1s"', "", "UDP"),
        (
            'mode = "token_tcp"\nendpoint = "eu.data.logs.insight.rapid7.com:80"\ntoken = "' + TOKEN + '"',
            "outputs.r7.endpoint",
            "not a documented Token TLS port",
        ),
        (
            'mode = "token_tcp"\nregion = "eu"\nendpoint = "h:1"\ntoken = "' + TOKEN + '"',
            "outputs.r7.region",
            "exclude",
        ),
        ('mode = "webhook"\nendpoint = "http://rapid7.example:80"\ntoken = "' + TOKEN + '"', "", "clear text"),
        ('mode = "webhook"\nendpoint = "https://h/v1/noformat"\ntoken = "' + TOKEN + '"', "", "must not have a path"),
        (
            'mode = "token_tcp"\nregion = "eu"\ntransport = "tcp"\ntls_verify = false\ntoken = "' + TOKEN + '"',
            "",
            "tls",
        ),
    ],
)
def test_configuration_errors_name_key_and_fix(tmp_path: Path, section: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(section, tmp_path)
    assert caught.value.key.startswith(key) and words in str(caught.value) and "fix:" in str(caught.value)


def test_a_malformed_token_is_refused_without_being_echoed(tmp_path: Path) -> None:
    leaked = "s3cr3t-looking-value-that-is-no-uuid"
    with pytest.raises(ConfigError) as caught:
        config(f'mode = "token_tcp"\nregion = "us"\ntoken = "{leaked}"', tmp_path)
    assert caught.value.key == "outputs.r7.token" and "UUID" in str(caught.value)
    assert leaked not in str(caught.value) and leaked not in repr(caught.value.value)


def test_the_registry_lists_rapid7() -> None:
    assert "rapid7" in OUTPUT_TYPES


def test_the_examples_in_the_guide_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guide = (Path(__file__).parents[2] / "docs" / "outputs" / "rapid7.md").read_text()
    blocks = [block.split("```", 1)[0] for block in guide.split("```toml\n")[1:]]
    assert len(blocks) == 3
    monkeypatch.setenv("RAPID7_LOG_TOKEN", TOKEN)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "rapid7-log-token").write_text(TOKEN)
    modes = {config(block.split('type = "rapid7"\n', 1)[1], tmp_path).settings.__class__ for block in blocks}
    assert modes == {CollectorSettings, TokenTcpSettings, WebhookSettings}


# --- encoding ------------------------------------------------------------------------------------------


def test_single_line_is_belt_and_braces_for_formats_that_would_break_a_line() -> None:
    assert single_line(b'{"a":"x\\ny"}') == b'{"a":"x\\ny"}'
    assert single_line(b"a\r\nb\nc\rd\0e") == "a\u2028b\u2028c\u2028d\ufffde".encode()


def test_recent_writes_keep_the_window_and_whole_frames() -> None:
    recent = RecentWrites(window=1.0, max_bytes=10)
    recent.acknowledged([b"aaa\n"], at=0.0)
    recent.acknowledged([b"bbb\n"], at=5.0)  # "aaa" is older than the window now
    recent.acknowledged([b"ccc\n"], at=5.5)
    recent.broken(at=6.2)  # only writes at 5.2 or later are suspect
    assert recent.pending == b"ccc\n"
    recent.acknowledged([b"0123456\n", b"89\n"], at=7.0)
    recent.broken(at=7.0)
    assert recent.pending == b"89\n"  # the newest whole frames within max_bytes, never half a frame
    recent.resent()
    assert recent.pending == b""
    off = RecentWrites(window=0.0)
    off.acknowledged([b"x\n"], at=0.0)
    off.broken(at=0.0)
    assert off.pending == b""


# --- token TCP: exact bytes (C-21) --------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True])
async def test_c21_token_mode_sends_exactly_two_token_lines(pki: Pki, tls: bool) -> None:
    records = c21_records()
    cert, key = (pki.cert_file, pki.key_file) if tls else (None, None)
    with TokenLineReceiver([TOKEN], cert_file=cert, key_file=key) as rx:
        output = token_tcp_output("r7", token_settings(rx, pki if tls else None))
        assert isinstance(await output.send(ecs(records)), Delivered)
        await output.aclose()
        rx.wait_for_lines(2, WAIT)
        raw = rx.raw()
        assert rx.problems == []
    expected = b"".join(TOKEN.encode() + b" " + ecs_json.encode(r) + b"\n" for r in records)
    assert raw == expected  # the TLS variant carries the same bytes
    lines = raw.split(b"\n")
    assert len(lines) == 3 and lines[2] == b"" and b"\x00" not in raw
    assert all(line.startswith(TOKEN.encode() + b" {") for line in lines[:2])
    assert b"line1\\nline2" in lines[0]
    assert orjson.loads(lines[0][len(TOKEN) + 1 :])["vulnerability"]["description"] == "line1\nline2"


async def test_cef_over_token_tcp_stays_one_line_per_record() -> None:
    records = c21_records()
    cef = CefFormatter()
    with TokenLineReceiver([TOKEN]) as rx:
        output = token_tcp_output("r7", token_settings(rx))
        assert isinstance(await output.send([Message(r, cef(r)) for r in records]), Delivered)
        await output.aclose()
        got = rx.wait_for_lines(2, WAIT)
        assert rx.problems == [] and len(rx.raw().split(b"\n")) == 3
    assert b"msg=line1\\nline2" in got[0].payload


async def test_oversize_records_are_shortened_below_64_kib(pki: Pki) -> None:
    (record,) = flatten_all(snapshot_body([issue("SNYK-BIG", description="Ünïcödé advisory text. " * 9000)]))
    assert len(ecs_json.encode(record)) > 150_000
    with TokenLineReceiver([TOKEN], max_line_bytes=65535) as rx:
        output = token_tcp_output("r7", token_settings(rx))
        fitted = fit(record, ecs_json.encode, output.message_budget(record))
        assert fitted is not None
        body, shortened = fitted
        assert isinstance(await output.send([Message(shortened, body)]), Delivered)
        await output.aclose()
        (line,) = rx.wait_for_lines(1, WAIT)
        assert rx.problems == []
    assert len(TOKEN) + 1 + len(line.payload) + 1 <= 65536
    assert orjson.loads(line.payload)["snyk"]["shortened_fields"] == ["vulnerability.description"]


async def test_a_receiver_that_is_down_is_a_retry_naming_the_endpoint() -> None:
    with TokenLineReceiver([TOKEN]) as rx:
        output = token_tcp_output("r7", token_settings(rx))
        rx.stop()
        outcome = await output.send(ecs(c21_records()))
        assert isinstance(outcome, Retry) and str(rx.port) in outcome.reason
        await output.aclose()


async def test_tls_verification_is_on_by_default(pki: Pki) -> None:
    with TokenLineReceiver([TOKEN], cert_file=pki.cert_file, key_file=pki.key_file) as rx:
        output = token_tcp_output("r7", replace(token_settings(rx, pki), tls_ca_file=None))
        outcome = await output.send(ecs(c21_records()))
        await output.aclose()
        assert isinstance(outcome, Retry) and "certificate verify failed" in outcome.reason.lower()
        assert rx.lines == []


async def test_an_idle_break_resends_only_what_was_acknowledged_within_the_window() -> None:
    first, second = c21_records()
    with TokenLineReceiver([TOKEN]) as rx:
        output = token_tcp_output("r7", token_settings(rx, resend_window=0.3))
        assert isinstance(await output.send(ecs([first])), Delivered)
        rx.wait_for_lines(1, WAIT)
        rx.reset_connections()  # right after the write: the receiver may have lost it
        await asyncio.sleep(0.05)  # the reset reaches us while idle (a reset seen mid-write is a Retry)
        assert isinstance(await output.send(ecs([second])), Delivered)
        got = rx.wait_for_lines(3, WAIT)
        assert ids_of([ln.payload for ln in got]) == [first.id, first.id, second.id]
        await asyncio.sleep(0.5)  # longer than the window: the receiver surely stored it
        rx.reset_connections()
        await asyncio.sleep(0.05)
        assert isinstance(await output.send(ecs([first])), Delivered)
        got = rx.wait_for_lines(4, WAIT)
        assert ids_of([ln.payload for ln in got])[3:] == [first.id]  # no resend of `second`
        assert isinstance(output, StreamOutput) and output.resent_bytes == len(ecs_json.encode(first)) + len(TOKEN) + 2
        await output.aclose()


# --- delivery through the real shipper ------------------------------------------------------------------


def event(body: bytes, n: int) -> Webhook:
    return Webhook(
        body=body,
        body_sha256=hashlib.sha256(body).hexdigest(),
        event_name="project_snapshot/v0",
        received_at=time.time(),
        transport_id=f"tid-{n}-{sign(body)[-8:]}",
    )


def many(n: int, tag: str) -> bytes:
    return snapshot_body([issue(f"SNYK-{tag}-{i}", description=f"Advisory {tag} {i}.\nSecond line.") for i in range(n)])


@dataclass
class Rig:
    buffer: SqliteBuffer
    expected: list[str]
    tasks: list[tuple[Shipper, asyncio.Task[None]]]

    async def start(self, output: Output, delivery: DeliveryConfig = FAST) -> Shipper:
        position = (await self.buffer.positions())[output.name]
        stream = RecordStream(
            self.buffer.reader(), position, delivery, ecs_json.encode, summary=False, budget=output.message_budget
        )
        shipper = Shipper(output, delivery, self.buffer, stream)
        self.tasks.append((shipper, asyncio.create_task(shipper.run())))
        return shipper

    async def add(self, count: int, tag: str) -> None:
        body = many(count, tag)
        await self.buffer.append(event(body, len(self.expected)))
        self.expected.extend(r.id for r in flatten_all(body))

    async def stop(self) -> None:
        for shipper, task in self.tasks:
            shipper.stop()
            await asyncio.wait_for(task, 5)
            await shipper.output.aclose()
            shipper.stream.close()
        self.tasks.clear()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    buffer = SqliteBuffer.open(tmp_path, outputs=["r7"], dedup_bodies=False)
    r = Rig(buffer, [], [])
    yield r
    await r.stop()
    await buffer.close()


async def until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("tls", [False, True])
async def test_token_tcp_delivers_everything_across_restarts_resets_and_a_crash(rig: Rig, pki: Pki, tls: bool) -> None:
    window = 0.5
    cert, key = (pki.cert_file, pki.key_file) if tls else (None, None)
    with TokenLineReceiver([TOKEN], cert_file=cert, key_file=key) as rx:
        output = token_tcp_output("r7", token_settings(rx, pki if tls else None, resend_window=window))

        def arrived() -> set[str]:
            return set(ids_of(rx.payloads()))

        shipper = await rig.start(output)
        await rig.add(40, "A")
        await until(lambda: len(rx.lines) >= 15)
        rx.reset_connections()  # mid-stream RST
        await until(lambda: len(arrived()) >= 30)
        rx.stop()  # outage: the shipper retries with backoff
        await rig.add(30, "B")
        await asyncio.sleep(0.3)
        rx.restart()
        await until(lambda: arrived() >= set(rig.expected))
        await asyncio.sleep(window + 0.3)  # from here on, nothing of A and B may come back
        # A crash that loses lines TCP acknowledged: the receiver stops reading, the shipper's
        # batches are acknowledged by its kernel (delivered, as far as TCP can tell), then the
        # receiver reads one line and crashes, discarding the rest.
        rx.pause_reading()
        delivered = shipper.status.delivered
        await rig.add(20, "C")
        await until(lambda: shipper.status.delivered == delivered + 20)
        rx.crash_after(1)
        rx.resume_reading()
        await until(lambda: rx.crashed)
        assert len(arrived() & set(rig.expected[-20:])) < 20, "the crash lost acknowledged lines"
        rx.restart()
        await rig.add(1, "D")  # the lines lost in the crash go out again first, with the next batch
        await until(lambda: arrived() >= set(rig.expected))
        lines, conns = rx.lines, {c.conn_id: c for c in rx.connections}
    assert rx.problems == [] or all(p.kind == "partial_line" for p in rx.problems)
    counts = Counter(ids_of([ln.payload for ln in lines]))
    assert set(counts) == set(rig.expected), "every record arrives at least once"
    # A duplicate is a record whose first copy reached a connection that broke at most `window`
    # seconds later (resent from memory) or during the batch in flight; byte-identical each time.
    first_seen: dict[str, Any] = {}
    payloads: dict[str, set[bytes]] = {}
    for line in lines:
        rid = orjson.loads(line.payload)["event"]["id"]
        first_seen.setdefault(rid, line)
        payloads.setdefault(rid, set()).add(line.payload)
    assert all(len(p) == 1 for p in payloads.values())
    for rid, n in counts.items():
        if n > 1:
            line = first_seen[rid]
            conn = conns[line.conn_id]
            assert conn.close_reason in ("reset", "stop", "crash"), (rid, conn)
            assert conn.closed is not None and conn.closed - line.arrival <= window + 0.2, (rid, conn)


async def test_webhook_delivers_everything_through_429_5xx_resets_and_an_outage(rig: Rig, pki: Pki) -> None:
    with WebhookReceiver([TOKEN], cert_file=pki.cert_file, key_file=pki.key_file) as rx:
        output = WebhookOutput("r7", webhook_settings(rx, pki, request_timeout=0.3))
        rx.fail(429, retry_after=1)
        rx.fail(503, times=2)
        rx.reset_next()
        rx.fail(500)
        started = time.monotonic()
        await rig.start(output)
        await rig.add(30, "A")
        await until(lambda: len(rx.events) >= 10)
        rx.stop()
        await rig.add(20, "B")
        await asyncio.sleep(0.3)
        rx.restart()
        rx.reset_next(2)
        rx.slow_next(0.6)  # stored, but the answer comes after the client gave up: a duplicate
        await until(lambda: set(ids_of(rx.event_bodies())) >= set(rig.expected))
        await until(lambda: any(r.fault == "slow 0.6s" for r in rx.requests))
        requests = rx.requests
    assert time.monotonic() - started >= 1.0, "Retry-After: 1 is a floor for the first retry"
    first_429 = next(r for r in requests if r.status == 429)
    retried = [r for r in requests if r.body == first_429.body and r.seq > first_429.seq]
    assert retried and retried[0].arrival - first_429.arrival >= 1.0
    counts = Counter(ids_of([r.body for r in requests if r.accepted]))
    assert set(counts) == set(rig.expected)
    # One record per request, and records answered 204 are not sent again: the only duplicate is
    # the request Rapid7 stored but answered too late, and it carries the same bytes.
    late = [r for r in requests if r.fault is not None and r.fault.startswith("slow")]
    duplicated = {rid for rid, n in counts.items() if n > 1}
    assert duplicated == set(ids_of([r.body for r in late if r.accepted]))
    assert len(duplicated) == 1 and max(counts.values()) == 2
    assert all(len(r.lines) == 1 for r in requests if r.accepted)
    assert {r.header("Content-Type") for r in requests if r.accepted} == {"application/json"}


async def test_webhook_unknown_token_pauses_and_keeps_the_records(rig: Rig, pki: Pki) -> None:
    with WebhookReceiver([OTHER_TOKEN], cert_file=pki.cert_file, key_file=pki.key_file) as rx:
        shipper = await rig.start(WebhookOutput("r7", webhook_settings(rx, pki)))
        await rig.add(3, "A")
        await until(lambda: shipper.status.paused is not None)
        first = len(rx.requests)
        await until(lambda: len(rx.requests) > first)  # probed again after pause_probe_interval
        assert rx.events == [] and all(r.status == 404 for r in rx.requests)
        assert shipper.status.paused is not None and "token" in shipper.status.paused
        assert TOKEN not in shipper.status.paused and "/v1/noformat/***" in shipper.status.paused
    assert (await rig.buffer.positions())["r7"].event_id <= 1, "paused: the cursor does not move"


async def test_collector_delivers_everything_across_rsyslog_restarts(rig: Rig, tmp_path: Path) -> None:
    with Rsyslog(tmp_path / "rsyslog", ["tcp_lf"]) as rx:
        settings = CollectorSettings(host="127.0.0.1", port=rx.ports["tcp_lf"], header="rfc5424", hostname="h1")
        await rig.start(collector_output("r7", settings))
        await rig.add(30, "A")
        await until(lambda: len(rx.messages()) >= 10)
        rx.restart()
        await rig.add(20, "B")
        rx.kill()  # a crash: whatever rsyslog had not written is gone
        await asyncio.sleep(0.2)
        rx.restart()
        await rig.add(10, "C")

        def got() -> list[str]:
            return [json.loads(m["msg"])["event"]["id"] for m in rx.messages()]

        await until(lambda: set(got()) >= set(rig.expected), timeout=15)
        assert set(got()) == set(rig.expected)


# --- collector: one frame per record (C-21) -------------------------------------------------------------


@pytest.mark.parametrize("receiver_class", [Rsyslog, SyslogNg])
@pytest.mark.parametrize("header", ["none", "rfc5424", "rfc3164"])
async def test_c21_collector_mode_one_record_is_one_frame(
    tmp_path: Path, receiver_class: type[SyslogReceiver], header: str
) -> None:
    records = c21_records()
    with receiver_class(tmp_path, ["tcp_lf", "udp"]) as rx:
        for transport, listener in (("tcp", "tcp_lf"), ("udp", "udp")):
            settings = CollectorSettings(
                host="127.0.0.1", port=rx.ports[listener], transport=transport, header=header, hostname="h1"
            )
            output = collector_output("r7", settings)
            assert isinstance(await output.send(ecs(records)), Delivered)
            await output.aclose()
        got = rx.wait_for_messages(4)
        await asyncio.sleep(0.2)
        assert len(rx.messages()) == 4, "no record split into several frames"
    for message, record in zip(got, records * 2, strict=True):
        text = message["raw"] if header == "none" else message["msg"]
        document = json.loads(text)
        assert document["event"]["id"] == record.id
    assert json.loads(got[0]["raw"] if header == "none" else got[0]["msg"])["vulnerability"]["description"] == (
        "line1\nline2"
    )
    if header != "none":
        assert all(m["hostname"] == "h1" and m["app_name"] == "snyk-forwarder" for m in got)


async def test_c21_collector_wire_bytes_are_one_lf_per_record() -> None:
    records = c21_records()
    received = bytearray()
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.extend(await reader.read())
        writer.close()
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    output = collector_output("r7", CollectorSettings(host="127.0.0.1", port=port))
    assert isinstance(await output.send(ecs(records)), Delivered)
    await output.aclose()
    await asyncio.wait_for(done.wait(), WAIT)
    server.close()
    assert bytes(received) == b"".join(ecs_json.encode(r) + b"\n" for r in records)


# --- webhook: the status table and the batching policy ------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (204, "ok"),
        (200, "ok"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
        (413, "too_large"),
        (401, "pause"),
        (403, "pause"),
        (404, "pause"),
        (301, "pause"),
        (400, "reject"),
        (422, "reject"),
    ],
)
def test_status_table(status: int, kind: str) -> None:
    assert classify(status, None, "u").kind == kind


def test_retry_after_seconds_and_dates() -> None:
    assert classify(429, "7", "u").after == 7.0
    assert classify(503, "Wed, 21 Oct 2015 07:28:00 GMT", "u").after == 0.0
    assert classify(503, "soon", "u").after is None
    assert classify(429, "999999", "u").after == 3600.0


def mock_output(handler: Callable[[httpx.Request], httpx.Response], **extra: Any) -> WebhookOutput:
    settings = WebhookSettings(token=Secret("inline", TOKEN), endpoint="https://rapid7.test", **extra)
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return WebhookOutput("r7", settings, client=client)


def body_id(request: httpx.Request) -> str:
    return str(orjson.loads(request.content)["event"]["id"])


async def test_a_retried_batch_skips_records_already_answered_204() -> None:
    records = flatten_all(many(5, "M"))
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(body_id(request))
        return httpx.Response(503 if len(seen) == 3 else 204)

    output = mock_output(handler, concurrency=1)
    assert isinstance(await output.send(ecs(records)), Retry)
    assert isinstance(await output.send(ecs(records)), Delivered)
    assert seen == [r.id for r in records[:3]] + [r.id for r in records[2:]]


async def test_413_rejects_a_lone_record_and_splits_a_multi_record_body() -> None:
    records = flatten_all(many(4, "M"))
    big = records[2].id

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(413 if big.encode() in request.content else 204)

    output = mock_output(handler, concurrency=1)
    outcome = await output.send(ecs(records))
    assert outcome == Reject("POST https://rapid7.test/v1/noformat/*** answered 413 (body too large)", indices=(2,))
    assert isinstance(await output.send(ecs(records[:2] + records[3:])), Delivered)
    grouped = mock_output(handler, records_per_request=2, concurrency=1)
    assert isinstance(await grouped.send(ecs(records)), Split)


async def test_400_dead_letters_that_record_and_the_rest_is_sent_on() -> None:
    records = flatten_all(many(3, "M"))
    refused = {records[1].id, records[2].id}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400 if body_id(request) in refused else 204)

    output = mock_output(handler, concurrency=1)
    outcome = await output.send(ecs(records))
    assert isinstance(outcome, Reject) and outcome.indices == (1,) and not outcome.others_delivered
    outcome = await output.send(ecs([records[0], records[2]]))  # what the shipper sends next
    assert isinstance(outcome, Reject) and outcome.indices == (1,) and outcome.others_delivered


async def test_a_refused_token_pauses_with_a_reason_that_does_not_show_it() -> None:
    outcome = await mock_output(lambda _request: httpx.Response(401)).send(ecs(c21_records()))
    assert isinstance(outcome, Pause) and "token" in outcome.reason and TOKEN not in outcome.reason


async def test_several_records_per_request_are_joined_by_lf() -> None:
    records = flatten_all(many(5, "M"))
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(204)

    assert isinstance(await mock_output(handler, records_per_request=2, concurrency=1).send(ecs(records)), Delivered)
    assert [len(b.split(b"\n")) for b in bodies] == [2, 2, 1]
    assert b"\n".join(bodies) == b"\n".join(ecs_json.encode(r) for r in records)


async def test_the_token_never_reaches_logs_or_reasons(pki: Pki, caplog: pytest.LogCaptureFixture, rig: Rig) -> None:
    caplog.set_level(logging.DEBUG)
    reasons: list[str] = []
    with WebhookReceiver([OTHER_TOKEN], cert_file=pki.cert_file, key_file=pki.key_file) as rx:
        output = WebhookOutput("r7", webhook_settings(rx, pki))
        for fault in (None, "reset", "stop"):
            if fault == "reset":
                rx.reset_next()
            if fault == "stop":
                rx.stop()
            outcome = await output.send(ecs(c21_records()))
            reasons.append(getattr(outcome, "reason", ""))
        await output.healthcheck() if rx.running else None
        await output.aclose()
    with TokenLineReceiver([TOKEN]) as trx:
        shipper = await rig.start(token_tcp_output("r7", token_settings(trx)))
        await rig.add(3, "A")
        await until(lambda: len(trx.lines) >= 3)
        trx.stop()
        await rig.add(1, "B")
        await until(lambda: shipper.status.last_error is not None)
        reasons.append(shipper.status.last_error or "")
    assert len([r for r in reasons if r]) == 4
    assert all(TOKEN not in r for r in reasons), reasons
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP Request: POST" in text and "/v1/noformat/***" in text, "httpx's request log is kept, redacted"
    assert TOKEN not in text and TOKEN not in caplog.text


async def test_webhook_healthcheck_connects_without_posting(pki: Pki) -> None:
    with WebhookReceiver([TOKEN], cert_file=pki.cert_file, key_file=pki.key_file) as rx:
        output = WebhookOutput("r7", webhook_settings(rx, pki))
        await output.healthcheck()
        await output.aclose()
        assert rx.requests == []


async def test_lines_waiting_to_be_resent_get_one_last_try_at_close() -> None:
    first, _ = c21_records()
    with TokenLineReceiver([TOKEN]) as rx:
        output = token_tcp_output("r7", token_settings(rx))
        assert isinstance(await output.send(ecs([first])), Delivered)
        rx.wait_for_lines(1, WAIT)
        rx.reset_connections()
        await until(lambda: output.connection.lost_at is not None)
        await output.aclose()  # no further batch came: the suspect line is written again now
        got = rx.wait_for_lines(2, WAIT)
    assert ids_of([ln.payload for ln in got]) == [first.id, first.id]
