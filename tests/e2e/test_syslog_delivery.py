"""End to end: a signed webhook over TLS to the real daemon, records out to a real rsyslog over TCP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import sample
from tests.support.daemon import LocalCA, config_text, post, running, wait_for_lines
from tests.support.syslogd import Rsyslog

pytestmark = pytest.mark.slow


def test_records_reach_the_file_and_rsyslog_with_the_same_ids(workdir: Path, test_ca: LocalCA) -> None:
    out = workdir / "records.jsonl"
    with Rsyslog(workdir / "rsyslog", ["tcp"], max_message_size=1024 * 1024) as rsyslog:
        outputs = f"""
[outputs.local]
type = "file"
path = "{out}"

[outputs.siem]
type = "syslog"
endpoint = "127.0.0.1:{rsyslog.ports["tcp"]}"
hostname = "ci-runner-07"
app_name = "snykfwd"
batch_timeout = "50ms"
"""
        with (
            running(workdir / "daemon", config_text(workdir / "state", test_ca, outputs)) as daemon,
            daemon.client(test_ca.ca_file) as client,
        ):
            for name in ("body_a.json", "body_b.json", "snapshot_small.json", "snapshot_container.json"):
                assert post(client, sample(name), timestamp="2024-03-07T09:05:03.120Z").status_code == 202
            assert post(client, sample("ping.json"), event="ping/v0").status_code == 200
            got = rsyslog.wait_for_messages(10, timeout=30)
            lines = wait_for_lines(out, 10)
    from_syslog = [json.loads(m["msg"]) for m in got]
    assert [r["event"]["id"] for r in from_syslog] == [r["event"]["id"] for r in lines]
    assert len({r["event"]["id"] for r in lines}) == 10
    assert from_syslog[1]["snyk"]["issue"]["title"] == "Café sandbox escape 🚒"
    assert "Café sandbox escape 🚒".encode() in got[1]["raw"].encode()
    # severity derives from Snyk's: body_a is high → err (3), body_b medium → warning (4)
    assert [(m["facility"], m["severity"]) for m in got[:2]] == [(16, 3), (16, 4)]
    assert all(m["hostname"] == "ci-runner-07" and m["app_name"] == "snykfwd" for m in got)
