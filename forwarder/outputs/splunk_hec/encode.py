"""Messages → one HEC ``/services/collector/event`` request body. Pure.

A batch is the events' envelopes placed back to back, one per line: ``{…}\\n{…}`` — no array,
no commas (acceptance case C-14; notes §4). Each envelope is::

    {"time":1709802303.12,"host":"…","source":"…","sourcetype":"…","index":"…",
     "fields":{"severity":"high",…},"event":<the record>}

``time`` is a JSON number of epoch seconds with at most three decimals, ``1709802303`` when the
milliseconds are 0 (C-09). ``event`` is the ECS document's JSON bytes spliced in as they are (no
second serialization), or, for CEF and LEEF, the message as a JSON string. ``index`` is left out
when not configured (the token's default index applies) and ``fields`` when it would be empty.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import orjson

from forwarder.formats import fields
from forwarder.outputs.splunk_hec.config import INDEXED_FIELDS, HecSettings
from forwarder.types import Message, Record

_TIME = b'{"time":'
_EVENT = b',"event":'
_END = b"}"
_SEPARATOR = b"\n"
# A CEF or LEEF message becomes a JSON string: escaping (\\ → \\\\, " → \\", a CEF "\\n" → "\\\\n")
# can make it up to about 1.5 times longer, so the budget for such messages keeps that margin.
_STRING_GROWTH = (2, 3)


def epoch_time(time_ms: int) -> bytes:
    """``1709802303120`` → ``b"1709802303.12"``; ``1709802303000`` → ``b"1709802303"`` (C-09)."""
    seconds, millis = divmod(max(0, time_ms), 1000)
    if not millis:
        return b"%d" % seconds
    return (b"%d.%03d" % (seconds, millis)).rstrip(b"0")


class HecEncoder:
    def __init__(self, settings: HecSettings) -> None:
        self.settings = settings
        s = settings
        meta: dict[str, str] = {"host": s.host, "source": s.source, "sourcetype": s.sourcetype}
        if s.index is not None:
            meta["index"] = s.index
        # ',"host":"…","source":"…",…' — the same for every record, serialized once.
        self._meta = b"," + orjson.dumps(meta)[1:-1]
        self._fields = tuple((name, INDEXED_FIELDS[name]) for name in s.fields)
        self._string_event = s.format != "ecs-json"
        # The head computed for a record's budget, kept for its envelope, which usually follows:
        # computing it twice per record was a measurable share of the shipping cost.
        self._heads: dict[str, tuple[Record, bytes]] = {}

    def envelope(self, message: Message) -> bytes:
        record = message.record
        cached = self._heads.pop(record.id, None)
        head = cached[1] if cached is not None and cached[0] is record else self._head(record)
        return b"".join((head, self._event(message.body), _END))

    def body(self, batch: Sequence[Message]) -> bytes:
        return _SEPARATOR.join([self.envelope(m) for m in batch])

    def budget(self, record: Record) -> int:
        """Bytes the formatted message may take so that its envelope fits ``max_event_bytes``."""
        head = self._head(record)
        if len(self._heads) > 100_000:  # budgeted but never sent (dead-lettered before sending): forget
            self._heads.clear()
        self._heads[record.id] = (record, head)
        room = self.settings.max_event_bytes - len(head) - len(_END)
        if self._string_event:
            room = (room - 2) * _STRING_GROWTH[0] // _STRING_GROWTH[1]  # the quotes, then escaping
        return max(0, room)

    def blank(self, message: Message) -> bool:
        """Whether the message would make an ``event`` Splunk calls blank (code 13) or invalid."""
        body = message.body.strip()
        if self._string_event:
            return not body
        return len(body) < 2 or body[:1] != b"{" or body == b"{}" or not body[1:-1].strip()

    def _head(self, record: Record) -> bytes:
        parts = [_TIME, epoch_time(record.time_ms), self._meta]
        indexed = self._indexed(record)
        if indexed:
            parts.append(b',"fields":')
            parts.append(orjson.dumps(indexed))
        parts.append(_EVENT)
        return b"".join(parts)

    def _indexed(self, record: Record) -> dict[str, str]:
        """Flat string values only: Splunk refuses nested or non-string ``fields`` (code 15)."""
        result: dict[str, str] = {}
        document = record.document
        for name, path in self._fields:
            value = fields.get(document, path)
            if isinstance(value, str) and value:
                result[name] = value
        return result

    def _event(self, body: bytes) -> bytes:
        if self._string_event:
            return orjson.dumps(body.decode("utf-8", "replace"))
        return body


def gzip(body: bytes, level: int) -> bytes:
    """A single gzip member (``Content-Encoding: gzip``)."""
    return zlib.compress(body, level, wbits=31)
