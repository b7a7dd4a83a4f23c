"""ECS document → one line of compact JSON.

orjson writes UTF-8 as is (``é`` stays ``C3 A9``, never ``\\u00e9``), escapes control
characters (a newline in a description becomes the two bytes ``\\n``), so the result never
contains a raw LF and can be framed by newline anywhere.
"""

from __future__ import annotations

import orjson

from forwarder.types import Record


def encode(record: Record) -> bytes:
    return orjson.dumps(record.document)
