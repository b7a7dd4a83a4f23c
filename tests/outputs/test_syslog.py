"""The syslog output against real rsyslog and syslog-ng (TCP, octet counting), and across their restarts."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from forwarder.outputs.syslog.client import SyslogOutput
from forwarder.outputs.syslog.config import SyslogSettings
from forwarder.types import Delivered, Message, Position, Record, Retry
from tests.support.syslogd import Rsyslog, SyslogNg, SyslogReceiver

pytestmark = pytest.mark.anyio
REFERENCE_MS = 1709802303120


def message(n: int, severity: str | None = "high", body: bytes | None = None) -> Message:
    record = Record(f"id{n}", Position(1, n), REFERENCE_MS, severity, "introduced", {})
    return Message(record, body or json.dumps({"n": n, "title": "Café 🚒", "d": "a\nb"}, ensure_ascii=False).encode())


@pytest.mark.parametrize("receiver_class", [Rsyslog, SyslogNg])
async def test_frames_arrive_whole_and_parse_as_rfc5424(tmp_path: Path, receiver_class: type[SyslogReceiver]) -> None:
    with receiver_class(tmp_path, ["tcp"]) as receiver:
        settings = SyslogSettings(
            host="127.0.0.1", port=receiver.ports["tcp"], hostname="ci-runner-07", app_name="snykfwd"
        )
        output = SyslogOutput("siem", settings)
        assert isinstance(await output.send([message(1, "critical"), message(2, None)]), Delivered)
        got = receiver.wait_for_messages(2)
        await output.aclose()
    assert [json.loads(m["msg"])["n"] for m in got] == [1, 2]
    assert [(m["facility"], m["severity"]) for m in got] == [(16, 2), (16, 6)]
    assert {m["hostname"] for m in got} == {"ci-runner-07"} and {m["app_name"] for m in got} == {"snykfwd"}
    assert all(datetime.fromisoformat(m["timestamp"]).timestamp() == REFERENCE_MS / 1000 for m in got)
    assert json.loads(got[0]["msg"])["title"] == "Café 🚒"


async def test_a_receiver_restart_is_a_retry_then_delivery(tmp_path: Path) -> None:
    with Rsyslog(tmp_path, ["tcp"]) as receiver:
        settings = SyslogSettings(host="127.0.0.1", port=receiver.ports["tcp"], connect_timeout=1, send_timeout=2)
        output = SyslogOutput("siem", settings)
        assert isinstance(await output.send([message(1)]), Delivered)
        receiver.stop()
        outcome = await output.send([message(2)])
        assert isinstance(outcome, Retry), "a closed receiver must not count as delivered"
        assert str(receiver.ports["tcp"]) in outcome.reason
        receiver.restart()
        assert isinstance(await output.send([message(2)]), Delivered)
        got = receiver.wait_for_messages(2)
        await output.aclose()
    assert sorted(json.loads(m["msg"])["n"] for m in got) == [1, 2]
