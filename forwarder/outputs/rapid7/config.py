"""Settings of a ``rapid7`` output, validated once. One frozen dataclass per ``mode``.

* ``collector`` — an InsightIDR Collector event source listening on a port (Custom Logs / syslog);
* ``token_tcp`` — Log Search Token TCP: ``<log token> <record>`` lines, TLS by default;
* ``webhook`` — Log Search HTTP POST to ``/v1/noformat/<log token>``.

Facts and unknowns behind the defaults: ``docs/outputs/rapid7.md`` and the team's Rapid7 notes.
A setting of another mode is an error that names the mode it belongs to, so a half-edited table
never silently keeps working with a default.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from forwarder.config.reader import Table
from forwarder.config.secrets import Secret, resolve_secret
from forwarder.formats.syslog import FACILITIES
from forwarder.outputs.syslog.config import UDP_MAX_PAYLOAD, SyslogSettings

MODES = ("collector", "token_tcp", "webhook")
# Region codes with Log Search ingestion hosts (two third-party tools list them; the docs show us and eu).
REGIONS = ("us", "us2", "us3", "eu", "ca", "au", "ap")
# Rapid7's own Java client splits events above 65,536 characters; a byte limit of the same size is
# at least as strict. The server-side limit is not documented.
MAX_EVENT_BYTES = 65536
# https://docs.rapid7.com/insightops/token-tcp: TLS on 443 (Rapid7's Lambda forwarders use 20000),
# plain TCP on 80, 514 or 10000. Anything else at Rapid7's own hosts is a mistake that loses data
# silently (token TCP has no acknowledgement), so it is refused at start.
TOKEN_TLS_PORTS = (443, 20000)
TOKEN_PLAIN_PORTS = (80, 514, 10000)
RAPID7_DOMAIN = ".insight.rapid7.com"
_TOKEN = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_TOKEN_HINT = 'copy the token of the log (a UUID) from Log Search, e.g. token = { env = "RAPID7_LOG_TOKEN" }'  # noqa: S105

_STREAM = ("mode", "max_event_bytes", "connect_timeout", "send_timeout", "endpoint", "transport", "resend_window")
_STREAM_TLS = ("tls_ca_file", "tls_verify", "tls_server_name")
KEYS: dict[str, frozenset[str]] = {
    "collector": frozenset((*_STREAM, *_STREAM_TLS, "header", "hostname", "app_name", "facility")),
    "token_tcp": frozenset((*_STREAM, *_STREAM_TLS, "token", "region")),
    "webhook": frozenset(
        {"mode", "max_event_bytes", "connect_timeout", "token", "region", "endpoint", "records_per_request"}
        | {"concurrency", "request_timeout", "tls_ca_file", "tls_verify"}
    ),
}


@dataclass(frozen=True, slots=True)
class CollectorSettings:
    """One record per line (LF framing) to a Collector's listening event source."""

    host: str
    port: int
    transport: str = "tcp"  # tcp, tls or udp
    header: str = "none"  # none (the JSON line alone), rfc5424 or rfc3164
    hostname: str = field(default_factory=socket.getfqdn)
    app_name: str = "snyk-forwarder"
    facility: int = FACILITIES["local0"]
    max_event_bytes: int = MAX_EVENT_BYTES
    resend_window: float = 5.0
    tls_ca_file: Path | None = None
    tls_verify: bool = True
    tls_server_name: str | None = None
    connect_timeout: float = 10.0
    send_timeout: float = 30.0

    def syslog(self) -> SyslogSettings:
        """The syslog output's settings that produce exactly these frames (its encoder is reused)."""
        return SyslogSettings(
            host=self.host,
            port=self.port,
            transport=self.transport,
            framing="lf",  # whether Collectors accept octet counting is not documented; LF always works
            protocol="rfc3164" if self.header == "rfc3164" else "rfc5424",
            hostname=self.hostname,
            app_name=self.app_name,
            facility=self.facility,
            max_message_bytes=self.max_event_bytes,
            tls_ca_file=self.tls_ca_file,
            tls_verify=self.tls_verify,
            tls_server_name=self.tls_server_name,
            connect_timeout=self.connect_timeout,
            send_timeout=self.send_timeout,
        )


