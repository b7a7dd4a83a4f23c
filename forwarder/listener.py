"""The public HTTPS listener's socket, certificate and address, set up before serving."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from forwarder import selfsigned
from forwarder.config import Config
from forwarder.errors import EX_UNAVAILABLE, ForwarderError


class StartupError(ForwarderError):
    """Something the daemon needs at start (port, state directory, certificate) is unusable."""

    exit_code = EX_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    address: str
    port: int
    ca_file: Path | None


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None  # what clients should trust, when we made it ourselves


def tls_files(config: Config) -> TlsFiles | None:
    """The listener's certificate and key, creating the self-signed set when configured."""
    listen = config.listen
    if listen.plain_http:
        return None
    if listen.tls_self_signed:
        files = selfsigned.ensure(config.state_dir / selfsigned.SUBDIR)
        return TlsFiles(files.cert, files.key, files.ca)
    assert listen.tls_cert is not None and listen.tls_key is not None
    return TlsFiles(listen.tls_cert, listen.tls_key, None)


def server_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_certificate(context, files)
    return context


def load_certificate(context: ssl.SSLContext, files: TlsFiles) -> None:
    """(Re)load the certificate; new connections use it at once (SIGHUP reload after renewal).

    OpenSSL installs the certificate before it checks the key against it, so a failed
    load_cert_chain() on the live context would leave it holding a certificate without its
    key and every new handshake would fail. The pair is therefore proven on a throwaway
    context first and only then installed.
    """
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(files.cert, files.key)
        context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(
            f"cannot load the TLS certificate {files.cert} and key {files.key}: {exc}; check that both are PEM, "
            "match each other, and are readable by the service user"
        ) from exc


def bind(address: str, port: int, *, what: str = "listen") -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot listen on {address}:{port}: {exc.strerror}; pick another {what}.port, or stop "
            "whatever holds it (ss -ltnp)"
        ) from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def endpoint(sock: socket.socket, path: str, tls: TlsFiles | None) -> Endpoint:
    host, port = sock.getsockname()[:2]
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - display only
    shown = f"[{shown}]" if ":" in shown else shown
    scheme = "http" if tls is None else "https"
    return Endpoint(f"{scheme}://{shown}:{port}{path}", host, port, tls.ca if tls else None)
