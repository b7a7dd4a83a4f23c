"""The Rapid7 output's stream I/O: token TCP, and the collector over TCP, TLS or UDP.

Both are frames over the shared machinery of :mod:`forwarder.outputs.stream` (a TCP/TLS batch is
delivered once the peer's TCP acknowledged every byte; frames acknowledged within
``resend_window`` before a break are written again) and :mod:`forwarder.outputs.datagram` (UDP:
nothing is acknowledged). Neither Rapid7 path acknowledges anything above TCP; the window that
remains is spelled out in ``docs/outputs/rapid7.md``.
"""

from __future__ import annotations

import time

from forwarder.outputs.datagram import DatagramOutput, DatagramSender
from forwarder.outputs.rapid7.config import CollectorSettings, TokenTcpSettings
from forwarder.outputs.rapid7.encode import BareLineEncoder, TokenLineEncoder
from forwarder.outputs.stream import Clock, StreamConnection, StreamOutput
from forwarder.outputs.syslog.encode import SyslogEncoder
from forwarder.outputs.tls import client_context


def _connection(
    host: str, port: int, *, tls: bool, settings: CollectorSettings | TokenTcpSettings, name: str, clock: Clock
) -> StreamConnection:
    context = None
    if tls:
        context = client_context(
            ca_file=settings.tls_ca_file,
            verify=settings.tls_verify,
            client_cert=None,
            client_key=None,
            key=f"outputs.{name}",
        )
    return StreamConnection(
        host,
        port,
        ssl_context=context,
        server_hostname=settings.tls_server_name or host,
        connect_timeout=settings.connect_timeout,
        send_timeout=settings.send_timeout,
        clock=clock,
    )


def token_tcp_output(name: str, settings: TokenTcpSettings, *, clock: Clock = time.monotonic) -> StreamOutput:
    encoder = TokenLineEncoder(settings.token.reveal(), settings.max_event_bytes)
    connection = _connection(
        settings.host, settings.port, tls=settings.transport == "tls", settings=settings, name=name, clock=clock
    )
    return StreamOutput(
        name,
        connection,
        encoder.frame,
        lambda _record: encoder.budget(),
        resend_window=settings.resend_window,
        clock=clock,
    )


def collector_output(
    name: str, settings: CollectorSettings, *, clock: Clock = time.monotonic
) -> StreamOutput | DatagramOutput:
    syslog_settings = settings.syslog()
    encoder = BareLineEncoder(syslog_settings) if settings.header == "none" else SyslogEncoder(syslog_settings)
    if settings.transport == "udp":
        return DatagramOutput(name, DatagramSender(settings.host, settings.port), encoder.frame, encoder.budget)
    connection = _connection(
        settings.host, settings.port, tls=settings.transport == "tls", settings=settings, name=name, clock=clock
    )
    return StreamOutput(
        name, connection, encoder.frame, encoder.budget, resend_window=settings.resend_window, clock=clock
    )