@dataclass(frozen=True, slots=True)
class TokenTcpSettings:
    """``<token> <record>`` + LF over one persistent TLS (or plain TCP) connection."""

    token: Secret
    host: str
    port: int
    transport: str = "tls"  # tls or tcp
    max_event_bytes: int = MAX_EVENT_BYTES
    resend_window: float = 5.0
    tls_ca_file: Path | None = None
    tls_verify: bool = True
    tls_server_name: str | None = None
    connect_timeout: float = 10.0
    send_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """``POST <endpoint>/v1/noformat/<token>``, ``records_per_request`` records per body."""

    token: Secret
    endpoint: str  # scheme://host[:port], no path
    records_per_request: int = 1
    concurrency: int = 4
    max_event_bytes: int = MAX_EVENT_BYTES
    tls_ca_file: Path | None = None
    tls_verify: bool = True
    connect_timeout: float = 10.0
    request_timeout: float = 30.0


Rapid7Settings = CollectorSettings | TokenTcpSettings | WebhookSettings


def parse(t: Table) -> Rapid7Settings:
    if not t.has("mode"):
        raise t.error(
            "mode",
            "is required",
            hint='choose mode = "collector" (an InsightIDR Collector port), "token_tcp" (Log Search token '
            'over TLS) or "webhook" (Log Search HTTP POST)',
        )
    mode = t.string("mode", choices=MODES)
    for key in sorted(set(t.data) - KEYS[mode]):
        owners = [m for m in MODES if key in KEYS[m]]
        if owners:
            raise t.error(
                key,
                f"does not apply to mode = {mode!r} (it is a setting of mode {' / '.join(owners)})",
                hint="remove it, or change mode",
            )
    if mode == "collector":
        return _collector(t)
    if mode == "token_tcp":
        return _token_tcp(t)
    return _webhook(t)


def _collector(t: Table) -> CollectorSettings:
    host, port = t.endpoint("endpoint")
    transport = t.string("transport", "tcp", choices=("tcp", "tls", "udp"))
    header = t.string("header", "none", choices=("none", "rfc5424", "rfc3164"))
    d = CollectorSettings(host=host, port=port)
    settings = CollectorSettings(
        host=host,
        port=port,
        transport=transport,
        header=header,
        hostname=t.string("hostname", d.hostname),
        app_name=t.string("app_name", d.app_name),
        facility=FACILITIES[t.string("facility", "local0", choices=FACILITIES)],
        max_event_bytes=_max_event_bytes(t, UDP_MAX_PAYLOAD if transport == "udp" else MAX_EVENT_BYTES),
        resend_window=t.duration("resend_window", d.resend_window, maximum=300),
        tls_ca_file=t.path_value("tls_ca_file", None),
        tls_verify=t.boolean("tls_verify", d.tls_verify),
        tls_server_name=t.string("tls_server_name", None),
        connect_timeout=t.duration("connect_timeout", d.connect_timeout, minimum=0.01),
        send_timeout=t.duration("send_timeout", d.send_timeout, minimum=0.01),
    )
    if header == "none":
        for key in ("hostname", "app_name", "facility"):
            if t.has(key):
                raise t.error(key, "only applies with a syslog header", hint='set header = "rfc5424" or remove it')
    if transport == "udp" and t.has("resend_window"):
        raise t.error("resend_window", "does not apply to UDP (nothing is acknowledged)", hint="remove it")
    _check_tls(t, transport, settings.tls_ca_file)
    return settings


def _token_tcp(t: Table) -> TokenTcpSettings:
    token = _token(t)
    transport = t.string("transport", "tls", choices=("tls", "tcp"))
    default_port = TOKEN_TLS_PORTS[0] if transport == "tls" else TOKEN_PLAIN_PORTS[0]
    if t.has("endpoint"):
        _not_both(t, "region", "endpoint")
        host, port = t.endpoint("endpoint", default_port=default_port)
    else:
        host, port = f"{_region(t)}.data.logs{RAPID7_DOMAIN}", default_port
    allowed = TOKEN_TLS_PORTS if transport == "tls" else TOKEN_PLAIN_PORTS
    if host.lower().endswith(RAPID7_DOMAIN) and port not in allowed:
        raise t.error(
            "endpoint",
            f"port {port} is not a documented Token {transport.upper()} port of Rapid7 "
            f"({', '.join(map(str, allowed))})",
            value=f"{host}:{port}",
            hint='use port 443 with transport = "tls" (the default), or 80, 514 or 10000 with transport = "tcp"',
        )
    d = TokenTcpSettings(token=token, host=host, port=port)
    settings = TokenTcpSettings(
        token=token,
        host=host,
        port=port,
        transport=transport,
        max_event_bytes=_max_event_bytes(t, MAX_EVENT_BYTES),
        resend_window=t.duration("resend_window", d.resend_window, maximum=300),
        tls_ca_file=t.path_value("tls_ca_file", None),
        tls_verify=t.boolean("tls_verify", d.tls_verify),
        tls_server_name=t.string("tls_server_name", None),
        connect_timeout=t.duration("connect_timeout", d.connect_timeout, minimum=0.01),
        send_timeout=t.duration("send_timeout", d.send_timeout, minimum=0.01),
    )
    _check_tls(t, transport, settings.tls_ca_file)
    return settings


