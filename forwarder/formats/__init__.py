"""Record → message bytes, one function per format. Pure: values in, bytes out.

``FORMATS`` is the one registry an output's ``format = "…"`` setting is checked against.
"""

from __future__ import annotations

from collections.abc import Callable

from forwarder.formats import ecs_json
from forwarder.types import Record

Formatter = Callable[[Record], bytes]

FORMATS: dict[str, Formatter] = {
    "ecs-json": ecs_json.encode,
}
