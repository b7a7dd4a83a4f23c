"""Records → Rapid7 payload bytes. Pure.

* token TCP: ``<token> <message>`` + LF per record (https://docs.rapid7.com/insightops/token-tcp);
* collector: the syslog output's frames, LF-framed (:class:`~forwarder.outputs.syslog.encode.SyslogEncoder`),
  or the message alone on its line when no syslog header is wanted;
* webhook: the message itself as the body of ``POST /v1/noformat/<token>``, or several messages
  joined by LF when ``records_per_request`` > 1.

LF ends an event everywhere, so a line never holds a raw LF, CR or NUL. The formats already
guarantee that (JSON escapes control characters; CEF and LEEF escape CR and LF); :func:`single_line`
is the belt and braces that keeps a future format bug from splitting an event or dropping the part
after the break: like Rapid7's own clients it writes U+2028 for a line break, and U+FFFD for NUL.
"""

from __future__ import annotations

from collections.abc import Sequence

from forwarder.outputs.syslog.encode import SyslogEncoder
from forwarder.types import Message, Record

LINE_SEPARATOR = "\u2028".encode()
REPLACEMENT = "\ufffd".encode()


def single_line(body: bytes) -> bytes:
    """``body`` without raw CR, LF or NUL (unchanged, and uncopied, in the usual case)."""
    if b"\n" in body or b"\r" in body or b"\0" in body:
        body = body.replace(b"\r\n", LINE_SEPARATOR).replace(b"\n", LINE_SEPARATOR).replace(b"\r", LINE_SEPARATOR)
        body = body.replace(b"\0", REPLACEMENT)
    return body


class TokenLineEncoder:
    """``<token> <message>`` + LF. The token is a UUID, checked when the configuration was read."""

    def __init__(self, token: str, max_event_bytes: int) -> None:
        self._prefix = token.encode("ascii") + b" "
        self._max = max_event_bytes

    def budget(self) -> int:
        """Bytes left for the message when the whole line, token and LF included, stays within the limit."""
        return self._max - len(self._prefix) - 1

    def frame(self, message: Message) -> bytes:
        return self._prefix + single_line(message.body) + b"\n"


class BareLineEncoder(SyslogEncoder):
    """The collector's ``header = "none"``: the message alone on its line (the syslog output's
    framing and escaping, without a syslog header)."""

    def head(self, record: Record) -> bytes:
        return b""


def webhook_body(batch: Sequence[Message]) -> bytes:
    """One request body: the messages of ``batch`` separated by LF (no trailing LF)."""
    return b"\n".join(single_line(m.body) for m in batch)
