"""Building the syslog output: frames over a persistent TCP/TLS stream, or UDP datagrams.

The I/O itself is the shared machinery of :mod:`forwarder.outputs.stream` (a batch is delivered
once the receiver's TCP acknowledged every byte; frames acknowledged within ``resend_window``
before a connection broke are written again, so a receiver that crashed after acknowledging
causes duplicates with the same record ids rather than loss) and :mod:`forwarder.outputs.datagram`.
"""

from __future__ import annotations

from forwarder.outputs.datagram import DatagramOutput, DatagramSender
from forwarder.outputs.stream import StreamConnection, StreamOutput
from forwarder.outputs.syslog.config import SyslogSettings
from forwarder.outputs.syslog.encode import SyslogEncoder
from forwarder.outputs.tls import client_context


def syslog_output(name: str, settings: SyslogSettings) -> StreamOutput | DatagramOutput:
    encoder = SyslogEncoder(settings)
    if settings.transport == "udp":
        return DatagramOutput(name, DatagramSender(settings.host, settings.port), encoder.frame, encoder.budget)
    context = None
    if settings.transport == "tls":
        context = client_context(
            ca_file=settings.tls_ca_file,
            verify=settings.tls_verify,
            client_cert=settings.tls_client_cert,
            client_key=settings.tls_client_key,
            key=f"outputs.{name}",
        )
    connection = StreamConnection(
        settings.host,
        settings.port,
        ssl_context=context,
        server_hostname=settings.tls_server_name or settings.host,
        connect_timeout=settings.connect_timeout,
        send_timeout=settings.send_timeout,
    )
    return StreamOutput(name, connection, encoder.frame, encoder.budget, resend_window=settings.resend_window)
