"""Syslog bytes: RFC 5424 header, STRUCTURED-DATA, RFC 3164, framing (cases.md C-11, C-12, C-13)."""

from __future__ import annotations

import re
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from forwarder.formats import syslog
from forwarder.formats.cef import CefFormatter
from forwarder.outputs.syslog.config import SyslogSettings
from forwarder.outputs.syslog.encode import SyslogEncoder
from forwarder.types import Message, Position, Record
from tests.helpers import flatten_all, issue, sample, snapshot_body

REFERENCE_MS = 1709802303120  # 2024-03-07T09:05:03.120Z
CASES = SyslogSettings(
    host="h",
    port=1,
    hostname="ci-runner-07",
    app_name="snykfwd",
    severity_map=dict.fromkeys(("critical", "high", "medium", "low", "none"), 6),
)


def record(severity: str | None = "high", document: dict[str, object] | None = None) -> Record:
    return Record("id", Position(1, 0), REFERENCE_MS, severity, "introduced", document or {})


def test_the_reference_header_is_59_bytes_exactly() -> None:
    head = SyslogEncoder(CASES).head(record())
    assert head == b"<134>1 2024-03-07T09:05:03.120Z ci-runner-07 snykfwd - - - "
    assert len(head) == 59


def test_c13_host_with_spaces_empty_app_name_and_nanoseconds() -> None:
    settings = replace(CASES, hostname="Build Agent 07", app_name="")
    line = SyslogEncoder(settings).head(record()) + b"{}"
    assert line == b"<134>1 2024-03-07T09:05:03.120Z Build_Agent_07 - - - - {}"
    assert len(line.split(b" ")) == 8  # 7 tokens ahead of MSG
    (nano,) = flatten_all(sample("body_a.json"), timestamp="2024-03-07T09:05:03.123456789Z")
    assert SyslogEncoder(CASES).head(nano).startswith(b"<134>1 2024-03-07T09:05:03.123Z ")
    (naive,) = flatten_all(sample("body_a.json"), timestamp="2024-03-07T09:05:03.120")
    assert SyslogEncoder(CASES).head(naive).startswith(b"<134>1 2024-03-07T09:05:03.120Z ")


def test_c13_field_lengths_are_capped() -> None:
    head = syslog.header(
        facility=16, severity=6, time_ms=0, hostname="h" * 300, app_name="a" * 60, procid="p" * 200, msgid="m" * 40
    )
    _, _, host, app, procid, msgid = head.split(b" ")
    assert (len(host), len(app), len(procid), len(msgid)) == (255, 48, 128, 32)


def test_c12_structured_data_escapes_exactly_three_characters() -> None:
    sd = syslog.structured_data("snyk@32473", [("project", 'acme/api "v2" [beta]\\legacy')])
    assert sd == b'[snyk@32473 project="acme/api \\"v2\\" [beta\\]\\\\legacy"]'
    assert syslog.param_name("team name=x") == "team_name_x"
    assert syslog.param_name('a"b]c' + "x" * 40) == "a_b_c" + "x" * 27


def test_structured_data_carries_record_facts_and_labels() -> None:
    body = snapshot_body(
        [issue("SNYK-1")],
        project={"name": 'acme/api "v2" [beta]\\legacy', "tags": [{"key": "team name=x", "value": "web"}]},
    )
    (rec,) = flatten_all(body)
    head = SyslogEncoder(replace(CASES, structured_data=True)).head(rec)
    assert b' project="acme/api \\"v2\\" [beta\\]\\\\legacy"' in head
    assert b' label_team_name_x="web"' in head
    assert re.match(rb'^<134>1 \S+ ci-runner-07 snykfwd - - \[snyk@32473 id="[0-9a-f]{32}" action="introduced"', head)


def test_bom_sits_right_before_msg_when_enabled() -> None:
    message = Message(record(), b"{}")
    plain = SyslogEncoder(CASES).frame(message)
    with_bom = SyslogEncoder(replace(CASES, bom=True)).frame(message)
    assert b"\xef\xbb\xbf" not in plain
    assert with_bom.endswith(b" - - - \xef\xbb\xbf{}")


def test_rfc3164_prefix() -> None:
    settings = replace(CASES, protocol="rfc3164", hostname="ci-runner-07.example.com", procid="4242")
    head = SyslogEncoder(settings).head(replace(record(), time_ms=1709283903000))  # 2024-03-01T09:05:03Z
    assert head == b"<134>Mar  1 09:05:03 ci-runner-07 snykfwd[4242]: "


def test_c11_lf_framing_escapes_line_breaks_and_ends_with_one_lf() -> None:
    body = snapshot_body(
        [issue("SNYK-JS-EXAMPLE-2000003", title="Example", severity="low", description="line1\nline2")]
    )
    (rec,) = flatten_all(body, timestamp="2024-03-07T09:05:03.120Z")
    message = Message(rec, CefFormatter()(rec))
    frame = SyslogEncoder(replace(CASES, framing="lf")).frame(message)
    assert frame.startswith(
        b"<134>1 2024-03-07T09:05:03.120Z ci-runner-07 snykfwd - - - CEF:0|Snyk|Snyk|1.0|SNYK-JS-EXAMPLE-2000003|Example|3|"  # noqa: E501 - exact bytes of C-11
    )
    assert b"msg=line1\\nline2" in frame
    assert frame.count(b"\n") == 1 and frame.endswith(b"\n") and b"\x00" not in frame
    raw = SyslogEncoder(replace(CASES, framing="lf")).frame(Message(rec, b"a\r\nb"))
    assert raw.endswith(b" a\\r\\nb\n")


def test_severity_follows_the_default_map() -> None:
    encoder = SyslogEncoder(SyslogSettings(host="h", port=1))
    pris = [encoder.head(record(s)).split(b">")[0] for s in ("critical", "high", "medium", "low", None)]
    assert pris == [b"<130", b"<131", b"<132", b"<133", b"<134"]


def test_budget_is_what_is_left_for_msg() -> None:
    encoder = SyslogEncoder(replace(CASES, max_message_bytes=1000))
    assert encoder.budget(record()) == 1000 - 59


@given(st.binary(max_size=3000))
def test_octet_count_always_equals_the_byte_count(payload: bytes) -> None:
    length, _, rest = syslog.octet_counted(payload).partition(b" ")
    assert int(length) == len(rest) and rest == payload
    assert not length.startswith(b"0") or length == b"0"


@given(st.text(max_size=400), st.sampled_from(["critical", "high", "medium", "low", None]))
def test_rfc5424_frames_of_any_record_are_length_prefixed_and_parse(title: str, severity: str | None) -> None:
    body = snapshot_body([issue("SNYK-X", title=title, severity=severity, description=title)])
    (rec,) = flatten_all(body)
    message = Message(rec, CefFormatter()(rec))
    frame = SyslogEncoder(replace(CASES, structured_data=True)).frame(message)
    length, _, rest = frame.partition(b" ")
    assert int(length) == len(rest)
    tokens = rest.split(b" ", 6)
    assert tokens[0].startswith(b"<") and tokens[0].endswith(b">1")
    rest.decode("utf-8")  # valid UTF-8 throughout
