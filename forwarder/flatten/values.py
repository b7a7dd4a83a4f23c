"""Defensive readers for Snyk payload values.

Snyk documents every field as optional and sends ``null`` for unscored findings (acceptance case C-06).
These helpers turn anything unexpected into ``None`` — never into the text "None", "null" or
"nan" — and :func:`compact` then drops the empty keys, so a SIEM never indexes garbage.
"""

from __future__ import annotations

import math
from typing import Any


def obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def text(value: Any) -> str | None:
    """A non-blank string, unchanged (not stripped: titles are shown as Snyk wrote them)."""
    if isinstance(value, str) and value and not value.isspace():
        return value
    return None


def ident(value: Any) -> str | None:
    """An identifier that may arrive as a number (Snyk's ``NSP`` ids are integers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return text(value)


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def idents(value: Any) -> list[str] | None:
    """A list of identifiers in source order, duplicates and blanks removed (``pkgVersions``
    repeats versions; ``credit`` has been seen as ``[""]``)."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        return None
    seen: dict[str, None] = {}
    for item in value:
        found = ident(item)
        if found is not None:
            seen.setdefault(found, None)
    return list(seen) or None


def pack(**fields: Any) -> dict[str, Any] | None:
    """An object of the fields that have a value, or ``None`` when none has one."""
    result = {key: value for key, value in fields.items() if value is not None}
    return result or None


def compact(value: Any) -> Any:
    """Drop ``None``, empty strings, empty lists and empty objects, recursively."""
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            kept = compact(item)
            if kept is not None:
                result[key] = kept
        return result or None
    if isinstance(value, list):
        items = [kept for kept in (compact(item) for item in value) if kept is not None]
        return items or None
    if isinstance(value, str) and not value:
        return None
    return value
