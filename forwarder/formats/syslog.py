"""Syslog messages and their framing, as bytes (RFC 5424, RFC 3164, RFC 6587, RFC 5425).

    SYSLOG-MSG      = HEADER SP STRUCTURED-DATA [SP MSG]
    HEADER          = PRI VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID
    PRI             = "<" PRIVAL ">"            ; PRIVAL = facility * 8 + severity, 0..191
    HOSTNAME        = NILVALUE / 1*255PRINTUSASCII
    APP-NAME        = NILVALUE / 1*48PRINTUSASCII
    PROCID          = NILVALUE / 1*128PRINTUSASCII
    MSGID           = NILVALUE / 1*32PRINTUSASCII
    SD-ELEMENT      = "[" SD-ID *(SP SD-PARAM) "]"
    SD-PARAM        = PARAM-NAME "=" %d34 PARAM-VALUE %d34
    SD-NAME         = 1*32PRINTUSASCII ; except '=', SP, ']', %d34 (")
    PARAM-VALUE     = UTF-8-STRING ; characters '"', '\\' and ']' MUST be escaped.
    MSG             = MSG-ANY / MSG-UTF8    ; MSG-UTF8 = BOM UTF-8-STRING
                                                      (RFC 5424 §6)
    syslog-frame    = msg-len SP syslog-msg          (RFC 6587 §3.4.1 octet counting; RFC 5425)

RFC 3164: ``<PRI>Mmm dd hh:mm:ss HOSTNAME TAG: MSG``, day padded with a space, no year, no zone
(we write UTC), HOSTNAME without the domain.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from forwarder.flatten.timestamps import format_ms

NILVALUE = "-"
BOM = b"\xef\xbb\xbf"
FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "audit": 13,
    "alert": 14,
    "clock": 15,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}
SEVERITIES = {
    "emerg": 0,
    "alert": 1,
    "crit": 2,
    "err": 3,
    "warning": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}
_SD_VALUE = str.maketrans({"\\": "\\\\", '"': '\\"', "]": "\\]"})


def header_field(value: str | None, max_len: int) -> str:
    """A HEADER field: PRINTUSASCII only (anything else, spaces included, becomes ``_``), cut to
    its maximum length, ``-`` when empty — a space in a host name would shift every later field."""
    if not value:
        return NILVALUE
    return "".join(ch if 33 <= ord(ch) <= 126 else "_" for ch in value[:max_len])


class Rfc5424Header:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID`` for one sender: the fields that never
    change are sanitised once, and the timestamp of the last record is reused (the records of a
    snapshot share it) — this runs for every record shipped."""

    def __init__(self, *, facility: int, hostname: str, app_name: str, procid: str = "", msgid: str = "") -> None:
        self._facility = facility
        fields = (
            header_field(hostname, 255),
            header_field(app_name, 48),
            header_field(procid, 128),
            header_field(msgid, 32),
        )
        self._tail = (" " + " ".join(fields)).encode("ascii")
        self._last: tuple[int, bytes] = (-1, b"")

    def render(self, severity: int, time_ms: int) -> bytes:
        if self._last[0] != time_ms:
            # RFC 3339, UTC, milliseconds: the record's own precision
            self._last = (time_ms, format_ms(time_ms).encode("ascii"))
        return b"<%d>1 %s%s" % (self._facility * 8 + severity, self._last[1], self._tail)


def header(
    *, facility: int, severity: int, time_ms: int, hostname: str, app_name: str, procid: str = "", msgid: str = ""
) -> bytes:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID`` (no SD, no trailing space)."""
    sender = Rfc5424Header(facility=facility, hostname=hostname, app_name=app_name, procid=procid, msgid=msgid)
    return sender.render(severity, time_ms)


def param_name(name: str) -> str:
    """PARAM-NAME cannot be escaped, so it is sanitised: disallowed bytes become ``_``, max 32."""
    clean = "".join(ch if 33 <= ord(ch) <= 126 and ch not in '="] ' else "_" for ch in name)
    return clean[:32] or "_"


def structured_data(sd_id: str, params: Iterable[tuple[str, str]]) -> bytes:
    """One SD-ELEMENT; PARAM-VALUE escapes exactly ``"``, ``\\`` and ``]`` (C-12)."""
    body = "".join(f' {param_name(k)}="{v.translate(_SD_VALUE)}"' for k, v in params)
    return f"[{sd_id}{body}]".encode()


def message(head: bytes, sd: bytes, msg: bytes, *, bom: bool = False) -> bytes:
    """HEADER SP STRUCTURED-DATA SP [BOM] MSG; ``sd`` empty means NILVALUE."""
    return b"%s %s %s%s" % (head, sd or b"-", BOM if bom else b"", msg)


def rfc3164_prefix(*, facility: int, severity: int, time_ms: int, hostname: str, tag: str) -> bytes:
    """``<PRI>Mmm dd hh:mm:ss HOSTNAME TAG: `` (the MSG follows)."""
    moment = datetime.fromtimestamp(time_ms // 1000, UTC)
    stamp = f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S}"
    host = hostname if _is_ip(hostname) else hostname.split(".", 1)[0]
    return f"<{facility * 8 + severity}>{stamp} {header_field(host, 255)} {header_field(tag, 48)}: ".encode("ascii")


def octet_counted(frame: bytes) -> bytes:
    """RFC 6587 §3.4.1 / RFC 5425: the decimal byte count, one space, the message."""
    return b"%d %s" % (len(frame), frame)


def lf_framed(frame: bytes) -> bytes:
    """Non-transparent framing ended by LF. A raw CR or LF inside would end the record early on
    every LF-framed receiver (C-11), so they are written as the two-character escapes."""
    return frame.replace(b"\r", b"\\r").replace(b"\n", b"\\n") + b"\n"


def _is_ip(host: str) -> bool:
    return host.replace(".", "").isdigit() or ":" in host
