"""The listener's certificate handling: a bad pair on reload must never break the live context."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from forwarder.listener import StartupError, TlsFiles, load_certificate, server_ssl_context
from tests.support.daemon import LocalCA


def handshake(server: ssl.SSLContext, ca_file: Path) -> None:
    """Run a TLS handshake in memory: proves the context can still serve clients."""
    client = ssl.create_default_context(cafile=str(ca_file))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):  # a TLS 1.3 handshake takes two round trips; ten is a generous bound
        done = 0
        for side, out, peer_in in ((client_side, c_out, s_in), (server_side, s_out, c_in)):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            peer_in.write(out.read())
        if done == 2:
            return
    raise AssertionError("handshake did not finish")


def test_a_mismatched_pair_on_reload_is_refused_and_the_old_certificate_keeps_serving(tmp_path: Path) -> None:
    first, second = LocalCA(tmp_path / "a"), LocalCA(tmp_path / "b")
    context = server_ssl_context(TlsFiles(first.cert_file, first.key_file, None))
    handshake(context, first.ca_file)

    with pytest.raises(StartupError, match="match each other"):
        load_certificate(context, TlsFiles(second.cert_file, first.key_file, None))

    handshake(context, first.ca_file)


def test_a_good_pair_on_reload_takes_over_for_new_connections(tmp_path: Path) -> None:
    first, second = LocalCA(tmp_path / "a"), LocalCA(tmp_path / "b")
    context = server_ssl_context(TlsFiles(first.cert_file, first.key_file, None))
    load_certificate(context, TlsFiles(second.cert_file, second.key_file, None))
    handshake(context, second.ca_file)
    with pytest.raises(ssl.SSLError):
        handshake(context, first.ca_file)
