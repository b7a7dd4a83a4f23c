"""Settings of a ``syslog`` output, validated once."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from forwarder.config.reader import Table
from forwarder.formats.syslog import FACILITIES, SEVERITIES

# Snyk severity → syslog severity. Documented in docs/outputs/syslog.md; a finding never maps to
# emerg/alert (those page on-call for host failures), and "no severity" (summaries) is info.
DEFAULT_SEVERITY_MAP = {"critical": 2, "high": 3, "medium": 4, "low": 5, "none": 6}


@dataclass(frozen=True, slots=True)
class SyslogSettings:
    host: str
    port: int
    transport: str = "tcp"
    hostname: str = field(default_factory=socket.getfqdn)
    app_name: str = "snyk-forwarder"
    procid: str = ""
    msgid: str = ""
    facility: int = FACILITIES["local0"]
    severity_map: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_SEVERITY_MAP))
    connect_timeout: float = 10.0
    send_timeout: float = 30.0


def parse(t: Table) -> SyslogSettings:
    host, port = t.endpoint("endpoint")
    d = SyslogSettings(host=host, port=port)
    facility = t.string("facility", "local0", choices=FACILITIES)
    return SyslogSettings(
        host=host,
        port=port,
        transport=t.string("transport", d.transport, choices=("tcp",)),
        hostname=t.string("hostname", d.hostname),
        app_name=t.string("app_name", d.app_name, allow_empty=True),
        procid=t.string("procid", d.procid, allow_empty=True),
        msgid=t.string("msgid", d.msgid, allow_empty=True),
        facility=FACILITIES[facility],
        severity_map=_severity_map(t.table("severity_map")),
        connect_timeout=t.duration("connect_timeout", d.connect_timeout, minimum=0.01),
        send_timeout=t.duration("send_timeout", d.send_timeout, minimum=0.01),
    )


def _severity_map(t: Table) -> dict[str, int]:
    result = dict(DEFAULT_SEVERITY_MAP)
    for snyk_severity in DEFAULT_SEVERITY_MAP:
        if t.has(snyk_severity):
            name = t.string(snyk_severity, choices=SEVERITIES)
            result[snyk_severity] = SEVERITIES[name]
    t.finish()
    return result
