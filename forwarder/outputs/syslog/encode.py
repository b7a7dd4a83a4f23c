"""Records → RFC 5424 frames with octet counting. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from forwarder.formats import syslog
from forwarder.outputs.syslog.config import SyslogSettings
from forwarder.types import Message


def frame(settings: SyslogSettings, message: Message) -> bytes:
    record = message.record
    head = syslog.header(
        facility=settings.facility,
        severity=settings.severity_map[record.severity or "none"],
        time_ms=record.time_ms,
        hostname=settings.hostname,
        app_name=settings.app_name,
        procid=settings.procid,
        msgid=settings.msgid,
    )
    return syslog.octet_counted(syslog.message(head, b"-", message.body))


def encode(settings: SyslogSettings, batch: Sequence[Message]) -> bytes:
    return b"".join(frame(settings, m) for m in batch)
