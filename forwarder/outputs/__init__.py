"""The one table from a config ``type`` to its implementation.

No self-registration at import time: every output a reader can meet is listed here, and mypy
checks each entry against :class:`~forwarder.outputs.base.OutputType`.
"""

from __future__ import annotations

from forwarder.outputs import file, syslog
from forwarder.outputs.base import Output, OutputType

OUTPUT_TYPES: dict[str, OutputType] = {
    "file": file.TYPE,
    "syslog": syslog.TYPE,
}

__all__ = ["OUTPUT_TYPES", "Output", "OutputType"]
