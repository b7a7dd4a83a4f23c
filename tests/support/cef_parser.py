"""A CEF parser written from the format's rules (not from our formatter), for round-trip tests.

Header: seven ``|``-separated fields after ``CEF:``; inside them ``\\|`` and ``\\\\`` are escapes.
Extension: ``key=value`` pairs separated by spaces, where a value may itself contain spaces, so a
pair ends where the next ``<space>key=`` with an *unescaped* ``=`` begins. Value escapes: ``\\\\``,
``\\=``, ``\\n``, ``\\r``; a backslash before anything else stands for itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_KEY = re.compile(r"[A-Za-z0-9_]+\Z")


@dataclass
class CefEvent:
    version: str
    vendor: str
    product: str
    device_version: str
    event_class: str
    name: str
    severity: str
    extension: dict[str, str]
    keys_in_order: list[str]


def _split_header(line: str) -> tuple[list[str], str]:
    fields: list[str] = []
    current: list[str] = []
    i = 0
    while len(fields) < 7:
        if i >= len(line):
            raise ValueError("header has fewer than 8 fields")
        ch = line[i]
        if ch == "\\" and i + 1 < len(line) and line[i + 1] in "|\\":
            current.append(line[i + 1])
            i += 2
            continue
        if ch == "|":
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    return fields, line[i:]


def _unescape_value(raw: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            out.append({"\\": "\\", "=": "=", "n": "\n", "r": "\r"}.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _unescaped_equals(text: str) -> list[int]:
    positions = []
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "=":
            positions.append(i)
        i += 1
    return positions


def parse(line: str) -> CefEvent:
    if not line.startswith("CEF:"):
        raise ValueError("not a CEF line")
    if "\n" in line or "\r" in line:
        raise ValueError("a CEF line holds no raw line break")
    fields, rest = _split_header(line[4:])
    pairs: list[tuple[str, int, int]] = []  # key, value start, key start
    for pos in _unescaped_equals(rest):
        start = rest.rfind(" ", 0, pos) + 1
        key = rest[start:pos]
        if not _KEY.match(key):
            raise ValueError(f"invalid key {key!r}")
        pairs.append((key, pos + 1, start))
    extension: dict[str, str] = {}
    order: list[str] = []
    for n, (key, value_start, _) in enumerate(pairs):
        value_end = pairs[n + 1][2] - 1 if n + 1 < len(pairs) else len(rest)
        if key in extension:
            raise ValueError(f"key {key} appears twice")
        extension[key] = _unescape_value(rest[value_start:value_end])
        order.append(key)
    return CefEvent(fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[6], extension, order)
