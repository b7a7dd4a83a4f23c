"""``rapid7`` output: InsightIDR Collector (Custom Logs), Log Search token TCP, or Log Search HTTP POST.

One output type with a ``mode``, because the three paths share the destination, the record
format (one JSON record per event), the 64 KiB event limit and the token handling, and an
operator thinks "send to Rapid7" first and "which door" second. Each mode validates only its own
keys (:mod:`.config`). Guide: ``docs/outputs/rapid7.md``.
"""

from __future__ import annotations

from forwarder.config.model import DeliveryConfig
from forwarder.formats import FORMAT_NAMES
from forwarder.outputs.base import Output, OutputType
from forwarder.outputs.rapid7.client import collector_output, token_tcp_output
from forwarder.outputs.rapid7.config import CollectorSettings, Rapid7Settings, TokenTcpSettings, parse
from forwarder.outputs.rapid7.webhook import WebhookOutput


def build(name: str, settings: Rapid7Settings) -> Output:
    if isinstance(settings, CollectorSettings):
        return collector_output(name, settings)
    if isinstance(settings, TokenTcpSettings):
        return token_tcp_output(name, settings)
    return WebhookOutput(name, settings)


TYPE = OutputType(
    parse=parse,
    build=build,
    formats=FORMAT_NAMES,
    # 100 records (about 300 KiB of ECS JSON) per batch: on token TCP and the collector a batch that
    # fails is sent again whole, so the batch bounds the duplicates of one failure; measurements and
    # the webhook's one-record-per-request policy in docs/outputs/rapid7.md.
    delivery_defaults=DeliveryConfig(batch_max_records=100, batch_max_bytes=512 * 1024, batch_timeout=0.2),
)
