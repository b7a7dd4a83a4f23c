"""Making a record fit a size limit without cutting it blindly.

A syslog receiver truncates an oversize message at a byte offset (rsyslog) or drops it (syslog-
ng), which breaks the JSON or CEF and can split a UTF-8 character. Instead, the longest
free-text strings of the document are shortened (the advisory description first, in practice),
each cut on a character boundary and ended with ``…``, and the record is rendered again; the
result is always complete, valid JSON / CEF / LEEF and valid UTF-8. The document records what
was cut in ``snyk.shortened_fields`` and ``tags: ["shortened"]`` so the SIEM can tell.

Pure: ``render`` turns a document into the final bytes whose size is limited.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from forwarder.types import Record

MARK = "…"
MIN_KEEP = 48  # characters kept of any shortened string: ids, names and URLs stay readable
MAX_ROUNDS = 32
# Never shortened: they identify the record, and formats read them as keys or header fields.
PROTECTED = frozenset({"event.id", "event.action", "snyk.issue.id", "@timestamp", "event.created"})


def fit(record: Record, render: Callable[[Record], bytes], limit: int) -> tuple[bytes, Record] | None:
    """``(bytes, record)`` within ``limit`` bytes — the record itself, or a shortened copy — or
    ``None`` when even shortening every long string cannot get there."""
    body = render(record)
    if len(body) <= limit:
        return body, record
    document = copy.deepcopy(record.document)
    cut: list[str] = []
    for _ in range(MAX_ROUNDS):
        found = _longest_string(document)
        if found is None:
            return None
        path, value = found
        excess = len(body) - limit
        keep = max(MIN_KEEP, len(value) - max(excess, len(value) // 8) - len(MARK))
        _set(document, path, value[:keep] + MARK)
        if ".".join(path) not in cut:
            cut.append(".".join(path))
        document.setdefault("snyk", {})["shortened_fields"] = list(cut)
        document["tags"] = ["shortened"]
        shortened = replace(record, document=document)
        body = render(shortened)
        if len(body) <= limit:
            return body, shortened
    return None


def _longest_string(document: dict[str, Any]) -> tuple[tuple[str, ...], str] | None:
    best: tuple[tuple[str, ...], str] | None = None
    stack: list[tuple[tuple[str, ...], Any]] = [((), document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend(((*path, str(k)), v) for k, v in value.items())
        elif (
            isinstance(value, str)
            and len(value) > MIN_KEEP + len(MARK)
            and ".".join(path) not in PROTECTED
            and (best is None or len(value) > len(best[1]))
        ):
            best = (path, value)
    return best


def _set(document: dict[str, Any], path: tuple[str, ...], value: str) -> None:
    target = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
