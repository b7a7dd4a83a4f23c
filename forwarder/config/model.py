"""The validated, frozen configuration. Defaults live here and nowhere else.

Every value downstream code reads has already been checked by :mod:`forwarder.config.parse`;
nothing after start-up re-validates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forwarder.config.secrets import Secret

MiB = 1024 * 1024

SEVERITIES = ("low", "medium", "high", "critical")
ACTIONS = ("introduced", "resolved", "summary")


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """The public HTTPS webhook listener."""

    address: str = "127.0.0.1"
    port: int = 8443
    path: str = "/webhooks/snyk"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_self_signed: bool = False
    plain_http: bool = False
    # Real snapshots reach tens of MB (a base-image change fills both arrays), so the default is
    # far above web frameworks' usual 1 MB (acceptance case C-05).
    max_body_bytes: int = 64 * MiB
    # Bodies are held in memory until stored; this caps the sum over concurrent requests.
    max_inflight_body_bytes: int = 256 * MiB
    # From the first byte of a request (or the connection's opening) to the end of its headers:
    # Snyk sends its headers at once, so a client slower than this is a slowloris or a dead peer.
    header_timeout: float = 10.0
    # Snyk's headers are well under 2 KiB; this bounds what an unverified client can make us hold.
    max_header_bytes: int = 64 * 1024
    body_timeout: float = 120.0
    body_idle_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 1000
    drain_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    # One secret normally; two while rotating (Snyk cannot change a webhook's secret, so users
    # create a second webhook with the new secret before deleting the old one).
    secrets: tuple[Secret, ...]


@dataclass(frozen=True, slots=True)
class BufferConfig:
    directory: Path
    # A repeated X-Snyk-Transport-ID inside this window is acknowledged without storing twice.
    dedup_window: float = 7 * 86400.0
    # Delivered events are deleted once every output has them and they are this old.
    delivered_retention: float = 0.0
    maintenance_interval: float = 60.0
    # Also refuse a body that was already stored, whatever its transport id: a replayed delivery,
    # or the same event arriving through both webhooks during secret rotation, is shipped once.
    dedup_bodies: bool = True
    # Above high_water × max_bytes of stored events, new deliveries get 503 until the buffer has
    # drained below low_water × max_bytes. Acknowledged data is never dropped to make room.
    max_bytes: int = 8 << 30
    high_water: float = 0.9
    low_water: float = 0.8
    # Preallocated and released when the disk fills, so cursor moves and purges can still be written.
    # Covers the WAL (capped at 4 MiB) several times over while draining a full disk.
    reserve_bytes: int = 16 << 20
    # At start: "quick" (PRAGMA quick_check), "full" (integrity_check) or "off".
    integrity_check: str = "quick"


@dataclass(frozen=True, slots=True)
class RecordsConfig:
    # One extra record per snapshot with counts by severity; off by default because most
    # SIEM searches are per finding and a daily test of a clean project would add noise.
    summary: bool = False


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    # How long shippers may keep flushing after SIGTERM before what remains stays buffered.
    shutdown_timeout: float = 10.0
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The operator listener (/healthz, /readyz, /metrics): plain HTTP, loopback by default, and a
    separate port, so monitoring never shares the public webhook port."""

    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = 9600


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """What every output shares: which records, how many per batch, how to retry."""

    format: str = "ecs-json"
    # CEF and LEEF header identity; the acceptance cases use Snyk|Snyk|1.0.
    device_vendor: str = "Snyk"
    device_product: str = "Snyk"
    device_version: str = "1.0"
    # LEEF 2.0 attribute delimiter. Tab: it never occurs in Snyk's single-line values, while ^
    # (a common choice) appears in semver ranges such as ^1.2.3.
    leef_delimiter: str = "\t"
    min_severity: str | None = None
    actions: tuple[str, ...] = ACTIONS
    batch_max_records: int = 500
    batch_max_bytes: int = 1 * MiB
    batch_timeout: float = 1.0
    retry_initial_backoff: float = 1.0
    retry_max_backoff: float = 60.0
    # 0 means retry transient failures forever: a SIEM down for a day must not lose data.
    retry_max_attempts: int = 0
    # After a configuration-type refusal (bad token…) the output is re-probed this often.
    pause_probe_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class OutputConfig:
    name: str
    type: str
    delivery: DeliveryConfig
    settings: Any


@dataclass(frozen=True, slots=True)
class Config:
    listen: ListenConfig
    webhook: WebhookConfig
    buffer: BufferConfig
    records: RecordsConfig
    service: ServiceConfig
    outputs: tuple[OutputConfig, ...]
    admin: AdminConfig = AdminConfig()
    source: str = "<embedded default>"

    @property
    def state_dir(self) -> Path:
        return self.buffer.directory
