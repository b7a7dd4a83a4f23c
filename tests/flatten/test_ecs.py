"""The ECS shape of flattened records (cases.md C-01, C-06, C-07, C-08, C-09)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from forwarder.formats import ecs_json
from tests.flatten.ecs_fields import ecs_fields, ecs_violations
from tests.helpers import BODY_A_SHA256, flatten_all, issue, leaf_paths, sample, snapshot_body

SAMPLES = ["body_a.json", "body_b.json", "snapshot_small.json", "snapshot_container.json", "snapshot_empty.json"]


def test_the_field_list_is_the_official_one() -> None:
    fields = ecs_fields()
    assert len(fields) > 2000
    assert fields["vulnerability.score.base"] == ("float", "")
    assert fields["event.category"] == ("keyword", "array")


@pytest.mark.parametrize("name", SAMPLES)
def test_every_record_of_every_sample_is_valid_ecs(name: str) -> None:
    records = flatten_all(sample(name), summary=True)
    assert records, "summary=True yields at least one record"
    for record in records:
        assert ecs_violations(record.document) == []


def test_c08_nested_objects_not_dotted_names() -> None:
    (record,) = flatten_all(sample("body_a.json"))
    doc = record.document
    assert doc["package"] == {"name": "lodash", "version": "4.17.15"}
    assert doc["vulnerability"]["severity"] == "high"
    assert doc["vulnerability"]["score"] == {"base": 7.3}
    paths = [p for p, _ in leaf_paths(doc)]
    assert len(paths) == len(set(paths))
    assert not any("." in key for key in _all_keys(doc))
    # no path is both a leaf and a parent
    assert not any(other.startswith(p + ".") for p in paths for other in paths)


def test_c06_null_and_absent_values_never_become_text() -> None:
    licence = json.loads(
        '{"id":"snyk:lic:npm:left-pad:WTFPL","issueType":"license","pkgName":"left-pad","pkgVersions":["1.3.0"],'
        '"issueData":{"id":"snyk:lic:npm:left-pad:WTFPL","title":"WTFPL license","severity":"medium",'
        '"cvssScore":null,"identifiers":{"CVE":[],"CWE":[]}}}'
    )
    bare_vuln = {"id": "SNYK-JS-BARE-1", "issueType": "vuln", "issueData": {"id": "SNYK-JS-BARE-1", "title": "t"}}
    body = snapshot_body([licence, bare_vuln], project={"name": "p", "hostname": None, "branch": None})
    records = flatten_all(body)
    assert len(records) == 2
    for record in records:
        doc = record.document
        assert "score" not in doc["vulnerability"]
        assert "host" not in doc
        for path, value in leaf_paths(doc):
            assert value not in ("", [], {}, None), path
            assert str(value).lower() not in ("none", "null", "nan"), path
        assert b"NaN" not in ecs_json.encode(record)


def test_c07_several_cves_and_cwes_stay_on_one_record_in_source_order() -> None:
    lodash = issue(
        "SNYK-JS-LODASH-567746",
        severity="high",
        cvssScore=7.4,
        identifiers={
            "CVE": ["CVE-2020-8203", "CVE-2021-23337"],
            "CWE": ["CWE-400", "CWE-1321"],
            "ALTERNATIVE": ["SNYK-JS-LODASH-590103"],
        },
    )
    (record,) = flatten_all(snapshot_body([lodash]))
    vuln = record.document["vulnerability"]
    assert vuln["id"] == ["CVE-2020-8203", "CVE-2021-23337"]
    assert vuln["enumeration"] == "CVE"
    assert record.document["snyk"]["issue"]["identifiers"] == {
        "cve": ["CVE-2020-8203", "CVE-2021-23337"],
        "cwe": ["CWE-400", "CWE-1321"],
        "alternative": ["SNYK-JS-LODASH-590103"],
    }


def test_c07_empty_cve_list_leaves_no_empty_array() -> None:
    (record,) = flatten_all(snapshot_body([issue("SNYK-JS-X-1", identifiers={"CVE": [], "CWE": ["CWE-79"]})]))
    assert record.document["vulnerability"]["id"] == ["SNYK-JS-X-1"]
    assert record.document["vulnerability"]["enumeration"] == "SNYK"
    assert "cve" not in record.document["snyk"]["issue"]["identifiers"]


def test_c01_body_b_title_is_kept_exactly_as_utf8() -> None:
    (record,) = flatten_all(sample("body_b.json"))
    assert record.document["snyk"]["issue"]["title"] == "Caf\u00e9 sandbox escape \U0001f692"
    line = ecs_json.encode(record)
    assert "Café sandbox escape 🚒".encode() in line
    assert bytes.fromhex("436166C3A9") in line and bytes.fromhex("F09F9A92") in line
    assert b"\\u00e9" not in line and "Ã©".encode() not in line


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2024-03-07T09:05:03Z", "2024-03-07T09:05:03.000Z"),
        ("2024-03-07T10:05:03.120+01:00", "2024-03-07T09:05:03.120Z"),
        ("2024-03-07T09:05:03.120000Z", "2024-03-07T09:05:03.120Z"),
    ],
)
def test_c09_timestamp_comes_from_x_snyk_timestamp_in_one_spelling(header: str, expected: str) -> None:
    (record,) = flatten_all(sample("body_a.json"), timestamp=header)
    assert record.document["@timestamp"] == expected


def test_c09_without_a_usable_timestamp_the_receive_time_is_used() -> None:
    (record,) = flatten_all(sample("body_a.json"), timestamp="not a time")
    assert record.document["@timestamp"] == "2024-03-07T09:05:03.120Z"  # stored() receives at 1709802303.120


@pytest.mark.parametrize(
    ("snyk_time", "expected"),
    [
        ("2017-05-15T06:02:45Z", "2017-05-15T06:02:45.000Z"),
        ("2018-10-29T09:50:54.014Z", "2018-10-29T09:50:54.014Z"),
        ("2019-12-03T11:40:45.866206Z", "2019-12-03T11:40:45.866Z"),
    ],
)
def test_c09_snyk_time_fields_in_all_three_shapes(snyk_time: str, expected: str) -> None:
    (record,) = flatten_all(snapshot_body([issue(publicationTime=snyk_time)]))
    assert record.document["snyk"]["issue"]["publication_time"] == expected


def test_the_records_carry_the_event_facts() -> None:
    (record,) = flatten_all(sample("body_a.json"))
    event = record.document["event"]
    assert event["kind"] == "alert"
    assert event["category"] == ["vulnerability"]
    assert event["type"] == ["info"]
    assert event["action"] == "introduced"
    assert event["id"] == record.id
    assert event["severity"] == 8
    assert event["created"] == "2024-03-07T09:05:03.120Z"
    assert record.document["vulnerability"]["report_id"] == BODY_A_SHA256
    assert record.document["organization"] == {"name": "Acme QA"}


def test_container_sample_maps_container_specifics() -> None:
    records = flatten_all(sample("snapshot_container.json"))
    assert [r.action for r in records] == ["introduced"] * 4 + ["resolved"]
    assert {r.severity for r in records} == {"critical", "high", "medium", "low"}
    doc = records[0].document
    assert doc["observer"]["product"] == "Snyk Container"
    assert doc["snyk"]["project"]["image"]["tag"]


def _all_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for key, item in value.items() for k in [key, *_all_keys(item)]]
    if isinstance(value, list):
        return [k for item in value for k in _all_keys(item)]
    return []


def test_encoded_line_is_one_line_of_compact_json() -> None:
    body = snapshot_body([issue(description="line1\r\nline2 uses key=value")])
    (record,) = flatten_all(body)
    line = ecs_json.encode(record)
    assert b"\n" not in line and b"\r" not in line
    assert orjson.loads(line)["vulnerability"]["description"] == "line1\r\nline2 uses key=value"
