"""TOML → validated, frozen :class:`Config`.

``parse_config(text)`` is kept apart from reading the file so tests feed strings and
``check-config`` runs exactly the code ``serve`` runs. Relative paths resolve against the
directory of the config file (or the working directory for the embedded default).
"""

from __future__ import annotations

import re
import ssl
import tomllib
from dataclasses import replace
from pathlib import Path

from forwarder.config.model import (
    ACTIONS,
    SEVERITIES,
    AdminConfig,
    BufferConfig,
    Config,
    DeliveryConfig,
    ListenConfig,
    OutputConfig,
    RecordsConfig,
    ServiceConfig,
    WebhookConfig,
)
from forwarder.config.reader import SecretUse, Table
from forwarder.config.secrets import Secret, resolve_secret
from forwarder.errors import ConfigError
from forwarder.formats.leef import parse_delimiter

__all__ = ["Config", "ConfigError", "OutputConfig", "load_config", "parse_config"]

_OUTPUT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_LOG_LEVELS = ("debug", "info", "warning", "error")


def load_config(path: Path, *, secrets: SecretUse = "create") -> Config:
    """Read and validate a config file; every error names the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            "<file>",
            f"cannot read config file: {exc.strerror or exc}",
            file=str(path),
            hint="check the path given to --config and its permissions",
        ) from exc
    try:
        return parse_config(text, base_dir=path.resolve().parent, source=str(path), secrets=secrets)
    except ConfigError as exc:
        raise exc.in_file(str(path)) from None


def parse_config(text: str, *, base_dir: Path, source: str = "<string>", secrets: SecretUse = "create") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("<toml>", f"is not valid TOML: {exc}", hint="fix the syntax at the line shown") from None
    root = Table(data, "", base_dir, secrets=secrets)
    root.finish(known=SECTIONS)  # a misspelt section first, not "[webhook] is required" about its twin
    config = Config(
        listen=_listen(root.table("listen")),
        webhook=_webhook(root.table("webhook", required=True)),
        buffer=_buffer(root.table("state"), root.table("buffer"), base_dir),
        records=_records(root.table("records")),
        service=_service(root.table("service")),
        outputs=_outputs(root.table("outputs", required=True)),
        admin=_admin(root.table("admin")),
        source=source,
    )
    _check_ports(config)
    _check_output_paths(config)
    return config


def _check_output_paths(config: Config) -> None:
    """A file output must not append into the buffer's own files (it would corrupt them)."""
    from forwarder.buffer.lock import LOCK_NAME
    from forwarder.buffer.space import RESERVE_NAME
    from forwarder.buffer.sqlite import DB_NAME

    state = config.state_dir.absolute()
    owned = {DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", RESERVE_NAME, LOCK_NAME, "webhook-secret"}
    for output in config.outputs:
        path = getattr(output.settings, "path", None)
        if output.type != "file" or not isinstance(path, Path):
            continue
        path = path.absolute()
        if (path.parent == state and path.name in owned) or path.is_relative_to(state / "tls"):
            raise ConfigError(
                f"outputs.{output.name}.path",
                f"{path} is one of the forwarder's own files in its state directory",
                hint=f'write records elsewhere, e.g. path = "{state / "records.jsonl"}"',
            )


SECTIONS = ("listen", "webhook", "state", "buffer", "records", "service", "admin", "outputs")


def _check_ports(config: Config) -> None:
    listen, admin = config.listen, config.admin
    if admin.enabled and listen.port != 0 and admin.port == listen.port:
        raise ConfigError(
            "admin.port",
            f"is the same port as listen.port ({listen.port})",
            hint=f"give the admin endpoints their own port, e.g. admin.port = {9600 if listen.port != 9600 else 9601}",
        )


def _listen(t: Table) -> ListenConfig:
    d = ListenConfig()
    cfg = ListenConfig(
        address=t.string("address", d.address),
        port=t.integer("port", d.port, minimum=0, maximum=65535),
        path=t.string("path", d.path),
        tls_cert=t.path_value("tls_cert", None),
        tls_key=t.path_value("tls_key", None),
        tls_self_signed=t.boolean("tls_self_signed", d.tls_self_signed),
        plain_http=t.boolean("plain_http", d.plain_http),
        max_body_bytes=t.size("max_body_bytes", d.max_body_bytes, minimum=1024),
        max_inflight_body_bytes=t.size("max_inflight_body_bytes", d.max_inflight_body_bytes, minimum=1024),
        header_timeout=t.duration("header_timeout", d.header_timeout, minimum=0.01),
        max_header_bytes=t.size("max_header_bytes", d.max_header_bytes, minimum=1024),
        body_timeout=t.duration("body_timeout", d.body_timeout, minimum=0.01),
        body_idle_timeout=t.duration("body_idle_timeout", d.body_idle_timeout, minimum=0.01),
        keep_alive_timeout=t.duration("keep_alive_timeout", d.keep_alive_timeout, minimum=0.1),
        max_connections=t.integer("max_connections", d.max_connections, minimum=1),
        drain_timeout=t.duration("drain_timeout", d.drain_timeout),
    )
    t.finish()
    if not cfg.path.startswith("/"):
        raise t.error("path", "must start with /", value=cfg.path, hint='write path = "/webhooks/snyk"')
    if cfg.max_inflight_body_bytes < cfg.max_body_bytes:
        raise t.error(
            "max_inflight_body_bytes",
            "must be at least max_body_bytes, or no large body could ever be read",
            value=cfg.max_inflight_body_bytes,
            hint=f"set it to {cfg.max_body_bytes} or more",
        )
    chosen = [bool(cfg.tls_cert or cfg.tls_key), cfg.tls_self_signed, cfg.plain_http]
    if sum(chosen) != 1:
        raise t.error(
            "tls_cert",
            "choose exactly one of: tls_cert + tls_key, tls_self_signed = true, plain_http = true",
            hint="Snyk only calls HTTPS URLs: give a certificate and key; use tls_self_signed for a trial; "
            "plain_http only behind a TLS-terminating proxy on the same host",
        )
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        missing = "tls_key" if cfg.tls_key is None else "tls_cert"
        raise t.error(missing, "is required when the other TLS file is given", hint=f'set {missing} = "/path/…pem"')
    for name in ("tls_cert", "tls_key"):
        path = getattr(cfg, name)
        if path is not None and not path.is_file():
            raise t.error(name, f"file {path} does not exist", hint="give the path of a PEM file")
    if cfg.tls_cert is not None and cfg.tls_key is not None:
        _check_key_pair(t, cfg.tls_cert, cfg.tls_key)
    return cfg


def _check_key_pair(t: Table, cert: Path, key: Path) -> None:
    """Load the pair the way the listener will, so a mismatch fails check-config, not the 3 a.m. restart."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except PermissionError as exc:
        raise t.error(
            "tls_key", f"cannot read {exc.filename}", hint="make it readable by the user the service runs as"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise t.error(
            "tls_key",
            f"the key {key} does not go with the certificate {cert}, or one of them is not PEM ({exc})",
            hint="give the key the certificate was issued for (openssl x509 -noout -pubkey -in CERT and "
            "openssl pkey -pubout -in KEY must print the same key)",
        ) from None


def _webhook(t: Table) -> WebhookConfig:
    secrets: list[Secret] = []
    if t.has("secret") and t.has("secrets"):
        raise t.error(
            "secrets", "give either secret or secrets, not both", hint="move both values into secrets = [ … ]"
        )
    if t.has("secret"):
        secrets.append(resolve_secret(t, "secret", t.raw("secret")))
    else:
        specs = t.raw("secrets", None)
        if specs is None:
            t.finish(known=("secret",))  # a misspelt `secert = …` is the likelier mistake: name it
            raise t.error(
                "secret",
                "is required: without a secret every webhook would be accepted unverified",
                hint='set secret = { env = "SNYK_WEBHOOK_SECRET" } (or file / credential)',
            )
        if not isinstance(specs, list) or not 1 <= len(specs) <= 2:
            raise t.error(
                "secrets",
                "must be a list of one or two secrets (two only while rotating)",
                value=f"{len(specs)} secrets" if isinstance(specs, list) else type(specs).__name__,
                hint='write secrets = [ { env = "OLD" }, { env = "NEW" } ]',
            )
        secrets.extend(resolve_secret(t, f"secrets[{i}]", spec) for i, spec in enumerate(specs))
    t.finish()
    if len(secrets) == 2 and secrets[0].reveal() == secrets[1].reveal():
        raise t.error("secrets", "holds the same secret twice", hint="drop the duplicate once rotation is done")
    return WebhookConfig(secrets=tuple(secrets))


def _buffer(state: Table, t: Table, base_dir: Path) -> BufferConfig:
    directory = state.path_value("directory", base_dir / "state")
    state.finish()
    d = BufferConfig(directory=directory)
    cfg = replace(
        d,
        dedup_window=t.duration("dedup_window", d.dedup_window),
        delivered_retention=t.duration("delivered_retention", d.delivered_retention),
        maintenance_interval=t.duration("maintenance_interval", d.maintenance_interval, minimum=0.01),
        dedup_bodies=t.boolean("dedup_bodies", d.dedup_bodies),
        max_bytes=t.size("max_bytes", d.max_bytes, minimum=1 << 20),
        high_water=t.number("high_water", d.high_water, minimum=0.05, maximum=1.0),
        low_water=t.number("low_water", d.low_water, minimum=0.0, maximum=1.0),
        reserve_bytes=t.size("reserve_bytes", d.reserve_bytes),
        integrity_check=t.string("integrity_check", d.integrity_check, choices=("quick", "full", "off")),
    )
    t.finish()
    if cfg.low_water >= cfg.high_water:
        raise t.error(
            "low_water",
            "must be below high_water, or the buffer would flap between full and open",
            value=cfg.low_water,
            hint=f"e.g. low_water = {cfg.high_water - 0.1:.2f}",
        )
    return cfg


def _records(t: Table) -> RecordsConfig:
    cfg = RecordsConfig(summary=t.boolean("summary", RecordsConfig().summary))
    t.finish()
    return cfg


def _service(t: Table) -> ServiceConfig:
    d = ServiceConfig()
    cfg = ServiceConfig(
        shutdown_timeout=t.duration("shutdown_timeout", d.shutdown_timeout),
        log_level=t.string("log_level", d.log_level, choices=_LOG_LEVELS),
    )
    t.finish()
    return cfg


def _admin(t: Table) -> AdminConfig:
    d = AdminConfig()
    cfg = AdminConfig(
        enabled=t.boolean("enabled", d.enabled),
        address=t.string("address", d.address),
        port=t.integer("port", d.port, minimum=0, maximum=65535),
    )
    t.finish()
    return cfg


def _outputs(t: Table) -> tuple[OutputConfig, ...]:
    from forwarder.outputs import (
        OUTPUT_TYPES,
    )  # the registry imports output configs, which import this package

    outputs = []
    for name, table in t.subtables():
        if not _OUTPUT_NAME.match(name):
            raise t.error(name, "is not a valid output name", hint="use lower-case letters, digits, '-' and '_'")
        kind = table.string("type", choices=sorted(OUTPUT_TYPES))
        output_type = OUTPUT_TYPES[kind]
        delivery = _delivery(table, output_type.delivery_defaults, output_type.formats)
        settings = output_type.parse(table)
        table.finish()
        outputs.append(OutputConfig(name=name, type=kind, delivery=delivery, settings=settings))
    files: dict[Path, str] = {}
    for output in outputs:
        path = getattr(output.settings, "path", None)
        if output.type == "file" and isinstance(path, Path):
            if path in files:
                raise t.error(
                    f"{output.name}.path",
                    f"is the same file as outputs.{files[path]}.path ({path})",
                    hint="two outputs appending to one file interleave and duplicate records; give each its own path",
                )
            files[path] = output.name
    if not outputs:
        raise t.error(
            "",
            "no output is configured, so nothing would ever leave the buffer",
            hint='add an [outputs.local] table with type = "file"',
        )
    return tuple(outputs)


def _delivery(t: Table, d: DeliveryConfig, formats: tuple[str, ...]) -> DeliveryConfig:
    delimiter_text = t.string("leef_delimiter", "0x09")
    delimiter = parse_delimiter(delimiter_text)
    if delimiter is None:
        raise t.error(
            "leef_delimiter",
            "is not a single character or a hex code such as 0x09",
            value=delimiter_text,
            hint='use a character that never occurs in values, e.g. "0x09" (tab) or "^"',
        )
    cfg = DeliveryConfig(
        format=t.string("format", d.format, choices=formats),
        device_vendor=t.string("device_vendor", d.device_vendor),
        device_product=t.string("device_product", d.device_product),
        device_version=t.string("device_version", d.device_version),
        leef_delimiter=delimiter,
        min_severity=t.string("min_severity", d.min_severity, choices=SEVERITIES),
        actions=t.string_list("actions", d.actions, choices=ACTIONS),
        batch_max_records=t.integer("batch_max_records", d.batch_max_records, minimum=1),
        batch_max_bytes=t.size("batch_max_bytes", d.batch_max_bytes, minimum=1024),
        batch_timeout=t.duration("batch_timeout", d.batch_timeout),
        retry_initial_backoff=t.duration("retry_initial_backoff", d.retry_initial_backoff, minimum=0.001),
        retry_max_backoff=t.duration("retry_max_backoff", d.retry_max_backoff, minimum=0.001),
        retry_max_attempts=t.integer("retry_max_attempts", d.retry_max_attempts, minimum=0),
        pause_probe_interval=t.duration("pause_probe_interval", d.pause_probe_interval, minimum=0.001),
    )
    if cfg.retry_max_backoff < cfg.retry_initial_backoff:
        raise t.error(
            "retry_max_backoff",
            "must not be below retry_initial_backoff",
            value=cfg.retry_max_backoff,
            hint=f"set it to {cfg.retry_initial_backoff:g} seconds or more",
        )
    if not cfg.actions:
        raise t.error("actions", "must name at least one action", hint='e.g. actions = ["introduced", "resolved"]')
    return cfg
