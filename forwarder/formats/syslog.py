"""RFC 5424 messages and RFC 6587 framing, as bytes.

SYSLOG-MSG      = HEADER SP STRUCTURED-DATA [SP MSG]
HEADER          = PRI VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID
PRI             = "<" PRIVAL ">"            ; PRIVAL = facility * 8 + severity, 0..191
HOSTNAME        = NILVALUE / 1*255PRINTUSASCII
APP-NAME        = NILVALUE / 1*48PRINTUSASCII
PROCID          = NILVALUE / 1*128PRINTUSASCII
MSGID           = NILVALUE / 1*32PRINTUSASCII
PRINTUSASCII    = %d33-126
                                                  (RFC 5424 §6)
syslog-frame    = msg-len SP syslog-msg          (RFC 6587 §3.4.1, octet counting)
"""

from __future__ import annotations

from forwarder.flatten.timestamps import format_ms

NILVALUE = "-"
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


def header_field(value: str | None, max_len: int) -> str:
    """A HEADER field: PRINTUSASCII only (anything else, spaces included, becomes ``_``), cut to
    its maximum length, ``-`` when empty — a space in a host name would shift every later field."""
    if not value:
        return NILVALUE
    clean = "".join(ch if 33 <= ord(ch) <= 126 else "_" for ch in value[:max_len])
    return clean or NILVALUE


def header(
    *,
    facility: int,
    severity: int,
    time_ms: int,
    hostname: str,
    app_name: str,
    procid: str = "",
    msgid: str = "",
) -> bytes:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID`` (no SD, no trailing space)."""
    pri = facility * 8 + severity
    fields = (
        f"<{pri}>1",
        format_ms(time_ms),  # RFC 3339, UTC, milliseconds: the record's own precision
        header_field(hostname, 255),
        header_field(app_name, 48),
        header_field(procid, 128),
        header_field(msgid, 32),
    )
    return " ".join(fields).encode("ascii")


def message(head: bytes, structured_data: bytes, msg: bytes) -> bytes:
    """HEADER SP STRUCTURED-DATA SP MSG; ``structured_data`` is ``-`` when there is none."""
    return b"%s %s %s" % (head, structured_data or b"-", msg)


def octet_counted(frame: bytes) -> bytes:
    """RFC 6587 §3.4.1 / RFC 5425: the decimal byte count, one space, the message."""
    return b"%d %s" % (len(frame), frame)
