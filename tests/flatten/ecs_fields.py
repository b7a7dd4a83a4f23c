"""Checks an emitted document against the official ECS field list (tests/fixtures/ecs-fields.csv, ECS 9.4.0)."""

from __future__ import annotations

import csv
import functools
import re
from typing import Any

from tests.helpers import FIXTURES, leaf_paths

_STRICT_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
_TEXT = {"keyword", "constant_keyword", "wildcard", "match_only_text", "text", "ip", "version"}
_INTEGER = {"long", "integer", "short", "byte", "unsigned_long"}
_FLOAT = {"float", "scaled_float", "half_float", "double"}
OWN_NAMESPACES = ("snyk.", "labels.")


@functools.cache
def ecs_fields() -> dict[str, tuple[str, str]]:
    with (FIXTURES / "ecs-fields.csv").open(newline="", encoding="utf-8") as fh:
        return {row["field"]: (row["type"], row["normalization"]) for row in csv.DictReader(fh)}


def _kind_ok(kind: str, value: Any) -> bool:
    if kind in _TEXT:
        return isinstance(value, str)
    if kind in _INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in _FLOAT:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "date":
        return isinstance(value, str) and bool(_STRICT_DATE_TIME.match(value))
    if kind == "boolean":
        return isinstance(value, bool)
    return False


def ecs_violations(document: dict[str, Any]) -> list[str]:
    """Every problem found; an empty list means the document is valid ECS plus our namespaces."""
    fields = ecs_fields()
    problems = []
    for path, value in leaf_paths(document):
        if path in fields:
            kind, normalization = fields[path]
            values = value if isinstance(value, list) else [value]
            if normalization == "array" and not isinstance(value, list):
                problems.append(f"{path}: ECS expects an array, got {value!r}")
            problems.extend(f"{path}: {v!r} is not an ECS {kind}" for v in values if not _kind_ok(kind, v))
        elif path.startswith("labels.") and fields.get("labels", ("",))[0] == "object":
            if not isinstance(value, str):
                problems.append(f"{path}: labels hold keywords, got {value!r}")
        elif not path.startswith(OWN_NAMESPACES):
            problems.append(f"{path}: not an ECS field and outside the snyk.* namespace")
    return problems
