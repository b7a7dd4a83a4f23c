"""``syslog`` output: RFC 5424 over TCP with octet-counting framing (RFC 6587 §3.4.1)."""

from __future__ import annotations

from forwarder.config.model import DeliveryConfig
from forwarder.outputs.base import OutputType
from forwarder.outputs.syslog.client import SyslogOutput
from forwarder.outputs.syslog.config import SyslogSettings, parse


def build(name: str, settings: SyslogSettings) -> SyslogOutput:
    return SyslogOutput(name, settings)


TYPE = OutputType(
    parse=parse,
    build=build,
    formats=("ecs-json",),
    delivery_defaults=DeliveryConfig(batch_max_records=500, batch_max_bytes=1 << 20, batch_timeout=0.2),
)
