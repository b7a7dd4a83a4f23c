"""Everything the daemon reports about itself, named once: one function per happening, which
logs one fixed sentence with fixed fields and moves its Prometheus counter (:mod:`.metrics`).

Call sites call these functions; nobody writes ad-hoc log text elsewhere, so every sentence and
field name is greppable here and stays stable for the operators' log searches. Secrets, signature
values and bodies never appear: only sizes, ids and hashes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from forwarder import metrics

receiver_log = logging.getLogger("forwarder.receiver")
service_log = logging.getLogger("forwarder.service")


# --- receiver --------------------------------------------------------------------------------------------


# Counter children by label, looked up once: these run for every webhook, where prometheus-client's
# labels() lookup and an unguarded debug call cost more than storing the event's metadata.
_ANSWERED: dict[int, Any] = {}
_STORED = metrics.EVENTS.labels("stored")


def webhook_answered(status: int) -> None:
    child = _ANSWERED.get(status)
    if child is None:
        child = _ANSWERED[status] = metrics.REQUESTS.labels(str(status))
    child.inc()


def webhook_stored(event_id: int | None, event_name: str, size: int, transport_id: str | None) -> None:
    _STORED.inc()
    if receiver_log.isEnabledFor(logging.DEBUG):
        receiver_log.debug(
            "webhook stored",
            extra={"event_id": event_id, "event": event_name, "bytes": size, "transport_id": transport_id},
        )


def webhook_duplicate(event_id: int | None, transport_id: str | None) -> None:
    metrics.EVENTS.labels("duplicate").inc()
    receiver_log.info(
        "webhook already stored; acknowledged without storing again",
        extra={"event_id": event_id, "transport_id": transport_id},
    )


def webhook_ping(webhook_id: str | None, secret_index: int) -> None:
    metrics.EVENTS.labels("ping").inc()
    receiver_log.info(
        "ping received: Snyk can reach this forwarder and the secret matches",
        extra={"webhook_id": webhook_id, "secret": secret_index + 1},
    )


def webhook_quarantined(event_name: str, version: str | None, event_id: int | None) -> None:
    metrics.EVENTS.labels("quarantined").inc()
    receiver_log.warning(
        "unknown Snyk event kept raw in quarantine, not forwarded; upgrade snyk-forwarder "
        "if Snyk has introduced a new event or payload version",
        extra={"event": event_name, "version": version, "quarantine_id": event_id},
    )


def webhook_rejected(
    status: int,
    code: str,
    reason: str,
    *,
    client: str | None,
    transport_id: str | None,
    event_name: str | None,
) -> None:
    if code == "bad_signature":
        metrics.SIGNATURE_FAILURES.inc()
    level = logging.WARNING if status < 500 else logging.ERROR
    receiver_log.log(
        level,
        "webhook rejected",
        extra={
            "status": status,
            "code": code,
            "reason": reason,
            "client": client,
            "transport_id": transport_id,
            "event": event_name,
        },
    )


def snapshot_unexpected_shape(event_id: int | None, problems: list[str]) -> None:
    metrics.SNAPSHOTS_MALFORMED.inc()
    receiver_log.warning(
        "snapshot stored, but parts of it yield no records: the payload is not shaped as Snyk documents "
        "project_snapshot/v0 (check the sender; `snyk-forwarder flatten` shows what it yields)",
        extra={"event_id": event_id, "problems": problems},
    )


def headers_timed_out(client: str | None, timeout: float, mid_request: bool) -> None:
    # An idle connection closed is routine (debug); one cut off mid-headers is worth seeing.
    receiver_log.log(
        logging.INFO if mid_request else logging.DEBUG,
        "connection closed: request headers not complete in time (listen.header_timeout)",
        extra={"client": client, "timeout_s": timeout, "mid_request": mid_request},
    )


def headers_too_large(client: str | None, limit: int) -> None:
    receiver_log.warning(
        "request refused: headers larger than listen.max_header_bytes", extra={"client": client, "limit": limit}
    )


_exhausted = {"last": 0.0, "since": 0}
CONNECTIONS_EXHAUSTED_EVERY = 10.0  # seconds between repeats of the warning while it lasts


def connections_exhausted(limit: int) -> None:
    """Once per ten seconds at most, with the count in between: an overload must not also flood the log."""
    _exhausted["since"] += 1
    now = time.monotonic()
    if now - _exhausted["last"] >= CONNECTIONS_EXHAUSTED_EVERY:
        receiver_log.warning(
            "at the connection limit: new requests get 503 with Retry-After; raise listen.max_connections "
            "if the host has room, or add an instance behind the load balancer",
            extra={"max_connections": limit, "refused": _exhausted["since"]},
        )
        _exhausted["last"], _exhausted["since"] = now, 0


# --- shippers --------------------------------------------------------------------------------------------


def batch_delivered(log: logging.Logger, output: str, records: int) -> None:
    metrics.RECORDS_DELIVERED.labels(output).inc(records)
    log.debug("batch delivered", extra={"output": output, "records": records})


def batch_retry_scheduled(
    log: logging.Logger, output: str, reason: str, attempt: int, delay: float, records: int
) -> None:
    metrics.DELIVERY_FAILURES.labels(output, "retry").inc()
    log.warning(
        "delivery failed; will retry the same batch",
        extra={
            "output": output,
            "reason": reason,
            "attempt": attempt,
            "retry_in_s": round(delay, 3),
            "records": records,
        },
    )


def record_dead_lettered(log: logging.Logger, output: str, record_id: str, reason: str, attempts: int) -> None:
    metrics.RECORDS_DEAD.labels(output).inc()
    log.error(
        "record refused for good; moved to the dead-letter store (see `snyk-forwarder status`)",
        extra={"output": output, "record_id": record_id, "reason": reason, "attempts": attempts},
    )


def output_paused(log: logging.Logger, output: str, reason: str, probe_interval: float) -> None:
    metrics.DELIVERY_FAILURES.labels(output, "paused").inc()
    log.error(
        "output refused our configuration; records are kept and the output is paused — fix the "
        "output's settings and reload",
        extra={"output": output, "reason": reason, "probe_in_s": probe_interval},
    )


def output_resumed(log: logging.Logger, output: str) -> None:
    log.info("output accepts records again", extra={"output": output})


def hec_ack_unavailable(log: logging.Logger, output: str, what: str) -> None:
    log.warning(
        "indexer acknowledgement is on but Splunk gives none, so a success means only received, not "
        "indexed; turn on useACK for the HEC token, or set ack = false (Splunk Cloud: Firehose only)",
        extra={"output": output, "reason": what},
    )


def record_shortened(log: logging.Logger, output: str, record_id: str, fields: list[str]) -> None:
    metrics.RECORDS_SHORTENED.labels(output).inc()
    log.debug(
        "record shortened to fit the output's size limit",
        extra={"output": output, "record_id": record_id, "fields": fields},
    )


def buffer_committed(seconds: float, operations: int) -> None:
    """Called on the buffer's writer thread after each group commit (prometheus-client is thread-safe)."""
    metrics.COMMIT_SECONDS.observe(seconds)
    metrics.COMMIT_OPERATIONS.observe(operations)


