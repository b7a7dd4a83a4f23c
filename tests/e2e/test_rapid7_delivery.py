"""End to end: signed webhooks into the real daemon, out through all three rapid7 modes at once.

Token TCP over TLS (down when the webhooks arrive, back later), the HTTP POST endpoint (answering
503 twice first) and a real rsyslog standing in for an InsightIDR Collector's listening port.
Every record reaches every destination with the same ids, and the log token, given through the
environment, appears nowhere in the daemon's debug log.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from tests.helpers import sample
from tests.support.daemon import Daemon, LocalCA, config_text, post
from tests.support.rapid7 import TokenLineReceiver, WebhookReceiver
from tests.support.syslogd import Rsyslog

pytestmark = pytest.mark.slow
TOKEN = "8f0c6d2e-1b7a-4c3e-9d55-0a1b2c3d4e5f"
FAST = """batch_timeout = "50ms"
retry_initial_backoff = "50ms"
retry_max_backoff = "500ms"
"""


def test_records_reach_rapid7_by_every_mode_with_the_same_ids(workdir: Path, test_ca: LocalCA) -> None:
    with (
        TokenLineReceiver([TOKEN], cert_file=test_ca.cert_file, key_file=test_ca.key_file) as token_rx,
        WebhookReceiver([TOKEN], cert_file=test_ca.cert_file, key_file=test_ca.key_file) as webhook_rx,
        Rsyslog(workdir / "rsyslog", ["tcp_lf"], max_message_size=128 * 1024) as collector_rx,
    ):
        outputs = f"""
[outputs.r7_token]
type = "rapid7"
mode = "token_tcp"
endpoint = "127.0.0.1:{token_rx.port}"
token = {{ env = "RAPID7_LOG_TOKEN" }}
tls_ca_file = "{test_ca.ca_file}"
{FAST}
[outputs.r7_webhook]
type = "rapid7"
mode = "webhook"
endpoint = "{webhook_rx.base_url}"
token = {{ env = "RAPID7_LOG_TOKEN" }}
tls_ca_file = "{test_ca.ca_file}"
{FAST}
[outputs.r7_collector]
type = "rapid7"
mode = "collector"
endpoint = "127.0.0.1:{collector_rx.ports["tcp_lf"]}"
header = "rfc5424"
hostname = "ci-runner-07"
{FAST}
"""
        token_rx.stop()  # Rapid7 unreachable when the findings arrive
        webhook_rx.fail(503, times=2)
        daemon = Daemon(
            workdir / "daemon", config_text(workdir / "state", test_ca, outputs), env={"RAPID7_LOG_TOKEN": TOKEN}
        )
        daemon.start()
        try:
            with daemon.client(test_ca.ca_file) as client:
                for name in ("body_a.json", "body_b.json", "snapshot_small.json", "snapshot_container.json"):
                    assert post(client, sample(name), timestamp="2024-03-07T09:05:03.120Z").status_code == 202
            from_webhook = webhook_rx.wait_for_events(10, timeout=30)
            from_collector = collector_rx.wait_for_messages(10, timeout=30)
            token_rx.restart()
            from_token = token_rx.wait_for_lines(10, timeout=30)
        finally:
            daemon.stop()
        log = "\n".join(path.read_text() for path in (workdir / "daemon").glob("*.log"))
    token_ids = [orjson.loads(line.payload)["event"]["id"] for line in from_token]
    webhook_ids = [orjson.loads(request.body)["event"]["id"] for request in from_webhook]
    collector_ids = [json.loads(message["msg"])["event"]["id"] for message in from_collector]
    assert len(set(token_ids)) == 10
    assert set(token_ids) == set(webhook_ids) == set(collector_ids)
    assert token_ids == collector_ids, "buffer order on the stream paths"
    assert len(webhook_ids) == 10, "no duplicates: every request was answered (the 503s were retried)"
    assert token_rx.problems == []
    assert all(m["hostname"] == "ci-runner-07" for m in from_collector)
    assert "/v1/noformat/***" in log, "httpx's request log is there, with the token redacted"
    assert TOKEN not in log
