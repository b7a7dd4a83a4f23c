"""CEF lines (cases.md C-01, C-06, C-07, C-10) and a round trip through a spec-following parser."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.formats.cef import KEYS, CefFormatter, escape_extension, escape_header
from tests.helpers import flatten_all, issue, sample, snapshot_body
from tests.support.cef_parser import parse

C10_LINE = (
    "CEF:0|Snyk|Snyk|1.0|SNYK-JS-EXAMPLE-2000002|Command Injection \\| via a=b\\\\c|8|"
    "msg=line1\\r\\nline2 uses key\\=value cs1Label=snykTitle cs1=Command Injection | via a\\=b\\\\c"
)


def c10_line() -> str:
    body = snapshot_body(
        [
            issue(
                "SNYK-JS-EXAMPLE-2000002",
                severity="high",
                title="Command Injection | via a=b\\c",
                description="line1\r\nline2 uses key=value",
            )
        ]
    )
    (record,) = flatten_all(body)
    return CefFormatter()(record).decode()


def test_c10_exact_bytes_header_and_extension_escaping() -> None:
    line = c10_line()
    assert line.startswith(C10_LINE + " rt=")
    assert "\r" not in line and "\n" not in line
    assert "\\\\=" not in line


def test_c10_a_spec_parser_reads_back_title_and_description() -> None:
    event = parse(c10_line())
    assert event.name == "Command Injection | via a=b\\c"
    assert event.extension["cs1"] == "Command Injection | via a=b\\c"
    assert event.extension["msg"] == "line1\r\nline2 uses key=value"
    assert event.severity == "8"


def test_c10_escaping_rules_in_isolation() -> None:
    assert escape_header("a|b\\c=d\r\ne\nf") == "a\\|b\\\\c=d e f"
    assert escape_extension("a|b\\c=d\r\ne") == "a|b\\\\c\\=d\\r\\ne"
    assert escape_extension("\\=") == "\\\\\\="


def test_c10_severity_bands() -> None:
    for severity, band in [("low", "3"), ("medium", "6"), ("high", "8"), ("critical", "10"), (None, "0")]:
        (record,) = flatten_all(snapshot_body([issue(severity=severity)]))
        assert parse(CefFormatter()(record).decode()).severity == band


def test_c01_title_is_raw_utf8() -> None:
    (record,) = flatten_all(sample("body_b.json"))
    line = CefFormatter()(record)
    assert bytes.fromhex("436166C3A9") in line and bytes.fromhex("F09F9A92") in line
    assert b"\\u00e9" not in line and b"?" not in line and "Ã©".encode() not in line
    assert parse(line.decode()).name == "Café sandbox escape 🚒"


def test_c06_no_empty_or_null_values() -> None:
    licence = json.loads(
        '{"id":"snyk:lic:npm:left-pad:WTFPL","issueType":"license","pkgName":"left-pad","pkgVersions":["1.3.0"],'
        '"issueData":{"id":"snyk:lic:npm:left-pad:WTFPL","title":"WTFPL license","severity":"medium",'
        '"cvssScore":null,"identifiers":{"CVE":[],"CWE":[]}}}'
    )
    bare = {"id": "SNYK-JS-BARE-1", "issueType": "vuln", "issueData": {"id": "SNYK-JS-BARE-1", "title": "t"}}
    body = snapshot_body([licence, bare], project={"name": "p", "hostname": None, "branch": None})
    first, second = (parse(CefFormatter()(r).decode()) for r in flatten_all(body))
    assert first.severity == "6"
    for event in (first, second):
        for key, value in event.extension.items():
            assert value.strip() and value.lower() not in ("none", "null", "nan"), key
        assert "cfp1" not in event.extension and "cs2" not in event.extension


def test_c07_several_cves_share_one_key() -> None:
    identifiers = {"CVE": ["CVE-2020-8203", "CVE-2021-23337"], "CWE": ["CWE-400", "CWE-1321"]}
    lodash = issue("SNYK-JS-LODASH-567746", cvssScore=7.4, identifiers=identifiers)
    (record,) = flatten_all(snapshot_body([lodash]))
    event = parse(CefFormatter()(record).decode())
    assert event.extension["cs2"] == "CVE-2020-8203,CVE-2021-23337"
    assert event.extension["cs2Label"] == "cve"
    assert event.extension["cs3"] == "CWE-400,CWE-1321"
    assert len(event.keys_in_order) == len(set(event.keys_in_order))
    assert event.extension["cfp1"] == "7.4"


def test_every_sample_record_uses_only_known_unique_keys() -> None:
    for name in ("snapshot_small.json", "snapshot_container.json", "body_a.json"):
        for record in flatten_all(sample(name), summary=True):
            event = parse(CefFormatter()(record).decode())
            assert set(event.keys_in_order) <= set(KEYS)
            assert event.extension["externalId"] == record.id
            assert len(event.extension["externalId"]) <= 40


def test_vendor_product_version_are_configurable_and_escaped() -> None:
    (record,) = flatten_all(sample("body_a.json"))
    line = CefFormatter("Acme|Sec", "Forwarder", "2.0")(record).decode()
    assert line.startswith("CEF:0|Acme\\|Sec|Forwarder|2.0|SNYK-JS-LODASH-567746|Prototype Pollution|8|")


free_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=200)


@settings(max_examples=300, deadline=None)
@given(title=free_text, description=free_text, package=free_text, project=free_text)
def test_any_unicode_round_trips_through_a_spec_parser(
    title: str, description: str, package: str, project: str
) -> None:
    data = {"id": "SNYK-X-1", "title": title, "severity": "high", "description": description}
    raw_issue = {"id": "SNYK-X-1", "issueType": "vuln", "pkgName": package, "pkgVersions": ["1.0"], "issueData": data}
    (record,) = flatten_all(snapshot_body([raw_issue], project={"name": project}))
    line = CefFormatter()(record).decode("utf-8")
    event = parse(line)
    doc = record.document
    expected_title = doc["snyk"]["issue"].get("title")
    if expected_title is not None and len(expected_title) <= 512:
        assert event.name == expected_title.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    if expected_title is not None and len(expected_title) <= 1023:
        assert event.extension["cs1"] == expected_title
    description_text = doc["vulnerability"].get("description")
    if description_text is not None and len(description_text) <= 1023:
        assert event.extension["msg"] == description_text
    package_name = doc.get("package", {}).get("name")
    if package_name is not None:
        assert event.extension["cs4"] == f"{package_name}@1.0"
    project_name = doc["snyk"].get("project", {}).get("name")
    if project_name is not None:
        assert event.extension["cs5"] == project_name