def buffer_error(log: logging.Logger, output: str, reason: str, delay: float) -> None:
    log.error(
        "buffer read or cursor update failed; retrying",
        extra={"output": output, "reason": reason, "retry_in_s": round(delay, 3)},
    )


# --- service ---------------------------------------------------------------------------------------------


def listening(url: str, address: str, port: int) -> None:
    service_log.info("listening for Snyk webhooks", extra={"url": url, "address": address, "port": port})


def maintenance_done(events_purged: int, dedup_keys_expired: int) -> None:
    if events_purged or dedup_keys_expired:
        service_log.info(
            "buffer maintenance",
            extra={"events_purged": events_purged, "dedup_keys_expired": dedup_keys_expired},
        )


def maintenance_failed(reason: str) -> None:
    service_log.error("buffer maintenance failed; will try again", extra={"reason": reason})


_last_disk_full_log = [0.0]


def disk_full_persists(since: float | None, interval: float = 60.0) -> None:
    """Logged at most once per ``interval``: a full disk must be visible without flooding the log."""
    now = time.time()
    if now - _last_disk_full_log[0] >= interval:
        _last_disk_full_log[0] = now
        service_log.error(
            "disk still full: deliveries are refused with 503; free space on the state directory's filesystem",
            extra={"full_for_s": round(now - since, 1) if since else None},
        )


def buffer_salvaged(description: str, moved_to: str) -> None:
    service_log.error(description, extra={"moved_to": moved_to})


def shutting_down(reason: str) -> None:
    service_log.info("shutting down", extra={"reason": reason})


def shippers_unfinished(outputs: list[str]) -> None:
    service_log.warning(
        "shutdown grace period over; unsent records stay buffered for the next start",
        extra={"outputs": outputs},
    )


def reloaded(changes: list[str]) -> None:
    service_log.info("configuration reloaded", extra={"changes": changes})


def reload_failed(reason: str) -> None:
    service_log.error(
        "configuration reload failed; the previous configuration stays in force", extra={"reason": reason}
    )


def reload_needs_restart(keys: list[str]) -> None:
    service_log.warning("some changed settings only take effect after a restart", extra={"keys": keys})


def probe_result(output: str, ok: bool, detail: str) -> None:
    service_log.log(
        logging.INFO if ok else logging.ERROR, "output probe", extra={"output": output, "ok": ok, "detail": detail}
    )


def admin_listening(address: str, port: int) -> None:
    service_log.info(
        "admin endpoints listening (/healthz, /readyz, /metrics)", extra={"address": address, "port": port}
    )


def stopped() -> None:
    service_log.info("stopped")
