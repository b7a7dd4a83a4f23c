"""Records → syslog frames (RFC 5424 or 3164; octet-counted, LF-framed or one per datagram). Pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from forwarder.formats import fields, syslog
from forwarder.outputs.syslog.config import SyslogSettings
from forwarder.types import Message, Record

# STRUCTURED-DATA parameters: (PARAM-NAME, document path).
SD_PARAMS = (
    ("id", "event.id"),
    ("action", "event.action"),
    ("severity", "vulnerability.severity"),
    ("issue", "snyk.issue.id"),
    ("project", "snyk.project.name"),
    ("project_id", "snyk.project.id"),
    ("org", "organization.name"),
    ("org_id", "organization.id"),
)


class SyslogEncoder:
    def __init__(self, settings: SyslogSettings) -> None:
        self.settings = settings
        s = settings
        self._tag = s.app_name + (f"[{s.procid}]" if s.procid else "")
        self._heads: dict[str, bytes] = {}
        self._header = syslog.Rfc5424Header(
            facility=s.facility, hostname=s.hostname, app_name=s.app_name, procid=s.procid, msgid=s.msgid
        )

    def head(self, record: Record) -> bytes:
        """Everything before MSG, including the separating space (and the BOM when configured)."""
        s = self.settings
        severity = s.severity_map[record.severity or "none"]
        if s.protocol == "rfc3164":
            return syslog.rfc3164_prefix(
                facility=s.facility, severity=severity, time_ms=record.time_ms, hostname=s.hostname, tag=self._tag
            )
        head = self._header.render(severity, record.time_ms)
        sd = syslog.structured_data(s.sd_id, self._params(record)) if s.structured_data else b""
        return syslog.message(head, sd, b"", bom=s.bom)

    def budget(self, record: Record) -> int:
        """Bytes left for MSG within max_message_bytes (measured on SYSLOG-MSG, without framing).

        The head is kept for :meth:`frame`, which usually follows for the same record: computing
        it twice per record was a measurable share of the shipping cost.
        """
        head = self.head(record)
        if len(self._heads) > 100_000:  # records budgeted but never framed (dead-lettered): forget
            self._heads.clear()
        self._heads[record.id] = head
        return self.settings.max_message_bytes - len(head)

    def frame(self, message: Message) -> bytes:
        head = self._heads.pop(message.record.id, None) or self.head(message.record)
        whole = head + message.body
        if self.settings.transport == "udp":
            return whole
        if self.settings.framing == "lf":
            return syslog.lf_framed(whole)
        return syslog.octet_counted(whole)

    def encode(self, batch: Sequence[Message]) -> bytes:
        return b"".join(self.frame(m) for m in batch)

    @staticmethod
    def _params(record: Record) -> Iterable[tuple[str, str]]:
        document = record.document
        for name, path in SD_PARAMS:
            value = fields.get(document, path)
            if isinstance(value, str) and value:
                yield name, value
        labels = document.get("labels")
        if isinstance(labels, dict):
            for key, value in labels.items():
                yield f"label_{key}", str(value)
