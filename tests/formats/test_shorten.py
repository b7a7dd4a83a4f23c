"""Records over a size limit are shortened field by field, never cut blindly."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.formats import ecs_json
from forwarder.formats.cef import CefFormatter
from forwarder.formats.shorten import fit
from forwarder.types import Record
from tests.helpers import flatten_all, issue, snapshot_body
from tests.support.cef_parser import parse


def long_record(description: str = "é" * 9000) -> Record:
    (record,) = flatten_all(snapshot_body([issue("SNYK-LONG-1", description=description)]))
    return record


def test_a_record_that_fits_is_untouched() -> None:
    (record,) = flatten_all(snapshot_body([issue()]))
    result = fit(record, ecs_json.encode, 100_000)
    assert result is not None
    body, same = result
    assert same is record and body == ecs_json.encode(record)


def test_the_description_is_shortened_and_the_json_stays_valid() -> None:
    record = long_record()
    result = fit(record, ecs_json.encode, 4000)
    assert result is not None
    body, shortened = result
    assert len(body) <= 4000
    document = orjson.loads(body)
    assert document["vulnerability"]["description"].endswith("…")
    assert document["snyk"]["shortened_fields"] == ["vulnerability.description"]
    assert document["tags"] == ["shortened"]
    assert document["event"]["id"] == shortened.id
    body.decode("utf-8")


def test_cef_stays_parseable_and_says_it_was_shortened() -> None:
    record = long_record("x " * 3000)
    result = fit(record, CefFormatter(), 1200)
    assert result is not None
    event = parse(result[0].decode())
    assert "shortened" in event.extension["reason"]


def test_an_impossible_limit_is_reported_not_forced() -> None:
    assert fit(long_record(), ecs_json.encode, 200) is None


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=0, max_size=6000), st.integers(min_value=1500, max_value=6000))
def test_any_text_and_limit_yield_valid_utf8_json_within_the_limit(text: str, limit: int) -> None:
    record = long_record(text or "x")
    result = fit(record, ecs_json.encode, limit)
    assert result is not None
    assert len(result[0]) <= limit
    orjson.loads(result[0])


def test_a_render_that_never_shrinks_gives_up_after_bounded_rounds() -> None:
    tags = [{"key": f"k{n}", "value": "v" * 300} for n in range(40)]  # more long strings than rounds
    (record,) = flatten_all(snapshot_body([issue()], project={"name": "p", "tags": tags}))
    assert fit(record, lambda _r: b"x" * 10_000, 5_000) is None
