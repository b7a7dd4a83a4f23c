"""Client TLS contexts for outputs: verification on by default, TLS 1.2 minimum (RFC 9662)."""

from __future__ import annotations

import ssl
from pathlib import Path

from forwarder.errors import ConfigError


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
