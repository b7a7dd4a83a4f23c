"""Client TLS contexts for outputs: verification on by default, TLS 1.2 minimum (RFC 9662)."""

from __future__ import annotations

import ssl
from pathlib import Path

from forwarder.config.reader import Table
from forwarder.errors import ConfigError


def check_files(t: Table, settings: object, *, client_auth: str) -> None:
    """The TLS files an output's settings name: a client certificate needs its key (and the
    reverse), and every file given must exist. ``client_auth`` says what the pair is for."""
    cert, key = getattr(settings, "tls_client_cert", None), getattr(settings, "tls_client_key", None)
    if (cert is None) != (key is None):
        missing = "tls_client_key" if key is None else "tls_client_cert"
        raise t.error(
            missing,
            "is required when the other client-certificate file is given",
            hint=f"give both tls_client_cert and tls_client_key (PEM) for {client_auth}",
        )
    for name in ("tls_ca_file", "tls_client_cert", "tls_client_key"):
        path = getattr(settings, name, None)
        if path is not None and not path.is_file():
            raise t.error(name, f"file {path} does not exist", hint="give the path of a PEM file")


def client_context(
    *, ca_file: Path | None, verify: bool, client_cert: Path | None, client_key: Path | None, key: str
) -> ssl.SSLContext:
    """``key`` names the output's settings in errors (e.g. ``outputs.siem``)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert is not None and client_key is not None:
        try:
            context.load_cert_chain(client_cert, client_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{key}.tls_client_cert",
                f"cannot load the client certificate and key: {exc}",
                hint="give matching PEM files readable by the service user",
            ) from exc
    return context
