"""LEEF 2.0 lines for QRadar."""

from __future__ import annotations

import pytest

from forwarder.formats.leef import LeefFormatter, parse_delimiter
from tests.helpers import flatten_all, issue, sample, snapshot_body


def split(line: str) -> tuple[list[str], dict[str, str]]:
    parts = line.split("|", 6)
    delimiter = parts[5]
    char = chr(int(delimiter[2:], 16)) if delimiter.startswith("0x") else delimiter
    attrs = dict(pair.split("=", 1) for pair in parts[6].split(char))
    return parts[:6], attrs


def test_header_and_attributes() -> None:
    (record,) = flatten_all(sample("body_a.json"), timestamp="2024-03-07T09:05:03.120Z")
    line = LeefFormatter()(record).decode()
    header, attrs = split(line)
    assert header == ["LEEF:2.0", "Snyk", "Snyk", "1.0", "vulnerability-introduced", "0x09"]
    assert attrs["devTime"] == "Mar 07 2024 09:05:03.120 UTC"
    assert attrs["sev"] == "8" and attrs["cve"] == "CVE-2020-8203" and attrs["package"] == "lodash@4.17.15"
    assert attrs["recordId"] == record.id


def test_delimiter_and_line_breaks_never_leak_from_values() -> None:
    body = snapshot_body([issue(title="a^b", description="line1\r\nline2^x")])
    (record,) = flatten_all(body)
    line = LeefFormatter("^")(record).decode()
    assert "\n" not in line and "\r" not in line
    _, attrs = split(line)
    assert attrs["title"] == "a b"
    assert attrs["msg"] == "line1\\r\\nline2 x"


@pytest.mark.parametrize(("text", "char"), [("^", "^"), ("0x09", "\t"), ("x7C", None), ("|", None), ("ab", None)])
def test_delimiter_spellings(text: str, char: str | None) -> None:
    assert parse_delimiter(text) == char


@pytest.mark.parametrize("text", ["0xZZ", "xq1", "0x"])
def test_malformed_hex_delimiters_are_refused(text: str) -> None:
    assert parse_delimiter(text) is None


def test_build_formatter_honours_each_format_and_its_options() -> None:
    from forwarder.config.model import DeliveryConfig
    from forwarder.formats import FORMAT_NAMES, build_formatter

    (record,) = flatten_all(sample("body_a.json"))
    lines = {name: build_formatter(DeliveryConfig(format=name, leef_delimiter="^"))(record) for name in FORMAT_NAMES}
    assert lines["ecs-json"].startswith(b"{") and lines["cef"].startswith(b"CEF:0|")
    assert lines["leef"].startswith(b"LEEF:2.0|Snyk|Snyk|1.0|vulnerability-introduced|^|")
