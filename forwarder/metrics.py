"""Prometheus metrics, named once (prometheus-client), served on the admin listener's /metrics.

Counters move in :mod:`forwarder.telemetry` next to the log line for the same happening; gauges
that describe current state (queue depth, oldest undelivered age, buffer size, paused outputs)
are read at scrape time from the running service through :class:`ServiceCollector`, so they are
never stale and cost nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the output and nobody graphs them
REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "snyk_forwarder_webhook_requests", "Webhook requests answered, by HTTP status.", ["status"], registry=REGISTRY
)
SIGNATURE_FAILURES = Counter(
    "snyk_forwarder_signature_failures", "Webhooks refused for a missing or wrong signature.", registry=REGISTRY
)
EVENTS = Counter(
    "snyk_forwarder_events",
    "Webhook deliveries by outcome: stored, duplicate, quarantined, ping.",
    ["outcome"],
    registry=REGISTRY,
)
SNAPSHOTS_MALFORMED = Counter(
    "snyk_forwarder_snapshots_malformed",
    "Stored snapshots whose newIssues/removedIssues are missing or not lists of objects.",
    registry=REGISTRY,
)
RECORDS_DELIVERED = Counter(
    "snyk_forwarder_records_delivered", "Records an output confirmed.", ["output"], registry=REGISTRY
)
DELIVERY_FAILURES = Counter(
    "snyk_forwarder_delivery_failures",
    "Failed delivery attempts (batches), by kind.",
    ["output", "kind"],
    registry=REGISTRY,
)
RECORDS_DEAD = Counter(
    "snyk_forwarder_records_dead_lettered", "Records moved to the dead-letter store.", ["output"], registry=REGISTRY
)
RECORDS_SHORTENED = Counter(
    "snyk_forwarder_records_shortened",
    "Records shortened to fit an output's size limit.",
    ["output"],
    registry=REGISTRY,
)
COMMIT_SECONDS = Histogram(
    "snyk_forwarder_buffer_commit_seconds",
    "Duration of one group commit (transaction + fsync) of the buffer.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
COMMIT_OPERATIONS = Histogram(
    "snyk_forwarder_buffer_commit_operations",
    "Operations (appends, cursor moves) sharing one commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
    registry=REGISTRY,
)


@dataclass(frozen=True, slots=True)
class OutputGauge:
    name: str
    pending_events: int
    oldest_pending_seconds: float
    paused: bool


@dataclass(frozen=True, slots=True)
class ServiceGauges:
    stored_bytes: int
    max_bytes: int
    disk_full: bool
    backpressure: bool
    outputs: list[OutputGauge]
    body_bytes_in_memory: int = 0


class ServiceCollector(Collector):
    """Turns a snapshot of the running service's state into gauges at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], ServiceGauges] | None = None

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        if self.source is None:
            return
        state = self.source()
        yield GaugeMetricFamily("snyk_forwarder_buffer_stored_bytes", "Bytes of stored events.", state.stored_bytes)
        yield GaugeMetricFamily("snyk_forwarder_buffer_max_bytes", "Configured buffer limit.", state.max_bytes)
        yield GaugeMetricFamily("snyk_forwarder_buffer_disk_full", "1 while the disk is full.", float(state.disk_full))
        yield GaugeMetricFamily(
            "snyk_forwarder_buffer_backpressure", "1 while above the high-water mark.", float(state.backpressure)
        )
        yield GaugeMetricFamily(
            "snyk_forwarder_receiver_body_bytes_in_memory",
            "Bytes reserved for request bodies being read (capped by listen.max_inflight_body_bytes).",
            state.body_bytes_in_memory,
        )
        pending = GaugeMetricFamily(
            "snyk_forwarder_output_pending_events", "Stored events not yet fully delivered.", labels=["output"]
        )
        oldest = GaugeMetricFamily(
            "snyk_forwarder_output_oldest_pending_seconds",
            "Age of the oldest event an output still has to deliver.",
            labels=["output"],
        )
        paused = GaugeMetricFamily(
            "snyk_forwarder_output_paused", "1 while an output refuses our configuration.", labels=["output"]
        )
        for o in state.outputs:
            pending.add_metric([o.name], o.pending_events)
            oldest.add_metric([o.name], o.oldest_pending_seconds)
            paused.add_metric([o.name], float(o.paused))
        yield pending
        yield oldest
        yield paused


SERVICE = ServiceCollector()
REGISTRY.register(SERVICE)
