"""ECS record → one IBM QRadar LEEF 2.0 line.

    LEEF:2.0|Vendor|Product|Version|EventID|DelimiterCharacter|key=value<delim>key=value…

LEEF defines no escaping (IBM, "LEEF event components"), so values are made safe instead: the
delimiter character inside a value becomes a space, and CR/LF become the two-character sequences
``\\r``/``\\n`` (one record is always one line). The EventID is the action (``vulnerability-
introduced``, ``vulnerability-resolved``, ``snapshot-summary``): QRadar maps event ids to QIDs,
so it needs a small fixed set, not one per Snyk issue. ``devTime`` uses LEEF's default date format
(``MMM dd yyyy HH:mm:ss.SSS zzz``), so no ``devTimeFormat`` is needed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from forwarder.flatten.severity import SCORE
from forwarder.formats import fields
from forwarder.types import Record

EVENT_IDS = {
    "introduced": "vulnerability-introduced",
    "resolved": "vulnerability-resolved",
    "summary": "snapshot-summary",
}


def parse_delimiter(text: str) -> str | None:
    """``^``, ``\\t``, or a hex code ``0x09`` / ``x09`` → the delimiter character (LEEF 2.0 header rules)."""
    if len(text) == 1:
        return text if text not in "|=\r\n" else None
    lowered = text.lower()
    digits = lowered[2:] if lowered.startswith("0x") else lowered[1:] if lowered.startswith("x") else ""
    try:
        char = chr(int(digits, 16)) if digits else None
    except ValueError:
        return None
    return char if char is not None and char not in "|=\r\n" else None


def _dev_time(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return f"{datetime.fromtimestamp(seconds, UTC):%b %d %Y %H:%M:%S}.{millis:03d} UTC"


def attributes(record: Record) -> list[tuple[str, Any]]:
    d = record.document
    return [
        ("devTime", _dev_time(record.time_ms)),
        ("sev", SCORE.get(record.severity or "")),
        ("cat", fields.get(d, "snyk.issue.type") or ("summary" if record.action == "summary" else None)),
        ("recordId", fields.get(d, "event.id")),
        ("action", record.action),
        ("vulnId", fields.get(d, "snyk.issue.id")),
        ("title", fields.get(d, "snyk.issue.title")),
        ("severity", record.severity),
        ("cve", fields.joined(fields.get(d, "snyk.issue.identifiers.cve"))),
        ("cwe", fields.joined(fields.get(d, "snyk.issue.identifiers.cwe"))),
        ("cvss", fields.number(fields.get(d, "vulnerability.score.base"))),
        ("priorityScore", fields.number(fields.get(d, "snyk.priority.score"))),
        ("exploitMaturity", fields.get(d, "snyk.issue.exploit_maturity")),
        ("package", fields.package(d)),
        ("fixedIn", fields.get(d, "snyk.fix.nearest_fixed_in_version")),
        ("url", fields.get(d, "vulnerability.reference")),
        ("project", fields.get(d, "snyk.project.name")),
        ("projectId", fields.get(d, "snyk.project.id")),
        ("projectUrl", fields.get(d, "snyk.project.browse_url")),
        ("org", fields.get(d, "organization.name")),
        ("orgId", fields.get(d, "organization.id")),
        ("msg", fields.get(d, "vulnerability.description") or fields.get(d, "message")),
        ("shortened", fields.shortened(d)),
    ]


class LeefFormatter:
    def __init__(
        self, delimiter: str = "\t", vendor: str = "Snyk", product: str = "Snyk", version: str = "1.0"
    ) -> None:
        self._delimiter = delimiter
        shown = delimiter if delimiter.isprintable() and delimiter != " " else f"0x{ord(delimiter):02x}"
        self._prefix = f"LEEF:2.0|{vendor}|{product}|{version}|"
        self._shown = shown
        self._table = str.maketrans({delimiter: " ", "\r": "\\r", "\n": "\\n"})

    def __call__(self, record: Record) -> bytes:
        event_id = EVENT_IDS.get(record.action, record.action)
        pairs = (
            f"{key}={str(value).translate(self._table)}" for key, value in attributes(record) if value not in (None, "")
        )
        return f"{self._prefix}{event_id}|{self._shown}|{self._delimiter.join(pairs)}".encode()
