"""The one table from a config ``type`` to its implementation.

No self-registration at import time: every output a reader can meet is listed here, and mypy
checks each entry against :class:`~forwarder.outputs.base.OutputType`.
"""

from __future__ import annotations

from forwarder.outputs import file, rapid7, splunk_hec, syslog
from forwarder.outputs.base import Output, OutputType

OUTPUT_TYPES: dict[str, OutputType] = {
    "file": file.TYPE,
    "syslog": syslog.TYPE,
    "splunk_hec": splunk_hec.TYPE,
    "rapid7": rapid7.TYPE,
}

__all__ = ["OUTPUT_TYPES", "Output", "OutputType"]
