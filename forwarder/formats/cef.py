"""ECS record → one ArcSight CEF line.

    CEF:Version|Device Vendor|Device Product|Device Version|Device Event Class ID|Name|Severity|Extension

Escaping (CEF v25; acceptance case C-10):

- header fields: ``\\`` → ``\\\\`` and ``|`` → ``\\|``; ``=`` stays; CR, LF and CRLF become one space
  (a header field never holds a line break);
- extension values: ``\\`` → ``\\\\``, ``=`` → ``\\=``, CR → ``\\r``, LF → ``\\n``; ``|`` stays.
  The backslash is escaped first, so an escape is never escaped twice.

Keys are the short CEF dictionary names, each at most once per line; values are cut to the
dictionary's maximum lengths (``msg`` 1023, ``externalId`` 40, ``act`` 63 …) with a trailing ``…``.
Absent values are left out, never written empty or as ``None`` (C-06). Vendor data goes into the
labelled custom pairs: cs1 title, cs2 CVEs, cs3 CWEs, cs4 package, cs5 project, cs6 organization.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from forwarder.flatten.severity import SCORE
from forwarder.formats import fields
from forwarder.types import Record

ELLIPSIS = "…"


def escape_header(value: str) -> str:
    """Header field escaping; CRLF collapses to one space first. (Chained ``replace`` runs in C
    over the whole string at once, several times faster than ``str.translate`` with a table.)"""
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def escape_extension(value: str) -> str:
    """Backslash first, so an escape is never escaped twice."""
    return value.replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")


def clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + ELLIPSIS


def severity(level: str | None) -> int:
    """CEF band value: low 3, medium 6, high 8, critical 10; unknown 0 (never an empty field)."""
    return SCORE.get(level or "", 0)


Extractor = Callable[[dict[str, Any]], Any]
# (key, label of a custom pair or None, maximum length, extractor). Order is the order on the line:
# msg and the title first, so the most useful text survives a consumer that shows only the start.
# A labelled pair writes ``<key>Label=<label>`` before its value, and neither when the value is absent.
_PAIRS: tuple[tuple[str, str | None, int, Extractor], ...] = (
    ("msg", None, 1023, lambda d: fields.get(d, "vulnerability.description") or fields.get(d, "message")),
    ("cs1", "snykTitle", 1023, lambda d: fields.get(d, "snyk.issue.title")),
    ("rt", None, 64, lambda d: None),  # the record's time, filled in by extension()
    ("externalId", None, 40, lambda d: fields.get(d, "event.id")),
    ("act", None, 63, lambda d: fields.get(d, "event.action")),
    ("cat", None, 1023, lambda d: fields.get(d, "snyk.issue.type")),
    ("request", None, 1023, lambda d: fields.get(d, "vulnerability.reference")),
    ("cs2", "cve", 1023, lambda d: fields.joined(fields.get(d, "snyk.issue.identifiers.cve"))),
    ("cs3", "cwe", 1023, lambda d: fields.joined(fields.get(d, "snyk.issue.identifiers.cwe"))),
    ("cs4", "package", 1023, fields.package),
    ("cs5", "project", 1023, lambda d: fields.get(d, "snyk.project.name")),
    ("cs6", "organization", 1023, lambda d: fields.get(d, "organization.name")),
    ("cfp1", "cvssScore", 64, lambda d: fields.number(fields.get(d, "vulnerability.score.base"))),
    ("cn1", "priorityScore", 64, lambda d: fields.number(fields.get(d, "snyk.priority.score"))),
    ("flexString1", "exploitMaturity", 1023, lambda d: fields.get(d, "snyk.issue.exploit_maturity")),
    ("flexString2", "fixedIn", 1023, lambda d: fields.get(d, "snyk.fix.nearest_fixed_in_version")),
    ("deviceExternalId", None, 255, lambda d: fields.get(d, "snyk.project.id")),
    ("reason", None, 1023, fields.shortened),
)
KEYS = tuple(k for key, label, _, _ in _PAIRS for k in ((f"{key}Label", key) if label else (key,)))


def extension(record: Record) -> Iterable[tuple[str, str]]:
    document = record.document
    for key, label, limit, extract in _PAIRS:
        value = str(record.time_ms) if key == "rt" else extract(document)
        if value is None or value == "":
            continue
        if label is not None:
            yield f"{key}Label", label
        yield key, clip(str(value), limit)


class CefFormatter:
    """Built once per output from its settings; called once per record."""

    def __init__(self, vendor: str = "Snyk", product: str = "Snyk", version: str = "1.0") -> None:
        self._prefix = "CEF:0|" + "|".join(escape_header(v) for v in (vendor, product, version)) + "|"

    def __call__(self, record: Record) -> bytes:
        document = record.document
        event_class = fields.get(document, "snyk.issue.id") or (
            "snapshot-summary" if record.action == "summary" else "unknown"
        )
        name = fields.get(document, "snyk.issue.title") or fields.get(document, "message") or event_class
        head = f"{self._prefix}{escape_header(clip(str(event_class), 1023))}|{escape_header(clip(str(name), 512))}|"
        head += f"{severity(record.severity)}|"
        ext = " ".join(f"{key}={escape_extension(value)}" for key, value in extension(record))
        return (head + ext).encode("utf-8")
