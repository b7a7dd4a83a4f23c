"""End to end: signed webhooks over TLS to the real daemon, events out to the HEC double over TLS,
with indexer acknowledgement, and an outage of the HEC in the middle."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import issue, sample, snapshot_body
from tests.support.daemon import Daemon, LocalCA, config_text, post
from tests.support.hec import EVENT_PATHS, HecReceiver, TokenSettings

pytestmark = pytest.mark.slow

TOKEN = "0b7e5c1a-3f2d-4e6b-8a9c-1d2e3f4a5b6c"
SAMPLES = ("body_a.json", "body_b.json", "snapshot_small.json", "snapshot_container.json")  # 10 records


def hec_output(receiver: HecReceiver, ca: LocalCA) -> str:
    return f"""
[outputs.splunk]
type = "splunk_hec"
endpoint = "{receiver.url}"
token = {{ env = "SPLUNK_HEC_TOKEN" }}
index = "snyk"
host = "forwarder-01.example.com"
tls_ca_file = "{ca.ca_file}"
ack = true
ack_poll_interval = "50ms"
ack_timeout = "2s"
request_timeout = "2s"
batch_timeout = "50ms"
retry_initial_backoff = "50ms"
retry_max_backoff = "500ms"
"""


def wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


def test_webhooks_reach_hec_across_an_outage(workdir: Path, test_ca: LocalCA) -> None:
    tokens = {TOKEN: TokenSettings(use_ack=True, indexes=["snyk"])}
    with HecReceiver(tokens, cert_file=test_ca.cert_file, key_file=test_ca.key_file) as receiver:
        config = config_text(workdir / "state", test_ca, hec_output(receiver, test_ca))
        daemon = Daemon(workdir / "daemon", config, env={"SPLUNK_HEC_TOKEN": TOKEN}).start()
        try:
            with daemon.client(test_ca.ca_file) as client:
                for name in SAMPLES:
                    assert post(client, sample(name), timestamp="2024-03-07T09:05:03.120Z").status_code == 202
                wait(lambda: len({e["event"]["event"]["id"] for e in receiver.acked_events}) == 10)
                receiver.stop()  # the outage: connections refused, ack state forgotten on restart
                later = [snapshot_body([issue(f"SNYK-LATE-{n}-{i}") for i in range(3)]) for n in range(4)]
                for body in later:
                    assert post(client, body).status_code == 202
                # the shipper retries against a closed port meanwhile
                wait(lambda: any(e.get("message", "").startswith("delivery failed") for e in daemon.logs()))
                receiver.start()
                wait(lambda: len({e["event"]["event"]["id"] for e in receiver.acked_events}) == 22)
        finally:
            daemon.stop()
        logs = daemon.logs()
        banner = (daemon.workdir / "stdout-1.txt").read_text()
        assert "(splunk_hec, ecs-json) → https://127.0.0.1:" in banner and ":?" not in banner
    events = receiver.events
    ids = [e["event"]["event"]["id"] for e in events]
    assert len(set(ids)) == 22, "every record arrived"
    # A copy exists only where Splunk held a batch whose reply or ack the forwarder never saw (the
    # outage): it is the same record, with the same id, so `dedup event.id` removes it.
    copies: dict[str, list[dict[str, object]]] = {}
    for envelope in events:
        copies.setdefault(envelope["event"]["event"]["id"], []).append(envelope["event"])
    assert all(all(copy == same[0] for copy in same) for same in copies.values())
    assert len(ids) - len(set(ids)) <= len(receiver.lost_ack_events)
    first = events[0]
    assert first["time"] == 1709802303.12 and first["sourcetype"] == "snyk:vulnerability"
    assert first["host"] == "forwarder-01.example.com" and first["index"] == "snyk"
    assert first["fields"]["severity"] == first["event"]["vulnerability"]["severity"]
    posts = [r for r in receiver.requests if r.path in EVENT_PATHS]
    assert all(r.header("Authorization") == f"Splunk {TOKEN}" for r in posts)
    assert len({r.header("X-Splunk-Request-Channel") for r in posts}) == 1, "one channel for the daemon's life"
    assert all(TOKEN not in str(entry) for entry in logs), "the token never appears in the logs"
    assert any(e.get("message", "").startswith("delivery failed") for e in logs), "the outage was noticed"
