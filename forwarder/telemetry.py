"""Everything the daemon reports about itself, named once.

Call sites call these functions; nobody writes ad-hoc log text elsewhere, so every sentence and
field name is greppable here and stays stable for the operators' log searches. Secrets, signature
values and bodies never appear: only sizes, ids and hashes.
"""

from __future__ import annotations

import logging
import time

receiver_log = logging.getLogger("forwarder.receiver")
service_log = logging.getLogger("forwarder.service")


# --- receiver --------------------------------------------------------------------------------------------


def webhook_stored(event_id: int | None, event_name: str, size: int, transport_id: str | None) -> None:
    receiver_log.debug(
        "webhook stored",
        extra={"event_id": event_id, "event": event_name, "bytes": size, "transport_id": transport_id},
    )


def webhook_duplicate(event_id: int | None, transport_id: str | None) -> None:
    receiver_log.info(
        "webhook already stored; acknowledged without storing again",
        extra={"event_id": event_id, "transport_id": transport_id},
    )


def webhook_ping(webhook_id: str | None, secret_index: int) -> None:
    receiver_log.info(
        "ping received: Snyk can reach this forwarder and the secret matches",
        extra={"webhook_id": webhook_id, "secret": secret_index + 1},
    )


def webhook_quarantined(event_name: str, version: str | None, event_id: int | None) -> None:
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


# --- shippers --------------------------------------------------------------------------------------------


def batch_delivered(log: logging.Logger, output: str, records: int) -> None:
    log.debug("batch delivered", extra={"output": output, "records": records})


def batch_retry_scheduled(
    log: logging.Logger, output: str, reason: str, attempt: int, delay: float, records: int
) -> None:
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
    log.error(
        "record refused for good; moved to the dead-letter store (see `snyk-forwarder status`)",
        extra={"output": output, "record_id": record_id, "reason": reason, "attempts": attempts},
    )


def output_paused(log: logging.Logger, output: str, reason: str, probe_interval: float) -> None:
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


def buffer_error(log: logging.Logger, output: str, reason: str, delay: float) -> None:
    log.error(
        "buffer read or cursor update failed; retrying",
        extra={"output": output, "reason": reason, "retry_in_s": round(delay, 3)},
    )


# --- service ---------------------------------------------------------------------------------------------


def listening(url: str, address: str, port: int) -> None:
    service_log.info("listening for Snyk webhooks", extra={"url": url, "address": address, "port": port})


def maintenance_done(events_purged: int, transport_ids_expired: int) -> None:
    if events_purged or transport_ids_expired:
        service_log.info(
            "buffer maintenance",
            extra={"events_purged": events_purged, "transport_ids_expired": transport_ids_expired},
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


def stopped() -> None:
    service_log.info("stopped")