def _webhook(t: Table) -> WebhookSettings:
    token = _token(t)
    if t.has("endpoint"):
        _not_both(t, "region", "endpoint")
        endpoint = _base_url(t)
    else:
        endpoint = f"https://{_region(t)}.webhook.logs{RAPID7_DOMAIN}"
    d = WebhookSettings(token=token, endpoint=endpoint)
    settings = WebhookSettings(
        token=token,
        endpoint=endpoint,
        records_per_request=t.integer("records_per_request", d.records_per_request, minimum=1, maximum=100),
        concurrency=t.integer("concurrency", d.concurrency, minimum=1, maximum=32),
        max_event_bytes=_max_event_bytes(t, MAX_EVENT_BYTES),
        tls_ca_file=t.path_value("tls_ca_file", None),
        tls_verify=t.boolean("tls_verify", d.tls_verify),
        connect_timeout=t.duration("connect_timeout", d.connect_timeout, minimum=0.01),
        request_timeout=t.duration("request_timeout", d.request_timeout, minimum=0.01),
    )
    if endpoint.startswith("http:"):
        for key in ("tls_ca_file", "tls_verify"):
            if t.has(key):
                raise t.error(key, "only applies to an https:// endpoint", hint="remove it")
    _check_tls(t, "tls", settings.tls_ca_file)
    return settings


# --- helpers ---------------------------------------------------------------------------------------------


def _token(t: Table) -> Secret:
    if not t.has("token"):
        raise t.error("token", "is required: Rapid7 files every line or request under its log token", hint=_TOKEN_HINT)
    secret = resolve_secret(t, "token", t.raw("token"))
    # The value is never echoed in an error: a mistyped token is still a secret.
    if not _TOKEN.fullmatch(secret.reveal().strip()):
        raise t.error("token", f"from {secret.source} is not a Rapid7 log token (a UUID)", hint=_TOKEN_HINT)
    if secret.reveal() != secret.reveal().strip():
        return Secret(secret.source, secret.reveal().strip())
    return secret


def _region(t: Table) -> Any:
    if not t.has("region"):
        raise t.error(
            "region",
            "is required (or endpoint): a token sent to another region's host is dropped without an error",
            hint="set region to the data region of your Rapid7 account: " + ", ".join(REGIONS),
        )
    return t.string("region", choices=REGIONS)


def _not_both(t: Table, a: str, b: str) -> None:
    if t.has(a):
        raise t.error(a, f"and {b} exclude each other", hint=f"keep {b} to override the host, or {a} alone")


def _max_event_bytes(t: Table, maximum: int) -> Any:
    return t.size("max_event_bytes", min(MAX_EVENT_BYTES, maximum), minimum=1024, maximum=maximum)


def _base_url(t: Table) -> str:
    value: str = t.string("endpoint")
    parts = urlsplit(value)
    hint = 'write endpoint = "https://host[:port]" (the path /v1/noformat/<token> is added)'
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise t.error("endpoint", "is not an http(s) base URL", value=value, hint=hint)
    if parts.path not in ("", "/"):
        raise t.error("endpoint", "must not have a path", value=value, hint=hint)
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise t.error(
            "endpoint",
            "uses plain http to another host: the log token is part of the URL and would cross the network "
            "in clear text",
            value=value,
            hint="use https://",
        )
    try:
        parts.port  # noqa: B018 - raises for a port outside 0-65535
    except ValueError:
        raise t.error("endpoint", "has an invalid port", value=value, hint=hint) from None
    return value.rstrip("/")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_tls(t: Table, transport: str, ca_file: Path | None) -> None:
    if transport != "tls":
        for key in _STREAM_TLS:
            if t.has(key):
                raise t.error(
                    key,
                    f'only applies with transport = "tls" (this output uses {transport})',
                    hint='set transport = "tls" or remove the key',
                )
    if ca_file is not None and not ca_file.is_file():
        raise t.error("tls_ca_file", f"file {ca_file} does not exist", hint="give the path of a PEM file")
