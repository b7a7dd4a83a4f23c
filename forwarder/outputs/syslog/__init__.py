"""``syslog`` output: RFC 5424 (or 3164) over UDP, TCP or TLS; octet counting or LF framing."""

from __future__ import annotations

from forwarder.config.model import DeliveryConfig
from forwarder.formats import FORMAT_NAMES
from forwarder.outputs.base import Output, OutputType
from forwarder.outputs.syslog.client import syslog_output
from forwarder.outputs.syslog.config import SyslogSettings, parse


def build(name: str, settings: SyslogSettings) -> Output:
    return syslog_output(name, settings)


TYPE = OutputType(
    parse=parse,
    build=build,
    formats=FORMAT_NAMES,
    delivery_defaults=DeliveryConfig(batch_max_records=500, batch_max_bytes=1 << 20, batch_timeout=0.2),
)
