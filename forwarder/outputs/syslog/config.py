"""Settings of a ``syslog`` output, validated once."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from forwarder.config.reader import Table
from forwarder.formats.syslog import FACILITIES, SEVERITIES
from forwarder.outputs.tls import check_files

# Snyk severity → syslog severity (docs/outputs/syslog.md). A finding never maps to emerg/alert (those page on-call for
# host failures); "none" (summaries, findings without severity) is info.
DEFAULT_SEVERITY_MAP = {"critical": 2, "high": 3, "medium": 4, "low": 5, "none": 6}
# What Debian's receivers accept by default (notes/syslog.md §7-§8): rsyslog keeps 8096 bytes of
# any message and splits or cuts the rest; RFC 3164 allows 1024 in all.
DEFAULT_MAX_MESSAGE_BYTES = {"rfc5424": 8096, "rfc3164": 1024}
UDP_MAX_PAYLOAD = 65507
# RFC 5612's documentation enterprise number, as in RFC 5424's own examples: receivers do not
# check it. Organisations with a Private Enterprise Number set their own.
DEFAULT_SD_ID = "snyk@32473"


@dataclass(frozen=True, slots=True)
class SyslogSettings:
    host: str
    port: int
    transport: str = "tcp"
    framing: str = "octet-counting"
    protocol: str = "rfc5424"
    hostname: str = field(default_factory=socket.getfqdn)
    app_name: str = "snyk-forwarder"
    procid: str = ""
    msgid: str = ""
    facility: int = FACILITIES["local0"]
    severity_map: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_SEVERITY_MAP))
    structured_data: bool = False
    sd_id: str = DEFAULT_SD_ID
    bom: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES["rfc5424"]
    tls_ca_file: Path | None = None
    tls_verify: bool = True
    tls_server_name: str | None = None
    tls_client_cert: Path | None = None
    tls_client_key: Path | None = None
    connect_timeout: float = 10.0
    send_timeout: float = 30.0
    # Frames acknowledged this long before a connection broke are sent again (forwarder.outputs.stream).
    resend_window: float = 5.0


def parse(t: Table) -> SyslogSettings:
    host, port = t.endpoint("endpoint")
    d = SyslogSettings(host=host, port=port)
    transport = t.string("transport", d.transport, choices=("udp", "tcp", "tls"))
    protocol = t.string("protocol", d.protocol, choices=("rfc5424", "rfc3164"))
    settings = SyslogSettings(
        host=host,
        port=port,
        transport=transport,
        framing=t.string("framing", d.framing, choices=("octet-counting", "lf")),
        protocol=protocol,
        hostname=t.string("hostname", d.hostname),
        app_name=t.string("app_name", d.app_name, allow_empty=True),
        procid=t.string("procid", d.procid, allow_empty=True),
        msgid=t.string("msgid", d.msgid, allow_empty=True),
        facility=FACILITIES[t.string("facility", "local0", choices=FACILITIES)],
        severity_map=_severity_map(t.table("severity_map")),
        structured_data=t.boolean("structured_data", d.structured_data),
        sd_id=t.string("sd_id", d.sd_id),
        bom=t.boolean("bom", d.bom),
        max_message_bytes=t.size(
            "max_message_bytes",
            DEFAULT_MAX_MESSAGE_BYTES[protocol],
            minimum=480,
            maximum=UDP_MAX_PAYLOAD if transport == "udp" else None,
        ),
        tls_ca_file=t.path_value("tls_ca_file", None),
        tls_verify=t.boolean("tls_verify", d.tls_verify),
        tls_server_name=t.string("tls_server_name", None),
        tls_client_cert=t.path_value("tls_client_cert", None),
        tls_client_key=t.path_value("tls_client_key", None),
        connect_timeout=t.duration("connect_timeout", d.connect_timeout, minimum=0.01),
        send_timeout=t.duration("send_timeout", d.send_timeout, minimum=0.01),
        resend_window=t.duration("resend_window", d.resend_window, maximum=300),
    )
    _check(t, settings)
    return settings


def _check(t: Table, s: SyslogSettings) -> None:
    if s.transport == "udp" and t.has("framing"):
        raise t.error("framing", "does not apply to UDP (one message per datagram)", hint="remove framing")
    if s.transport == "udp" and t.has("resend_window"):
        raise t.error("resend_window", "does not apply to UDP (nothing is acknowledged)", hint="remove it")
    tls_keys = ("tls_ca_file", "tls_verify", "tls_server_name", "tls_client_cert", "tls_client_key")
    if s.transport != "tls":
        for key in tls_keys:
            if t.has(key):
                raise t.error(
                    key,
                    f'only applies with transport = "tls" (this output uses {s.transport})',
                    hint='set transport = "tls" or remove the key',
                )
    check_files(t, s, client_auth="mutual TLS")
    if not _printable(s.sd_id) or "=" in s.sd_id or len(s.sd_id) > 32:
        raise t.error(
            "sd_id",
            'must be 1-32 printable ASCII characters without space, =, ] or "',
            value=s.sd_id,
            hint='e.g. "snyk@32473" with your Private Enterprise Number',
        )


def _printable(text: str) -> bool:
    return bool(text) and all(33 <= ord(c) <= 126 and c not in ' ="]' for c in text)


def _severity_map(t: Table) -> dict[str, int]:
    result = dict(DEFAULT_SEVERITY_MAP)
    for snyk_severity in DEFAULT_SEVERITY_MAP:
        if t.has(snyk_severity):
            result[snyk_severity] = SEVERITIES[t.string(snyk_severity, choices=SEVERITIES)]
    t.finish(known=DEFAULT_SEVERITY_MAP)
    return result
