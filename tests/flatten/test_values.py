"""Edge cases of the defensive readers and time parsing."""

from __future__ import annotations

import json

import pytest

from forwarder.flatten import Snapshot
from forwarder.flatten.timestamps import format_ms, normalized, parse_ms
from forwarder.flatten.values import compact, idents, integer, number
from tests.helpers import flatten_all, issue, snapshot_body, stored


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-07T09:05:03.123456789Z", "2024-03-07T09:05:03.123Z"),  # nanoseconds are cut, not rejected
        ("2024-03-07T09:05:03", "2024-03-07T09:05:03.000Z"),  # naive means UTC
        ("2024-03-07T04:05:03.5-05:00", "2024-03-07T09:05:03.500Z"),
        ("2024-02-30T09:05:03Z", None),  # Snyk's shape, but no such day
        ("2024-03-07T09:05:03.5Z", "2024-03-07T09:05:03.500Z"),
        ("yesterday", None),
        ("", None),
    ],
)
def test_time_shapes(text: str, expected: str | None) -> None:
    assert normalized(text) == expected


def test_times_before_the_epoch_keep_three_digits() -> None:
    ms = parse_ms("1969-12-31T23:59:59.900Z")
    assert ms == -100
    assert format_ms(-100) == "1969-12-31T23:59:59.900Z"


def test_readers_reject_what_is_not_their_type() -> None:
    assert number(True) is None and number(float("nan")) is None and number("7.3") is None
    assert integer(3.0) == 3 and integer(3.5) is None and integer(False) is None
    assert idents(["1.0", "1.0", "", 2, None]) == ["1.0", "2"]
    assert idents("single") == ["single"] and idents({"a": 1}) is None
    assert compact({"a": {"b": [None, "", {}]}, "c": 0, "d": False}) == {"c": 0, "d": False}


def test_identifier_kinds_become_lower_case_strings_and_merge() -> None:
    body = snapshot_body([issue(identifiers={"NSP": [123], "CVE": ["CVE-1"], "cve": ["CVE-1", "CVE-2"], "": ["x"]})])
    (record,) = flatten_all(body)
    assert record.document["snyk"]["issue"]["identifiers"] == {"nsp": ["123"], "cve": ["CVE-1", "CVE-2"]}


def test_c12_project_tags_become_labels_with_safe_keys() -> None:
    tags = [{"key": "team name=x", "value": "storefront"}, {"key": "..", "value": "dropped"}, {"key": "k", "value": ""}]
    body = snapshot_body([issue()], project={"name": "p", "tags": tags})
    (record,) = flatten_all(body)
    assert record.document["labels"] == {"team_name_x": "storefront"}


def test_asking_past_the_last_record_is_an_error() -> None:
    body = snapshot_body([issue()])
    snapshot = Snapshot(stored(body), json.loads(body), summary=False)
    with pytest.raises(IndexError):
        snapshot.record(1)


def test_severity_words_and_the_minimum_filter() -> None:
    from forwarder.flatten.severity import at_least, normalize

    assert normalize(" High ") == "high" and normalize("urgent") is None and normalize(3) is None
    assert at_least("critical", "high") and not at_least("medium", "high")
    assert at_least(None, None) and not at_least(None, "low")
