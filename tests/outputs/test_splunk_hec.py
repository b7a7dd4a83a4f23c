"""The Splunk HEC output against the HEC double (tests/support/hec.py) over TLS.

Delivery cases drive the real ``Shipper`` + ``RecordStream`` + ``SqliteBuffer`` with scaled-down
timers, so "nothing lost, duplicates only where a reply was lost" is checked on the buffer's own
cursor and dead-letter table, not on the output alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import re
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from forwarder.backoff import Backoff
from forwarder.buffer import SqliteBuffer
from forwarder.config import parse_config
from forwarder.config.model import DeliveryConfig
from forwarder.config.reader import Table
from forwarder.errors import ConfigError, ConnectFailed, OutputError, ProtocolViolation, SendTimeout
from forwarder.formats import build_formatter, ecs_json
from forwarder.formats.cef import CefFormatter
from forwarder.formats.shorten import fit
from forwarder.outputs import OUTPUT_TYPES
from forwarder.outputs.splunk_hec import build
from forwarder.outputs.splunk_hec.client import HecOutput
from forwarder.outputs.splunk_hec.config import HecSettings, parse
from forwarder.outputs.splunk_hec.encode import HecEncoder, epoch_time
from forwarder.outputs.splunk_hec.status import MAX_RETRY_AFTER, HecReply, classify, parse_retry_after
from forwarder.records import RecordStream
from forwarder.shipper import Shipper
from forwarder.types import Delivered, Message, Outcome, Pause, Record, Reject, Retry, Split, Webhook
from tests.helpers import flatten_all, issue, leaf_paths, sample, snapshot_body
from tests.support.daemon import LocalCA
from tests.support.hec import (
    ACK_PATH,
    EVENT_PATHS,
    Close,
    HecReceiver,
    RecordedRequest,
    Reply,
    Reset,
    TokenSettings,
)

pytestmark = pytest.mark.anyio

TOKEN = "0b7e5c1a-3f2d-4e6b-8a9c-1d2e3f4a5b6c"  # the conventions' HEC token (cases.md C-15)
OTHER_TOKEN = "11111111-2222-3333-4444-555555555555"
TIMESTAMP = "2024-03-07T09:05:03.120Z"
SAMPLES = ("body_a.json", "body_b.json", "snapshot_small.json", "snapshot_container.json")
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
REPO = Path(__file__).resolve().parents[2]
# The shipper's timers, scaled down so the delivery cases run in seconds (C-17: base 0.05 s).
FAST = DeliveryConfig(
    batch_max_records=1000,
    batch_max_bytes=512 * 1024,
    batch_timeout=0.0,
    retry_initial_backoff=0.05,
    retry_max_backoff=0.5,
    pause_probe_interval=0.3,
)


Pki = LocalCA  # a CA and a server certificate for 127.0.0.1, ::1 and localhost


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return LocalCA(tmp_path_factory.mktemp("hec-pki"))


@contextlib.contextmanager
def hec(pki: Pki, tokens: dict[str, TokenSettings] | None = None, **options: Any) -> Iterator[HecReceiver]:
    receiver = HecReceiver(
        tokens if tokens is not None else {TOKEN: TokenSettings()},
        cert_file=pki.cert_file,
        key_file=pki.key_file,
        **options,
    )
    with receiver:
        yield receiver
    assert receiver.errors == [], "the HEC double itself failed"


@pytest.fixture
def receiver(pki: Pki) -> Iterator[HecReceiver]:
    with hec(pki) as r:
        yield r


@pytest.fixture
def ack_receiver(pki: Pki) -> Iterator[HecReceiver]:
    with hec(pki, {TOKEN: TokenSettings(use_ack=True)}) as r:
        yield r


def settings(receiver: HecReceiver, pki: Pki, base: Path | None = None, **keys: Any) -> HecSettings:
    """Parsed exactly as from ``[outputs.splunk]`` in a config file."""
    data: dict[str, Any] = {
        "endpoint": receiver.url,
        "token": TOKEN,
        "tls_ca_file": str(pki.ca_file),
        "host": "forwarder-01.example.com",
        "ack_poll_interval": 0.05,
        "request_timeout": 5,
        **keys,
    }
    return parse(Table(data, "outputs.splunk", base or pki.ca_file.parent))


@contextlib.asynccontextmanager
async def output_for(s: HecSettings) -> AsyncIterator[HecOutput]:
    out = build("splunk", s)
    try:
        yield out
    finally:
        await out.aclose()


def records(*issues: dict[str, Any]) -> list[Record]:
    return flatten_all(snapshot_body(list(issues)), timestamp=TIMESTAMP)


def messages(recs: Sequence[Record]) -> list[Message]:
    return [Message(r, ecs_json.encode(r)) for r in recs]


def three() -> list[Message]:
    return messages(records(issue("SNYK-R1"), issue("SNYK-R2"), issue("SNYK-R3")))


def event_posts(receiver: HecReceiver) -> list[RecordedRequest]:
    return [r for r in receiver.requests if r.path in EVENT_PATHS]


def ids(envelopes: Sequence[dict[str, Any]]) -> list[str]:
    return [e["event"]["event"]["id"] for e in envelopes]


def split_objects(body: bytes) -> tuple[list[Any], list[str]]:
    """The JSON values of a batch body and the text found between them."""
    decoder = json.JSONDecoder()
    text = body.decode()
    values: list[Any] = []
    gaps: list[str] = []
    pos = 0
    while pos < len(text):
        stripped = len(text) - len(text[pos:].lstrip())
        gaps.append(text[pos:stripped])
        if stripped >= len(text):
            break
        value, pos = decoder.raw_decode(text, stripped)
        values.append(value)
    return values, gaps


async def until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.01)


# --- the delivery rig: real buffer, stream and shipper -----------------------------------------------


def webhook(body: bytes, n: int = 0) -> Webhook:
    return Webhook(
        body=body,
        body_sha256=hashlib.sha256(body).hexdigest(),
        event_name="project_snapshot/v0",
        received_at=time.time(),
        transport_id=f"tid-{n}",
        snyk_timestamp=TIMESTAMP,
    )


class CountingOutput:
    """Wraps the HEC output to record when each attempt started and what it answered."""

    def __init__(self, inner: HecOutput) -> None:
        self.inner = inner
        self.name = inner.name
        self.attempts: list[tuple[float, int, Outcome]] = []

    async def send(self, batch: Sequence[Message]) -> Outcome:
        started = time.monotonic()
        outcome = await self.inner.send(batch)
        self.attempts.append((started, len(batch), outcome))
        return outcome

    def message_budget(self, record: Record) -> int:
        return self.inner.message_budget(record)

    async def healthcheck(self) -> None:
        await self.inner.healthcheck()

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Rig:
    buffer: SqliteBuffer
    running: list[tuple[Shipper, asyncio.Task[None]]] = field(default_factory=list)
    appended: int = 0

    async def start(self, s: HecSettings, delivery: DeliveryConfig = FAST) -> tuple[Shipper, CountingOutput]:
        output = CountingOutput(build("splunk", s))
        position = (await self.buffer.positions())["splunk"]
        stream = RecordStream(
            self.buffer.reader(),
            position,
            delivery,
            build_formatter(delivery),
            summary=False,
            budget=output.message_budget,
        )
        backoff = Backoff(delivery.retry_initial_backoff, delivery.retry_max_backoff)
        shipper = Shipper(output, delivery, self.buffer, stream, backoff=backoff)
        self.running.append((shipper, asyncio.create_task(shipper.run())))
        return shipper, output

    async def append(self, body: bytes) -> None:
        self.appended += 1
        await self.buffer.append(webhook(body, self.appended))

    async def stop(self) -> None:
        for shipper, task in self.running:
            shipper.stop()
            await asyncio.wait_for(task, 10)
            shipper.stream.close()
            await shipper.output.aclose()
        self.running.clear()

    def dead_letters(self) -> list[tuple[str, str, int]]:
        with contextlib.closing(sqlite3.connect(self.buffer.path)) as conn:
            return list(conn.execute("SELECT record_id, reason, attempts FROM dead_letters ORDER BY id"))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    buffer = SqliteBuffer.open(tmp_path / "state", outputs=["splunk"], dedup_bodies=False)
    r = Rig(buffer)
    try:
        yield r
    finally:
        await r.stop()
        await buffer.close()


# --- configuration -----------------------------------------------------------------------------------


def parse_table(data: dict[str, Any], tmp_path: Path) -> HecSettings:
    return parse(Table({"token": TOKEN, **data}, "outputs.splunk", tmp_path))


def test_defaults_follow_splunks_documentation(tmp_path: Path) -> None:
    s = parse_table({"endpoint": "splunk.example.com", "host": "fwd-01"}, tmp_path)
    assert s.url == "https://splunk.example.com:8088"
    assert (s.sourcetype, s.source, s.index, s.host) == ("snyk:vulnerability", "snyk-forwarder", None, "fwd-01")
    assert s.fields == ("severity", "action", "project", "org")
    assert (s.compression, s.compression_level) == ("gzip", 1)
    assert s.max_request_bytes == s.max_event_bytes == 1_000_000
    assert (s.ack, s.ack_timeout, s.ack_poll_interval, s.channel) == (False, 300.0, 10.0, None)
    assert (s.tls_verify, s.request_timeout, s.health_check_path) == (True, 30.0, "/services/collector/health")
    assert "0b7e5c1a" not in repr(s)
    delivery = OUTPUT_TYPES["splunk_hec"].delivery_defaults
    assert delivery.batch_max_bytes < s.max_request_bytes and delivery.batch_timeout == 1.0
    assert delivery.pause_probe_interval >= 60


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("https://splunk.example.com:8088", "https://splunk.example.com:8088"),
        ("splunk.example.com:443", "https://splunk.example.com:443"),
        ("http://10.0.0.5", "http://10.0.0.5:8088"),
        ("[::1]", "https://[::1]:8088"),
        ("https://lb.example.com/splunk/", "https://lb.example.com:8088/splunk"),
    ],
)
def test_endpoint_is_a_base_url_with_port_8088_by_default(tmp_path: Path, endpoint: str, url: str) -> None:
    assert parse_table({"endpoint": endpoint}, tmp_path).url == url


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"endpoint": "https://h:8088/services/collector/event"}, "endpoint", "base URL"),
        ({"endpoint": "ftp://h"}, "endpoint", "http:// or https://"),
        ({"endpoint": "https://u:p@h"}, "endpoint", "credentials"),
        ({"endpoint": "https://h:99999"}, "endpoint", "valid port"),
        ({"endpoint": "h", "channel": "not-a-guid"}, "channel", "GUID"),
        ({"endpoint": "http://h", "tls_verify": False}, "tls_verify", "https://"),
        ({"endpoint": "h", "compression": "none", "compression_level": 9}, "compression_level", "gzip"),
        ({"endpoint": "h", "compression": "brotli"}, "compression", "gzip, none"),
        ({"endpoint": "h", "ack_timeout": 5, "ack_poll_interval": 10}, "ack_poll_interval", "ack_timeout"),
        ({"endpoint": "h", "fields": ["severity", "cvss"]}, "fields", "severity"),
        ({"endpoint": "h", "token": "bad token"}, "token", "printable ASCII"),
        ({"endpoint": "h", "tls_client_cert": "/etc/hostname"}, "tls_client_key", "both"),
        ({"endpoint": "h", "health_check_path": "health"}, "health_check_path", "start with /"),
    ],
)
def test_config_errors_name_the_key_and_the_fix(tmp_path: Path, data: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_table(data, tmp_path)
    assert caught.value.key == f"outputs.splunk.{key}"
    assert words in str(caught.value) and "fix:" in str(caught.value)


def config_head(tmp_path: Path) -> str:
    return f'[listen]\nplain_http = true\n[webhook]\nsecret = "s3cret-s3cret"\n[state]\ndirectory = "{tmp_path}"\n'


def full_config(output: str, tmp_path: Path) -> str:
    return f"{config_head(tmp_path)}[outputs.splunk]\n{output}"


def test_registry_shared_delivery_settings_and_cross_checks(tmp_path: Path) -> None:
    config = parse_config(
        full_config(f'type = "splunk_hec"\nendpoint = "h"\ntoken = "{TOKEN}"', tmp_path), base_dir=tmp_path
    )
    assert config.outputs[0].delivery.batch_max_records == 1000
    text = f'type = "splunk_hec"\nendpoint = "h"\ntoken = "{TOKEN}"\nbatch_max_bytes = "2MB"'
    with pytest.raises(ConfigError, match=r"outputs\.splunk\.batch_max_bytes: is above max_request_bytes"):
        parse_config(full_config(text, tmp_path), base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"outputs\.splunk\.tokne: is not a known setting"):
        parse_config(
            full_config(f'type = "splunk_hec"\nendpoint = "h"\ntoken = "{TOKEN}"\ntokne = 1', tmp_path),
            base_dir=tmp_path,
        )
    cef = parse_config(
        full_config(f'type = "splunk_hec"\nendpoint = "h"\ntoken = "{TOKEN}"\nformat = "cef"', tmp_path),
        base_dir=tmp_path,
    )
    assert cef.outputs[0].settings.sourcetype == "snyk:vulnerability:cef"


def test_the_token_comes_from_the_environment_and_a_missing_one_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPLUNK_HEC_TOKEN", TOKEN)
    s = parse(Table({"endpoint": "h", "token": {"env": "SPLUNK_HEC_TOKEN"}}, "outputs.splunk", tmp_path))
    assert s.token.reveal() == TOKEN and s.token.source == "env SPLUNK_HEC_TOKEN"
    monkeypatch.delenv("SPLUNK_HEC_TOKEN")
    with pytest.raises(ConfigError, match=r"outputs\.splunk\.token\.env: environment variable SPLUNK_HEC_TOKEN"):
        parse(Table({"endpoint": "h", "token": {"env": "SPLUNK_HEC_TOKEN"}}, "outputs.splunk", tmp_path))
    with pytest.raises(ConfigError, match=r"outputs\.splunk\.token: is required"):
        parse(Table({"endpoint": "h"}, "outputs.splunk", tmp_path))


def test_the_commented_example_in_example_toml_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "config" / "example.toml").read_text()
    lines = text[text.index("# [outputs.splunk]") :].splitlines()
    block = lines[: next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))]
    example = "\n".join(line[2:] if line.startswith("# ") else line[1:] for line in block)
    example = re.sub(r'tls_ca_file = "[^"]*"', f'tls_ca_file = "{REPO / "pyproject.toml"}"', example)
    monkeypatch.setenv("SPLUNK_HEC_TOKEN", TOKEN)
    config = parse_config(config_head(tmp_path) + example, base_dir=tmp_path)
    (splunk,) = [o for o in config.outputs if o.type == "splunk_hec"]
    assert splunk.settings.token.reveal() == TOKEN


def test_splunk_content_names_only_fields_the_records_have() -> None:
    """Every ECS field config/splunk/ reads (evals, searches, dashboard) exists in real records."""
    cli_project = {"name": "acme/cli", "id": "0f3c2a51-7d4e-4c1b-9a8e-2b6f0c9d1e23", "type": "npm", "hostname": "b-07"}
    recs = [r for name in SAMPLES for r in flatten_all(sample(name), summary=True)]
    recs += flatten_all(snapshot_body([issue("SNYK-CLI-1")], project=cli_project))
    known = {p + "{}" if isinstance(v, list) else p for r in recs for p, v in leaf_paths(r.document)}
    used: set[str] = set()
    files = [f for f in (REPO / "config" / "splunk").rglob("*") if f.is_file() and f.suffix != ".md"]
    assert {f.name for f in files} >= {"props.conf", "eventtypes.conf", "tags.conf", "savedsearches.conf"}
    for path in files:
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            used |= set(re.findall(r"'([\w@][\w.@]*(?:\{\})?)'", line))
            used |= set(re.findall(r'\b([a-z_@]\w*(?:\.\w+)+(?:\{\})?)="', line))
            used |= set(re.findall(r"dedup (\w+(?:\.\w+)*)", line))
    assert {"vulnerability.severity", "snyk.issue.identifiers.cve{}", "event.id", "host.name"} <= used
    assert used - known == set()


# --- encoding (pure) ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("time_ms", "expected"),
    [
        (1709802303000, b"1709802303"),  # C-09: no fraction when the milliseconds are 0
        (1709802303120, b"1709802303.12"),
        (1709802303123, b"1709802303.123"),
        (1709802303100, b"1709802303.1"),
        (1709802303001, b"1709802303.001"),
    ],
)
def test_c09_time_is_epoch_seconds_with_milliseconds_as_a_number(time_ms: int, expected: bytes) -> None:
    assert epoch_time(time_ms) == expected


@given(st.integers(min_value=0, max_value=2**42))
def test_time_round_trips_and_never_has_more_than_three_decimals(time_ms: int) -> None:
    text = epoch_time(time_ms)
    value = json.loads(text)
    assert isinstance(value, int | float) and round(value * 1000) == time_ms
    whole, _, fraction = text.partition(b".")
    assert whole.isdigit() and len(fraction) <= 3 and not fraction.endswith(b"0")


def test_envelope_bytes(tmp_path: Path) -> None:
    s = parse_table({"endpoint": "h", "host": "fwd-01", "index": "snyk", "fields": ["severity", "org"]}, tmp_path)
    (record,) = records(issue("SNYK-JS-X-1", severity="critical"))
    body = ecs_json.encode(record)
    envelope = HecEncoder(s).envelope(Message(record, body))
    assert envelope == (
        b'{"time":1709802303.12,"host":"fwd-01","source":"snyk-forwarder","sourcetype":"snyk:vulnerability",'
        b'"index":"snyk","fields":{"severity":"critical","org":"Acme"},"event":' + body + b"}"
    )
    bare = HecEncoder(replace(s, index=None, fields=())).envelope(Message(record, body))
    assert b'"index"' not in bare and b'"fields"' not in bare and json.loads(bare)["event"] == record.document


def test_cef_and_leef_messages_travel_as_json_strings(tmp_path: Path) -> None:
    s = parse_table({"endpoint": "h", "format": "cef"}, tmp_path)
    (record,) = records(issue("SNYK-JS-X-1", description='a "quoted" line\nand a \\ backslash'))
    body = CefFormatter()(record)
    envelope = json.loads(HecEncoder(replace(s, format="cef")).envelope(Message(record, body)))
    assert envelope["event"] == body.decode() and envelope["event"].startswith("CEF:0|Snyk|")


@pytest.mark.parametrize("fmt", ["ecs-json", "cef"])
def test_the_budget_keeps_a_shortened_record_within_max_event_bytes(tmp_path: Path, fmt: str) -> None:
    s = replace(parse_table({"endpoint": "h", "max_event_bytes": 2048}, tmp_path), format=fmt)
    encoder = HecEncoder(s)
    (record,) = records(issue("SNYK-LONG", description='line "with" = and \\ ' * 2000))
    render = CefFormatter() if fmt == "cef" else ecs_json.encode
    fitted = fit(record, render, encoder.budget(record))
    assert fitted is not None
    body, shaped = fitted
    assert len(encoder.envelope(Message(shaped, body))) <= 2048
    assert shaped.document["snyk"]["shortened_fields"] == ["vulnerability.description"]


def test_indexed_fields_are_flat_strings_and_missing_ones_are_left_out(tmp_path: Path) -> None:
    s = parse_table({"endpoint": "h", "fields": ["severity", "action", "project", "org", "issue"]}, tmp_path)
    (record,) = records(issue("SNYK-JS-X-1", severity=None))
    envelope = json.loads(HecEncoder(s).envelope(Message(record, ecs_json.encode(record))))
    assert envelope["fields"] == {"action": "introduced", "project": "acme/api", "org": "Acme", "issue": "SNYK-JS-X-1"}


# --- C-14: the body ----------------------------------------------------------------------------------


async def test_c14_body_is_concatenated_objects_and_an_empty_queue_sends_nothing(
    rig: Rig, receiver: HecReceiver, pki: Pki
) -> None:
    s = settings(receiver, pki, compression="none")
    await rig.start(s, replace(FAST, batch_timeout=0.2))
    await rig.append(
        snapshot_body(
            [issue("SNYK-R1"), issue("SNYK-R2"), issue("SNYK-R3"), issue("SNYK-EMPTY", title="", description="")]
        )
    )
    await until(lambda: len(receiver.indexed) == 4, what="4 events")
    await asyncio.sleep(0.6)  # three batch timeouts with an empty queue
    (post,) = event_posts(receiver)
    assert post.body[:1] == b"{", "no enclosing array"
    values, gaps = split_objects(post.body)
    assert len(values) == 4 and all(gap.strip() == "" for gap in gaps), "objects back to back, no commas"
    for value in values:
        assert isinstance(value["time"], int | float) and not isinstance(value["time"], bool)
        assert isinstance(value["event"], dict) and value["event"]
    assert values[0]["time"] == 1709802303.12
    assert not {5, 6, 12, 13} & set(receiver.codes)


async def test_no_request_for_an_empty_batch_and_a_blank_event_is_refused_locally(
    receiver: HecReceiver, pki: Pki
) -> None:
    async with output_for(settings(receiver, pki)) as out:
        assert isinstance(await out.send([]), Delivered)
        batch = three()
        batch[1] = Message(batch[1].record, b"{}")
        outcome = await out.send(batch)
    assert isinstance(outcome, Reject) and outcome.indices == (1,) and not outcome.others_delivered
    assert "code 13" in outcome.reason
    assert receiver.requests == []


# --- §6: every answer a sender can meet --------------------------------------------------------------

ROWS: list[tuple[str, Reply | None, type, dict[str, Any]]] = [
    ("200 code 0", None, Delivered, {}),
    ("403 code 1", Reply(code=1), Pause, {"words": ("Token disabled", "code 1", "fix")}),
    ("401 code 2", Reply(code=2), Pause, {"words": ("Token is required", "code 2", "fix")}),
    ("401 code 3", Reply(code=3), Pause, {"words": ("Invalid authorization", "code 3", "fix")}),
    ("403 code 4", Reply(code=4), Pause, {"words": ("Invalid token", "code 4", "outputs.splunk.token")}),
    ("400 code 5", Reply(code=5), Split, {"words": ("No data", "bisecting")}),
    ("400 code 6 #1", Reply(code=6, extra={"invalid-event-number": 1}), Reject, {"indices": (1,)}),
    ("400 code 6", Reply(code=6), Split, {"words": ("Invalid data format", "code 6")}),
    ("400 code 7", Reply(code=7, extra={"invalid-event-number": 0}), Pause, {"words": ("Incorrect index", "index")}),
    ("500 code 8", Reply(code=8), Retry, {"words": ("Internal server error", "code 8")}),
    ("503 code 9", Reply(code=9), Retry, {"words": ("Server is busy", "code 9")}),
    ("400 code 10", Reply(code=10), Pause, {"words": ("Data channel is missing", "ack = true")}),
    ("400 code 11", Reply(code=11), Pause, {"words": ("Invalid data channel", "channel")}),
    ("400 code 12 #2", Reply(code=12, extra={"invalid-event-number": 2}), Reject, {"indices": (2,)}),
    ("400 code 13 #0", Reply(code=13, extra={"invalid-event-number": 0}), Reject, {"indices": (0,)}),
    ("400 code 14", Reply(code=14), Pause, {"words": ("ACK is disabled", "ack = false")}),
    ("400 code 15 #1", Reply(code=15, extra={"invalid-event-number": 1}), Reject, {"indices": (1,)}),
    ("400 code 16", Reply(code=16), Pause, {"words": ("Query string", "code 16")}),
    ("503 code 23", Reply(code=23), Retry, {}),
    ("429 code 26", Reply(code=26), Retry, {}),
    ("408", Reply(status=408), Retry, {}),
    ("429 Retry-After", Reply(status=429, headers={"Retry-After": "7"}), Retry, {"after": 7.0}),
    ("502", Reply(status=502), Retry, {"words": ("HTTP 502",)}),
    ("503 Retry-After", Reply(code=9, headers={"Retry-After": "3"}), Retry, {"after": 3.0}),
    ("504", Reply(status=504), Retry, {}),
    ("413", Reply(status=413, text="Content-Length too large"), Split, {"words": ("exceeds max request size",)}),
    ("404", Reply(status=404, text="Not found"), Pause, {"words": ("wrong endpoint path", "rolling restart")}),
    ("405", Reply(status=405), Pause, {"words": ("wrong endpoint path",)}),
    ("200 not HEC", Reply(status=200, text="<html>"), Pause, {"words": ("not a HEC reply",)}),
    ("418", Reply(status=418), Pause, {"words": ("fix",)}),
]


@pytest.mark.parametrize(("row", "reply", "kind", "checks"), ROWS, ids=[r[0] for r in ROWS])
async def test_status_code_table(
    receiver: HecReceiver, pki: Pki, row: str, reply: Reply | None, kind: type, checks: dict[str, Any]
) -> None:
    if reply is not None:
        receiver.script(lambda r: reply if r.path in EVENT_PATHS else None, times=1)
    async with output_for(settings(receiver, pki)) as out:
        outcome = await out.send(three())
    assert isinstance(outcome, kind), outcome
    reason = getattr(outcome, "reason", "")
    for word in checks.get("words", ()):
        assert word in reason
    assert TOKEN not in reason
    if "indices" in checks:
        assert isinstance(outcome, Reject)
        assert outcome.indices == checks["indices"] and not outcome.others_delivered
    if "after" in checks:
        assert isinstance(outcome, Retry) and outcome.after == checks["after"]
    assert len(receiver.requests) == 1


async def test_an_unnamed_bad_event_in_a_single_record_batch_is_rejected(receiver: HecReceiver, pki: Pki) -> None:
    receiver.fail_next(code=6)
    async with output_for(settings(receiver, pki)) as out:
        outcome = await out.send(three()[:1])
    assert isinstance(outcome, Reject) and outcome.indices is None and "Invalid data format" in outcome.reason


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(formatdate(now + 10, usegmt=True), now) == pytest.approx(10.0)
    assert parse_retry_after(formatdate(now - 10, usegmt=True), now) == 0.0
    assert parse_retry_after("86400") == MAX_RETRY_AFTER
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    reply = HecReply.parse(503, b"<html>busy</html>", "2")
    assert reply.code is None and "non-HEC reply" in reply.text and reply.retry_after == 2.0
    assert isinstance(classify(reply, batch_size=1, key="outputs.splunk"), Retry)


@pytest.mark.parametrize("fault", ["reset", "close", "hang", "refused"])
async def test_transport_failures_are_retried(receiver: HecReceiver, pki: Pki, fault: str) -> None:
    if fault == "reset":
        receiver.script(lambda _r: Reset(), times=1)
    elif fault == "close":
        receiver.script(lambda _r: Close(), times=1)
    elif fault == "hang":
        receiver.hang_next(seconds=2.0)
    else:
        receiver.stop()
    async with output_for(settings(receiver, pki, request_timeout=0.3)) as out:
        outcome = await out.send(three())
    assert isinstance(outcome, Retry) and receiver.url in outcome.reason, outcome
    if fault == "hang":
        assert "request_timeout" in outcome.reason


async def test_an_untrusted_certificate_pauses_with_the_fix(receiver: HecReceiver, pki: Pki, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with output_for(settings(receiver, pki, tls_ca_file=str(other))) as out:
        outcome = await out.send(three())
        with pytest.raises(ConnectFailed, match="tls_ca_file"):
            await out.healthcheck()
    assert isinstance(outcome, Pause) and "not trusted" in outcome.reason and "tls_ca_file" in outcome.reason
    async with output_for(settings(receiver, pki, tls_ca_file=str(other), tls_verify=False)) as out:
        assert isinstance(await out.send(three()), Delivered)


def mock_output(exc: Exception) -> HecOutput:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    s = parse(Table({"endpoint": "https://splunk.example.com", "token": TOKEN}, "outputs.splunk", REPO))
    return HecOutput("splunk", s, transport=httpx.MockTransport(handler))


def cert_error() -> httpx.ConnectError:
    error = httpx.ConnectError("certificate verify failed")
    error.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    return error


@pytest.mark.parametrize(
    ("exc", "ours", "outcome"),
    [
        (httpx.ConnectError("refused"), ConnectFailed, Retry),
        (httpx.ConnectTimeout("slow"), SendTimeout, Retry),
        (httpx.ReadTimeout("slow"), SendTimeout, Retry),
        (httpx.WriteTimeout("slow"), SendTimeout, Retry),
        (httpx.PoolTimeout("slow"), SendTimeout, Retry),
        (httpx.ReadError("reset"), ConnectFailed, Retry),
        (httpx.WriteError("broken pipe"), ConnectFailed, Retry),
        (httpx.CloseError("close"), ConnectFailed, Retry),
        (httpx.ProxyError("proxy"), ConnectFailed, Retry),
        (httpx.RemoteProtocolError("bad"), ProtocolViolation, Retry),
        (httpx.LocalProtocolError("bad"), ConnectFailed, Retry),
        (httpx.DecodingError("bad"), ProtocolViolation, Retry),
        (cert_error(), ConnectFailed, Pause),
    ],
)
async def test_every_httpx_exception_is_mapped(exc: Exception, ours: type, outcome: type) -> None:
    out = mock_output(exc)
    try:
        result = await out.send(three())
        with pytest.raises(ours) as caught:
            await out.healthcheck()
    finally:
        await out.aclose()
    assert isinstance(result, outcome)
    assert isinstance(caught.value, OutputError) and "https://splunk.example.com:8088" in str(caught.value)


# --- gzip, keep-alive, health ------------------------------------------------------------------------


@pytest.mark.parametrize(("compression", "level"), [("gzip", None), ("gzip", 1), ("none", None)])
async def test_gzip_bodies(receiver: HecReceiver, pki: Pki, compression: str, level: int | None) -> None:
    extra: dict[str, Any] = {"compression_level": level} if level else {}
    batch = messages(flatten_all(sample("snapshot_small.json"), timestamp=TIMESTAMP))
    async with output_for(settings(receiver, pki, compression=compression, **extra)) as out:
        assert isinstance(await out.send(batch), Delivered)
        assert isinstance(await out.send(batch), Delivered)
    first, second = receiver.requests
    assert first.connection == second.connection, "one kept-alive connection"
    if compression == "gzip":
        assert first.header("Content-Encoding") == "gzip" and first.raw_size < len(first.body)
    else:
        assert first.header("Content-Encoding") is None and first.raw_size == len(first.body)
    assert ids(receiver.events) == [m.record.id for m in batch] * 2
    assert receiver.indexed[0].sourcetype == "snyk:vulnerability"
    assert receiver.indexed[0].host == "forwarder-01.example.com"
    assert first.header("Authorization") == f"Splunk {TOKEN}"
    assert first.header("X-Splunk-Request-Channel") is None, "no channel without ack (none left pending in Splunk)"


async def test_healthcheck(pki: Pki) -> None:
    tokens = {TOKEN: TokenSettings(), OTHER_TOKEN: TokenSettings(disabled=True)}
    with hec(pki, tokens) as receiver:
        async with output_for(settings(receiver, pki)) as out:
            await out.healthcheck()
            receiver.set_health(18)
            with pytest.raises(
                OutputError, match=r"unhealthy: HEC is unhealthy, queues are full \(HTTP 503, code 18\)"
            ):
                await out.healthcheck()
            receiver.set_health(17)
        async with output_for(settings(receiver, pki, token=OTHER_TOKEN)) as out:
            with pytest.raises(OutputError, match=r"refused the token: Token disabled \(HTTP 400, code 22\)"):
                await out.healthcheck()
        async with output_for(settings(receiver, pki, token="99999999-0000-0000-0000-000000000000")) as out:
            with pytest.raises(OutputError, match=r"code 21\); set outputs\.splunk\.token"):
                await out.healthcheck()
        async with output_for(settings(receiver, pki, endpoint=receiver.url + "/wrong")) as out:
            with pytest.raises(OutputError, match="no HEC health endpoint"):
                await out.healthcheck()
        async with output_for(settings(receiver, pki, ack=True)) as out:
            with pytest.raises(OutputError, match="useACK"):
                await out.healthcheck()
        health = [r for r in receiver.requests if r.path.endswith("/health")]
        assert health[0].method == "GET" and health[0].header("Authorization") == f"Splunk {TOKEN}"
        receiver.stop()
        async with output_for(settings(receiver, pki)) as out:
            with pytest.raises(ConnectFailed, match="cannot connect to Splunk HEC"):
                await out.healthcheck()


async def test_a_load_balancers_sticky_cookie_is_returned(ack_receiver: HecReceiver, pki: Pki) -> None:
    # Acks need every request of a channel to reach the same indexer behind a load balancer.
    sticky = Reply(code=0, extra={"ackId": 0}, headers={"Set-Cookie": "AWSALB=indexer-2; Path=/"})
    ack_receiver.script(lambda r: sticky if r.path in EVENT_PATHS else None, times=1)
    ack_receiver.script(lambda r: Reply(status=200, extra={"acks": {"0": True}}) if r.path == ACK_PATH else None)
    async with output_for(settings(ack_receiver, pki, ack=True)) as out:
        assert isinstance(await out.send(three()), Delivered)
    event, ack = ack_receiver.requests
    assert event.header("Cookie") is None and ack.header("Cookie") == "AWSALB=indexer-2"


# --- C-15: auth scheme, channel, indexer acknowledgement ---------------------------------------------


async def test_c15_acknowledged_delivery(rig: Rig, ack_receiver: HecReceiver, pki: Pki) -> None:
    receiver = ack_receiver
    receiver.delay_ack(0, polls=1)  # false once, then true
    shipper, _out = await rig.start(settings(receiver, pki, ack=True))
    await rig.append(snapshot_body([issue("SNYK-R1"), issue("SNYK-R2")]))
    await until(lambda: shipper.status.delivered == 2, what="first batch acknowledged")
    await rig.append(snapshot_body([issue("SNYK-R3")]))
    await until(lambda: shipper.status.delivered == 3, what="second batch acknowledged")
    requests = receiver.requests
    assert [(r.path, r.reply) for r in requests] == [
        ("/services/collector/event", {"text": "Success", "code": 0, "ackId": 0}),
        (ACK_PATH, {"acks": {"0": False}}),
        (ACK_PATH, {"acks": {"0": True}}),
        ("/services/collector/event", {"text": "Success", "code": 0, "ackId": 1}),
        (ACK_PATH, {"acks": {"1": True}}),
    ]
    assert {r.header("Authorization") for r in requests} == {"Splunk 0b7e5c1a-3f2d-4e6b-8a9c-1d2e3f4a5b6c"}
    channels = {r.header("X-Splunk-Request-Channel") for r in requests}
    assert len(channels) == 1 and GUID.match(str(next(iter(channels))))
    assert [r.body for r in requests if r.path == ACK_PATH] == [b'{"acks":[0]}', b'{"acks":[0]}', b'{"acks":[1]}']
    assert len(receiver.acked_events) == 3 and len(set(ids(receiver.events))) == 3


async def test_c15_records_leave_the_buffer_only_after_true_and_are_resent_after_the_ack_timeout(
    rig: Rig, ack_receiver: HecReceiver, pki: Pki
) -> None:
    receiver = ack_receiver
    receiver.lose_ack(0)  # indexed, but the ack never turns true (e.g. the indexer restarted)
    shipper, out = await rig.start(settings(receiver, pki, ack=True, ack_timeout=0.5, ack_poll_interval=0.1))
    start = (await rig.buffer.positions())["splunk"]
    await rig.append(snapshot_body([issue("SNYK-R1"), issue("SNYK-R2")]))
    await until(lambda: len(event_posts(receiver)) == 1)
    for _ in range(4):  # while Splunk answers false, the cursor stays where it was
        await asyncio.sleep(0.08)
        assert (await rig.buffer.positions())["splunk"] == start and shipper.status.delivered == 0
    await until(lambda: shipper.status.delivered == 2, what="resent batch acknowledged")
    first, second = event_posts(receiver)
    assert second.time - first.time >= 0.5 and first.body == second.body
    (timed_out, *_rest) = [o for _t, _n, o in out.attempts]
    assert isinstance(timed_out, Retry) and "no indexer acknowledgement for ackId 0" in timed_out.reason
    # at-least-once: Splunk holds the first copy too, with the same record ids
    assert ids(receiver.lost_ack_events) == ids(receiver.acked_events)
    for _ in range(100):
        if (await rig.buffer.positions())["splunk"] != start:
            break
        await asyncio.sleep(0.01)
    assert (await rig.buffer.positions())["splunk"] != start


async def test_ack_without_use_ack_on_the_token_means_received_and_warns_once(
    receiver: HecReceiver, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "forwarder")
    async with output_for(settings(receiver, pki, ack=True)) as out:
        assert isinstance(await out.send(three()), Delivered)
        assert isinstance(await out.send(three()), Delivered)
    assert [r.path for r in receiver.requests] == ["/services/collector/event"] * 2
    warnings = [r for r in caplog.records if "indexer acknowledgement is on but Splunk gives none" in r.message]
    assert len(warnings) == 1


async def test_ack_polls_survive_a_busy_ack_service_and_use_a_fixed_channel(
    ack_receiver: HecReceiver, pki: Pki
) -> None:
    channel = "0f3b2a9c-6a55-4a63-9b4e-1d2c3b4a5f60"
    ack_receiver.fail_next(code=9, paths=[ACK_PATH])
    async with output_for(settings(ack_receiver, pki, ack=True, channel=channel)) as out:
        assert isinstance(await out.send(three()), Delivered)
        await out.healthcheck()  # its ack probe uses its own channel and consumes nothing
    assert [r.status for r in ack_receiver.requests] == [200, 503, 200, 200, 200]
    assert {r.header("X-Splunk-Request-Channel") for r in ack_receiver.requests[:3]} == {channel}
    assert ack_receiver.requests[4].header("X-Splunk-Request-Channel") != channel


@pytest.mark.parametrize(
    "refusal",
    [Reply(code=2), Reply(code=3), Reply(code=1), Reply(code=4), Reply(code=11), "unknown token"],
    ids=["401-2", "401-3", "403-1", "403-4", "400-11", "real-403-4"],
)
async def test_c15_configuration_refusals_keep_records_and_probe_slowly(
    rig: Rig, pki: Pki, refusal: Reply | str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "forwarder.shipper")
    with hec(pki) as receiver:
        if isinstance(refusal, Reply):
            receiver.script(lambda r: refusal if r.path in EVENT_PATHS else None, times=2)
            s = settings(receiver, pki)
        else:
            s = settings(receiver, pki, token=OTHER_TOKEN)
        shipper, out = await rig.start(s, replace(FAST, pause_probe_interval=0.15))
        await rig.append(snapshot_body([issue("SNYK-R1"), issue("SNYK-R2")]))
        await until(lambda: len(out.attempts) >= 2, what="two probes")
        assert shipper.status.paused is not None and shipper.status.delivered == 0
        assert "fix" in shipper.status.paused and TOKEN not in shipper.status.paused
        times = [t for t, _n, _o in out.attempts]
        assert all(b - a >= 0.15 for a, b in itertools.pairwise(times)), "no tight loop"
        if not isinstance(refusal, Reply):
            assert "Invalid token (HTTP 403, code 4)" in shipper.status.paused
            receiver.set_token(OTHER_TOKEN, TokenSettings())  # the operator fixes the token in Splunk
        await until(lambda: shipper.status.delivered == 2, what="delivery after the fix")
    assert shipper.status.paused is None
    paused_logs = [r for r in caplog.records if "paused" in r.message]
    assert len(paused_logs) == len([o for _t, _n, o in out.attempts if isinstance(o, Pause)])
    assert len(set(ids(receiver.events))) == len(receiver.events) == 2


# --- C-16: max request size --------------------------------------------------------------------------


async def test_c16_requests_respect_the_limit_and_the_oversize_record_is_sent_once(rig: Rig, pki: Pki) -> None:
    padding = "x" * 600
    bodies = []
    for snap in range(30):
        issues = [issue(f"SNYK-{snap}-{i}", description=padding) for i in range(100)]
        if snap == 15:
            issues.insert(50, issue("SNYK-HUGE", description="word " * 240_000))  # ~1.2 MB
        bodies.append(snapshot_body(issues))
    for body in bodies:
        await rig.append(body)
    with hec(pki, max_content_length=1_000_000) as receiver:
        # Without gzip: the double (like Splunk) limits bytes on the wire, and 1.2 MB of repeated words
        # would compress far below it. max_event_bytes is Splunk's maxEventSize, so nothing is shortened.
        s = settings(receiver, pki, compression="none", max_request_bytes=1_000_000, max_event_bytes="5MB")
        delivery = replace(FAST, batch_max_bytes=1_000_000, batch_max_records=1000)
        shipper, out = await rig.start(s, delivery)
        await until(lambda: shipper.status.delivered == 3000 and shipper.status.dead_lettered == 1, 20)
        posts = event_posts(receiver)
    multi = [p for p in posts if p.events is not None and len(p.events) > 1]
    assert multi and all(p.raw_size <= 1_000_000 for p in multi)
    (too_large,) = [p for p in posts if p.raw_size > 1_000_000]
    assert too_large.status == 413 and too_large.raw_size > 1_200_000
    assert receiver.statuses[413] == 1, "the oversize record is POSTed alone, once"
    delivered = ids(receiver.events)
    assert len(delivered) == len(set(delivered)) == 3000
    (dead,) = rig.dead_letters()
    assert "exceeds max request size" in dead[1]
    bodies_sent = [p.body for p in posts if p.status == 200]
    assert len(bodies_sent) == len(set(bodies_sent)), "the same bytes are never sent twice"
    splits = [o for _t, _n, o in out.attempts if isinstance(o, Split)]
    assert splits and all("exceeds max request size" in o.reason for o in splits)


# --- C-17: retries -----------------------------------------------------------------------------------


async def test_c17a_busy_is_retried_with_identical_bodies_and_growing_gaps(
    rig: Rig, receiver: HecReceiver, pki: Pki
) -> None:
    receiver.busy(times=2)
    shipper, _out = await rig.start(settings(receiver, pki))
    await rig.append(snapshot_body([issue("SNYK-R1"), issue("SNYK-R2"), issue("SNYK-R3")]))
    await until(lambda: shipper.status.delivered == 3)
    posts = event_posts(receiver)
    assert [p.code for p in posts] == [9, 9, 0]
    assert posts[0].body == posts[1].body == posts[2].body and len({p.raw_size for p in posts}) == 1
    assert posts[1].time - posts[0].time >= 0.025  # at least base/2
    assert posts[2].time - posts[1].time >= 0.05  # at least base
    assert len(set(ids(receiver.events))) == len(receiver.events) == 3


async def test_c17b_an_outage_is_backed_off_and_delivery_follows_the_recovery(
    rig: Rig, receiver: HecReceiver, pki: Pki
) -> None:
    # C-17b scaled by 1/40: 60 s → 1.5 s of refused connections, base 1 s → 25 ms, cap 60 s → 1.5 s.
    delivery = replace(FAST, retry_initial_backoff=0.025, retry_max_backoff=1.5)
    receiver.stop()
    shipper, out = await rig.start(settings(receiver, pki), delivery)
    await rig.append(snapshot_body([issue("SNYK-R1"), issue("SNYK-R2")]))
    await until(lambda: len(out.attempts) >= 1)
    await asyncio.sleep(1.5)
    during = len(out.attempts)
    receiver.start()
    recovered = time.monotonic()
    await until(lambda: shipper.status.delivered == 2, timeout=5)
    assert during <= 8, f"{during} attempts while the receiver was down"
    assert all(isinstance(o, Retry) and "cannot connect" in o.reason for _t, _n, o in out.attempts[:during])
    assert time.monotonic() - recovered <= 1.5 + 0.5, "delivery within one backoff interval of the recovery"
    assert len(ids(receiver.events)) == 2


async def test_c17c_a_poison_record_is_dead_lettered_and_the_rest_flows(
    rig: Rig, receiver: HecReceiver, pki: Pki
) -> None:
    receiver.poison("SNYK-R2")
    shipper, _out = await rig.start(settings(receiver, pki))
    await rig.append(snapshot_body([issue("SNYK-R1"), issue("SNYK-R2"), issue("SNYK-R3")]))
    await until(lambda: shipper.status.delivered == 2 and shipper.status.dead_lettered == 1)
    batch_posts = len(event_posts(receiver))
    assert batch_posts <= 4
    await rig.append(snapshot_body([issue("SNYK-R4")]))
    await until(lambda: shipper.status.delivered == 3)
    assert [e["event"]["snyk"]["issue"]["id"] for e in receiver.events] == ["SNYK-R1", "SNYK-R3", "SNYK-R4"]
    (dead,) = rig.dead_letters()
    assert "Invalid data format (HTTP 400, code 6)" in dead[1] and dead[2] == 1
    assert sum(b"SNYK-R2" in p.body for p in event_posts(receiver)) == 1, "R2 is never retried"
    assert len(event_posts(receiver)) == batch_posts + 1


async def test_c17d_retry_after_is_honoured(rig: Rig, receiver: HecReceiver, pki: Pki) -> None:
    receiver.fail_next(status=429, headers={"Retry-After": "1"})
    shipper, _out = await rig.start(settings(receiver, pki))
    await rig.append(snapshot_body([issue("SNYK-R1")]))
    await until(lambda: shipper.status.delivered == 1)
    first, second = event_posts(receiver)
    assert second.time - first.time >= 1.0


async def test_a_lost_reply_is_the_only_source_of_duplicates(rig: Rig, receiver: HecReceiver, pki: Pki) -> None:
    # Splunk indexes the batch but its reply comes after our request_timeout: the shipper cannot
    # know, sends again, and Splunk holds two copies with the same event.id (docs: at-least-once).
    receiver.delay_next(0.6)
    shipper, out = await rig.start(settings(receiver, pki, request_timeout=0.3))
    await rig.append(snapshot_body([issue("SNYK-R1"), issue("SNYK-R2")]))
    await until(lambda: shipper.status.delivered == 2)
    await until(lambda: len(receiver.events) == 4, what="the late copy")
    first, second = event_posts(receiver)
    assert first.body == second.body
    assert isinstance(out.attempts[0][2], Retry) and "request_timeout" in out.attempts[0][2].reason
    delivered = ids(receiver.events)
    assert sorted(delivered) == sorted([*set(delivered)] * 2), "each record twice, with the same id"
