"""JSON-lines logging for the daemon (python-json-logger), one object per line on stderr.

journald, Docker and every SIEM parse JSON lines without a custom pattern; fields from
:mod:`forwarder.telemetry` land as top-level keys.
"""

from __future__ import annotations

import logging
import sys
import time

from pythonjsonlogger.json import JsonFormatter


class _Formatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        seconds = int(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(record.msecs):03d}Z"


class _DropColor(logging.Filter):
    """uvicorn attaches an ANSI-coloured copy of some messages; JSON logs want only the plain one."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


class _DropReplaced(logging.Filter):
    """uvicorn lines the forwarder reports better itself: start and stop (once, not per server)
    and the connection limit (with the setting to raise, rate-limited; see receiver.protocol)."""

    REPLACED = frozenset(
        {
            "Started server process [%d]",
            "Finished server process [%d]",
            "Shutting down",
            "Exceeded concurrency limit.",
            "Waiting for connections to close. (CTRL+C to force quit)",
        }
    )
    CANCELLED = "Cancel %s running task(s), timeout graceful shutdown exceeded"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == self.CANCELLED:  # an error only when requests were really cut off
            return record.args != (0,)
        return record.msg not in self.REPLACED


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _Formatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_DropColor())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own access log would print every request line; our receiver logs what matters.
    logging.getLogger("uvicorn.access").disabled = True
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.setLevel(max(logging.INFO, root.level))
    uvicorn_log.addFilter(_DropReplaced())
