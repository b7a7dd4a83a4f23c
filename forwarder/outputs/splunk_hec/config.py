"""Settings of a ``splunk_hec`` output, validated once.

Defaults follow Splunk's documentation (``shared/notes/splunk-hec.md``): HEC listens on 8088 over
TLS; a request of at most 1,000,000 bytes fits the smallest limit reported (Splunk Cloud); indexer
acknowledgement is polled every 10 s for up to 5 minutes.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from forwarder.config.reader import Table, parse_size
from forwarder.config.secrets import Secret, resolve_secret
from forwarder.outputs.tls import check_files

DEFAULT_PORT = 8088
EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
DEFAULT_HEALTH_PATH = "/services/collector/health"
# Splunk's vendor:product:type convention (notes §9). One per format, because props.conf parses
# each differently; the ECS JSON one is the one config/splunk/ ships search-time content for.
DEFAULT_SOURCETYPES = {
    "ecs-json": "snyk:vulnerability",
    "cef": "snyk:vulnerability:cef",
    "leef": "snyk:vulnerability:leef",
}
DEFAULT_SOURCE = "snyk-forwarder"
# The smallest per-request limit reported (Splunk Cloud, notes §5); Enterprise allows far more.
DEFAULT_MAX_REQUEST_BYTES = 1_000_000
# Indexed fields (``fields`` in the envelope): the name Splunk sees → where its value comes from.
INDEXED_FIELDS = {
    "severity": "vulnerability.severity",
    "action": "event.action",
    "project": "snyk.project.name",
    "project_id": "snyk.project.id",
    "org": "organization.name",
    "org_id": "organization.id",
    "issue": "snyk.issue.id",
    "dataset": "event.dataset",
}
DEFAULT_FIELDS = ("severity", "action", "project", "org")

_GUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_TLS_KEYS = ("tls_ca_file", "tls_verify", "tls_client_cert", "tls_client_key")


@dataclass(frozen=True, slots=True)
class HecSettings:
    url: str  # scheme://host:port[/prefix], no trailing slash
    token: Secret
    format: str = "ecs-json"
    index: str | None = None
    source: str = DEFAULT_SOURCE
    sourcetype: str = DEFAULT_SOURCETYPES["ecs-json"]
    host: str = field(default_factory=socket.getfqdn)
    fields: tuple[str, ...] = DEFAULT_FIELDS
    compression: str = "gzip"
    compression_level: int = 1
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_event_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    ack: bool = False
    ack_timeout: float = 300.0
    ack_poll_interval: float = 10.0
    channel: str | None = None
    tls_verify: bool = True
    tls_ca_file: Path | None = None
    tls_client_cert: Path | None = None
    tls_client_key: Path | None = None
    request_timeout: float = 30.0
    health_check_path: str = DEFAULT_HEALTH_PATH

    @property
    def tls(self) -> bool:
        return self.url.startswith("https://")


def parse(t: Table) -> HecSettings:
    url = _endpoint(t)
    token = resolve_secret(t, "token", t.raw("token"))
    # format is a delivery setting, read (and validated) before this function runs; the default
    # sourcetype and the event encoding depend on it.
    fmt = t.data.get("format", "ecs-json")
    fmt = fmt if fmt in DEFAULT_SOURCETYPES else "ecs-json"
    max_request = t.size("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES, minimum=4096)
    d = HecSettings(url=url, token=token, host="-")
    settings = HecSettings(
        url=url,
        token=token,
        format=fmt,
        index=t.string("index", None),
        source=t.string("source", d.source),
        sourcetype=t.string("sourcetype", DEFAULT_SOURCETYPES[fmt]),
        host=t.string("host", None) or socket.getfqdn(),
        fields=t.string_list("fields", d.fields, choices=INDEXED_FIELDS),
        compression=t.string("compression", d.compression, choices=("gzip", "none")),
        compression_level=t.integer("compression_level", d.compression_level, minimum=1, maximum=9),
        max_request_bytes=max_request,
        max_event_bytes=t.size("max_event_bytes", max_request, minimum=2048),
        ack=t.boolean("ack", d.ack),
        ack_timeout=t.duration("ack_timeout", d.ack_timeout, minimum=0.01),
        ack_poll_interval=t.duration("ack_poll_interval", d.ack_poll_interval, minimum=0.01),
        channel=t.string("channel", None),
        tls_verify=t.boolean("tls_verify", d.tls_verify),
        tls_ca_file=t.path_value("tls_ca_file", None),
        tls_client_cert=t.path_value("tls_client_cert", None),
        tls_client_key=t.path_value("tls_client_key", None),
        request_timeout=t.duration("request_timeout", d.request_timeout, minimum=0.01),
        health_check_path=t.string("health_check_path", d.health_check_path),
    )
    _check(t, settings)
    return settings


def _endpoint(t: Table) -> str:
    """``https://host:8088`` from ``https://host:8088``, ``host:8088``, ``host`` or ``[::1]:8088``.

    A path is kept as a prefix (HEC behind a reverse proxy); the HEC paths themselves are added
    by the output, so a URL that already ends in ``/services/collector…`` is refused.
    """
    value = t.string("endpoint")
    hint = 'write the base URL of HEC, e.g. endpoint = "https://splunk.example.com:8088"'
    text = value.strip()
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise t.error("endpoint", "is not a URL with a valid port", value=value, hint=hint) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise t.error("endpoint", "must be an http:// or https:// URL with a host name", value=value, hint=hint)
    if parts.username is not None or parts.password is not None:
        raise t.error(
            "endpoint", "must not hold credentials", hint='remove "user:password@" and put the HEC token in token'
        )
    if parts.query or parts.fragment:
        raise t.error("endpoint", "must not have a query or fragment", value=value, hint=hint)
    path = parts.path.rstrip("/")
    if "/services/collector" in path:
        raise t.error(
            "endpoint",
            "must be the base URL: the output adds /services/collector/event, /ack and /health itself",
            value=value,
            hint=f'remove the path, e.g. endpoint = "{parts.scheme}://{parts.netloc}"',
        )
    host = parts.hostname
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}:{port or DEFAULT_PORT}{path}"


def _check(t: Table, s: HecSettings) -> None:
    token = s.token.reveal()
    if not all(33 <= ord(c) <= 126 for c in token):
        raise t.error(
            "token",
            "must be printable ASCII without spaces (it is sent as `Authorization: Splunk <token>`)",
            hint="copy the token value (a GUID) from Splunk: Settings → Data inputs → HTTP Event Collector",
        )
    if s.channel is not None and not _GUID.match(s.channel):
        raise t.error(
            "channel",
            "must be a GUID such as 0f3b2a9c-6a55-4a63-9b4e-1d2c3b4a5f60 (Splunk answers code 11 otherwise)",
            value=s.channel,
            hint="remove it to use a new GUID per start, or generate one with `uuidgen`",
        )
    if not s.health_check_path.startswith("/"):
        raise t.error(
            "health_check_path", "must start with /", value=s.health_check_path, hint=f'e.g. "{DEFAULT_HEALTH_PATH}"'
        )
    if s.ack_poll_interval > s.ack_timeout:
        raise t.error(
            "ack_poll_interval",
            "must not exceed ack_timeout, or no acknowledgement would ever be polled",
            value=s.ack_poll_interval,
            hint=f"use at most {s.ack_timeout:g} seconds (Splunk suggests polling every 10 s for 5 minutes)",
        )
    if t.has("compression_level") and s.compression == "none":
        raise t.error("compression_level", 'only applies with compression = "gzip"', hint="remove it or turn gzip on")
    batch_bytes = parse_size(t.data.get("batch_max_bytes"))  # validated with the delivery settings
    if batch_bytes is not None and batch_bytes > s.max_request_bytes:
        raise t.error(
            "batch_max_bytes",
            f"is above max_request_bytes ({s.max_request_bytes}), so every full batch would have to be split",
            value=batch_bytes,
            hint="keep batch_max_bytes well under max_request_bytes: envelopes add about 200 bytes per record",
        )
    if not s.tls:
        for key in _TLS_KEYS:
            if t.has(key):
                raise t.error(
                    key,
                    "only applies to an https:// endpoint",
                    hint="use https:// (HEC's default, enableSSL = 1) or remove the key",
                )
    check_files(t, s, client_auth="requireClientCert = true")
