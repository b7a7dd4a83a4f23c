"""RFC 5424 header bytes and octet-counting framing (cases.md conventions, C-13)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from forwarder.formats import syslog
from forwarder.outputs.syslog.config import SyslogSettings
from forwarder.outputs.syslog.encode import frame
from forwarder.types import Message, Position, Record

REFERENCE_MS = 1709802303120  # 2024-03-07T09:05:03.120Z


def test_the_reference_header_is_59_bytes_exactly() -> None:
    head = syslog.header(facility=16, severity=6, time_ms=REFERENCE_MS, hostname="ci-runner-07", app_name="snykfwd")
    whole = syslog.message(head, b"-", b"")
    assert whole == b"<134>1 2024-03-07T09:05:03.120Z ci-runner-07 snykfwd - - - "
    assert len(whole) == 59


def test_c13_host_with_spaces_and_empty_app_name() -> None:
    head = syslog.header(facility=16, severity=6, time_ms=REFERENCE_MS, hostname="Build Agent 07", app_name="")
    line = syslog.message(head, b"-", b"{}")
    assert line.startswith(b"<134>1 2024-03-07T09:05:03.120Z Build_Agent_07 - - - - ")
    assert len(line.split(b" ")) == 8  # 7 tokens ahead of MSG, then MSG


def test_c13_field_lengths_are_capped() -> None:
    head = syslog.header(
        facility=16, severity=6, time_ms=0, hostname="h" * 300, app_name="a" * 60, procid="p" * 200, msgid="m" * 40
    )
    _, _, host, app, procid, msgid = head.split(b" ")
    assert (len(host), len(app), len(procid), len(msgid)) == (255, 48, 128, 32)


def test_severity_follows_the_map_and_frames_are_octet_counted() -> None:
    settings = SyslogSettings(host="h", port=1, hostname="ci-runner-07", app_name="snykfwd")
    record = Record("id", Position(1, 0), REFERENCE_MS, "critical", "introduced", {})
    data = frame(settings, Message(record, b'{"a":"Caf\xc3\xa9"}'))
    length, _, rest = data.partition(b" ")
    assert int(length) == len(rest)
    assert rest.startswith(b"<130>1 ")  # local0 (16*8) + crit (2)
    assert rest.endswith(b' - - - {"a":"Caf\xc3\xa9"}')


@given(st.binary(max_size=3000))
def test_octet_count_always_equals_the_byte_count(payload: bytes) -> None:
    framed = syslog.octet_counted(payload)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) and rest == payload
    assert not length.startswith(b"0") or length == b"0"
