"""Time parsing and the one RFC 3339 spelling every record uses.

Snyk writes times with no fraction, 3 digits or 6 digits, and (for X-Snyk-Timestamp) any
offset. Records always carry UTC with exactly three fraction digits and a ``Z``:
``datetime.isoformat()`` would silently drop a zero fraction and keep naive times zoneless,
which strict parsers reject or shift (cases.md C-09).
"""

from __future__ import annotations

from datetime import UTC, datetime

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_ms(value: object) -> int | None:
    """Epoch milliseconds from an ISO 8601 / RFC 3339 string; naive times are taken as UTC.

    More than six fraction digits (nanoseconds) are cut to microseconds before parsing.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    candidate = value.strip()
    dot = candidate.find(".")
    if dot != -1:
        end = dot + 1
        while end < len(candidate) and candidate[end].isdigit():
            end += 1
        if end - dot - 1 > 6:
            candidate = candidate[: dot + 7] + candidate[end:]
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH  # integer arithmetic: float timestamps would turn .120 into .119
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def format_ms(ms: int) -> str:
    """``2024-03-07T09:05:03.120Z``: UTC, always three fraction digits."""
    seconds, millis = divmod(ms, 1000)
    moment = datetime.fromtimestamp(seconds, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


def normalized(value: object) -> str | None:
    """A Snyk time field in the record's spelling, or ``None`` when it does not parse."""
    ms = parse_ms(value)
    return None if ms is None else format_ms(ms)
