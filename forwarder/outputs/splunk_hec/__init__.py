"""``splunk_hec`` output: batches of events to Splunk's HTTP Event Collector, optionally with
indexer acknowledgement. The operator's guide is ``docs/outputs/splunk-hec.md``."""

from __future__ import annotations

from forwarder.config.model import DeliveryConfig
from forwarder.formats import FORMAT_NAMES
from forwarder.outputs.base import OutputType
from forwarder.outputs.splunk_hec.client import HecOutput
from forwarder.outputs.splunk_hec.config import HecSettings, parse


def build(name: str, settings: HecSettings) -> HecOutput:
    return HecOutput(name, settings)


TYPE = OutputType(
    parse=parse,
    build=build,
    formats=FORMAT_NAMES,
    # 512 KiB of records plus their envelopes (~200 bytes each) stays under the 1,000,000-byte
    # request limit, so full batches are rarely split.
    delivery_defaults=DeliveryConfig(batch_max_records=1000, batch_max_bytes=512 * 1024, batch_timeout=1.0),
)
