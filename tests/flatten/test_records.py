"""Record numbering and deterministic ids (the buffer's cursors and the SIEM's dedup rely on them)."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.flatten import Snapshot, shape_problems
from tests.helpers import flatten_all, issue, leaf_paths, sample, snapshot_body, stored


def test_numbering_is_new_then_removed_then_summary() -> None:
    body = snapshot_body([issue("A"), issue("B")], [issue("C")])
    records = flatten_all(body, summary=True)
    assert [(r.position.index, r.action) for r in records] == [
        (0, "introduced"),
        (1, "introduced"),
        (2, "resolved"),
        (3, "summary"),
    ]


def test_summary_is_off_by_default_and_counts_when_on() -> None:
    body = sample("snapshot_small.json")
    assert [r.action for r in flatten_all(body)] == ["introduced", "introduced", "resolved"]
    summary = flatten_all(body, summary=True)[-1]
    assert summary.action == "summary"
    snap = summary.document["snyk"]["snapshot"]
    assert snap["new_issues"] == 2 and snap["resolved_issues"] == 1
    assert snap["issue_counts"] == {"low": 3, "medium": 5, "high": 2, "critical": 0}


def test_non_object_elements_keep_their_index_but_yield_nothing() -> None:
    body = snapshot_body([issue("A"), "junk", None, issue("B")])
    snapshot = Snapshot(stored(body), json.loads(body), summary=False)
    assert len(snapshot) == 4
    assert [snapshot.record(i) is None for i in range(4)] == [False, True, True, False]


def test_ids_depend_only_on_signed_content() -> None:
    body = sample("snapshot_small.json")
    first = [r.id for r in flatten_all(body, timestamp="2024-03-07T09:05:03Z")]
    again = [r.id for r in flatten_all(body, timestamp="2025-01-01T00:00:00Z")]
    assert first == again
    assert len(set(first)) == len(first)
    other = [r.id for r in flatten_all(body + b" ")]  # one more byte: another delivery
    assert not set(first) & set(other)


def test_the_same_issue_twice_in_one_snapshot_gets_two_ids() -> None:
    body = snapshot_body([issue("SAME"), issue("SAME")])
    ids = [r.id for r in flatten_all(body)]
    assert len(set(ids)) == 2


json_leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
issue_keys = st.sampled_from(
    ["id", "issueType", "pkgName", "pkgVersions", "isPatched", "isIgnored", "fixInfo", "priority", "priorityScore"]
)
data_keys = st.sampled_from(
    [
        "id",
        "title",
        "severity",
        "url",
        "description",
        "identifiers",
        "credit",
        "exploitMaturity",
        "semver",
        "publicationTime",
        "disclosureTime",
        "CVSSv3",
        "cvssScore",
        "language",
        "nearestFixedInVersion",
    ]
)


@st.composite
def hostile_issue(draw: st.DrawFn) -> Any:
    base = draw(st.dictionaries(issue_keys, json_values, max_size=9))
    if draw(st.booleans()):
        base["issueData"] = draw(st.dictionaries(data_keys, json_values, max_size=15))
    return base


@settings(max_examples=200, deadline=None)
@given(
    new=st.lists(hostile_issue() | json_values, max_size=4),
    removed=st.lists(hostile_issue(), max_size=3),
    project=json_values,
    org=json_values,
)
def test_any_payload_shape_flattens_without_crash_or_garbage(new: Any, removed: Any, project: Any, org: Any) -> None:
    body = json.dumps({"project": project, "org": org, "newIssues": new, "removedIssues": removed}).encode()
    for record in flatten_all(body, summary=True):
        for path, value in leaf_paths(record.document):
            assert value not in ("", [], {}, None), path
            if isinstance(value, float):
                assert math.isfinite(value), path


@pytest.mark.parametrize(
    ("payload", "problems"),
    [
        ({}, ["has neither newIssues nor removedIssues"]),
        ([1, 2], ["has neither newIssues nor removedIssues"]),
        ({"newIssues": "notalist"}, ["newIssues is not a list (str)"]),
        (
            {"newIssues": [1, "x", None, {}], "removedIssues": None},
            ["3 of 4 newIssues elements are not objects", "removedIssues is not a list (NoneType)"],
        ),
        ({"newIssues": [], "removedIssues": [{}]}, []),
        ({"removedIssues": []}, []),
    ],
)
def test_shape_problems_name_what_yields_no_records(payload: object, problems: list[str]) -> None:
    assert shape_problems(payload) == problems


@pytest.mark.parametrize(
    "name", ["snapshot_small.json", "snapshot_container.json", "snapshot_empty.json", "body_a.json"]
)
def test_the_shipped_samples_have_the_documented_shape(name: str) -> None:
    assert shape_problems(orjson.loads(sample(name))) == []
