"""Record → message bytes, one formatter per format. Pure: values in, bytes out.

``FORMAT_NAMES`` is the one list an output's ``format = "…"`` setting is checked against;
:func:`build_formatter` turns an output's settings into the callable its shipper uses.
"""

from __future__ import annotations

from collections.abc import Callable

from forwarder.config.model import DeliveryConfig
from forwarder.formats import ecs_json
from forwarder.formats.cef import CefFormatter
from forwarder.formats.leef import LeefFormatter
from forwarder.types import Record

Formatter = Callable[[Record], bytes]

FORMAT_NAMES = ("ecs-json", "cef", "leef")


def build_formatter(delivery: DeliveryConfig) -> Formatter:
    if delivery.format == "cef":
        return CefFormatter(delivery.device_vendor, delivery.device_product, delivery.device_version)
    if delivery.format == "leef":
        return LeefFormatter(
            delivery.leef_delimiter, delivery.device_vendor, delivery.device_product, delivery.device_version
        )
    return ecs_json.encode
