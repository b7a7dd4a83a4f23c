"""The one promise, under faults, with real processes: what was acknowledged reaches every output.

kill -9 at random moments under load, a receiver that goes away and comes back, a full disk, a
damaged buffer file, a buffer over its high-water mark, SIGTERM while an output is failing.
Every timer in these configurations is scaled down so the whole file runs in well under a minute.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import issue, snapshot_body
from tests.support.daemon import Daemon, LocalCA, config_text, post, read_jsonl
from tests.support.syslogd import Rsyslog

pytestmark = pytest.mark.slow

FAST_RETRY = 'retry_initial_backoff = "0.05s"\nretry_max_backoff = "0.5s"\nbatch_timeout = "20ms"'


def outputs(file: Path, syslog_port: int | None = None) -> str:
    text = f'[outputs.local]\ntype = "file"\npath = "{file}"\nfsync = false\n{FAST_RETRY}\n'
    if syslog_port is not None:
        text += (
            f'\n[outputs.siem]\ntype = "syslog"\nendpoint = "127.0.0.1:{syslog_port}"\nconnect_timeout = "1s"\n'
            f'send_timeout = "2s"\nmax_message_bytes = "256KiB"\n{FAST_RETRY}\n'
        )
    return text


def body(tag: str, issues: int = 3, pad: int = 0) -> bytes:
    return snapshot_body([issue(f"{tag}-I{i}", description="d" * pad) for i in range(issues)])


def issue_ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["snyk"]["issue"]["id"] for r in records]


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if condition():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def assert_same_record_for_each_issue(records: list[dict[str, Any]]) -> None:
    """A duplicate may only be a resend of the very same record (same deterministic id)."""
    ids: dict[str, set[str]] = {}
    for r in records:
        ids.setdefault(r["snyk"]["issue"]["id"], set()).add(r["event"]["id"])
    assert all(len(v) == 1 for v in ids.values())


class Load:
    """Concurrent signed POSTs until stopped; remembers exactly which got a 2xx."""

    def __init__(self, daemon: Daemon, ca: LocalCA, tag: str, workers: int = 6) -> None:
        self.acked: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(daemon, ca, f"{tag}-W{w}")) for w in range(workers)]

    def _run(self, daemon: Daemon, ca: LocalCA, tag: str) -> None:
        with daemon.client(ca.ca_file) as client:
            for n in range(100_000):
                if self._stop.is_set():
                    return
                name = f"{tag}-N{n}"
                try:
                    status = post(client, body(name, issues=2)).status_code
                except (httpx.HTTPError, OSError):
                    return  # the daemon died under us: this request was never acknowledged
                if status == 202:
                    with self._lock:
                        self.acked |= {f"{name}-I0", f"{name}-I1"}

    @contextmanager
    def running(self) -> Iterator[Load]:
        for t in self._threads:
            t.start()
        try:
            yield self
        finally:
            self._stop.set()
            for t in self._threads:
                t.join(timeout=30)


def test_kill_9_at_random_moments_under_load_loses_nothing(workdir: Path, test_ca: LocalCA) -> None:
    rng = random.Random(20261203)
    out = workdir / "records.jsonl"
    with Rsyslog(workdir / "rsyslog", ["tcp"], max_message_size=256 * 1024) as rsyslog:
        daemon = Daemon(workdir / "d", config_text(workdir / "state", test_ca, outputs(out, rsyslog.ports["tcp"])))
        acked: set[str] = set()
        try:
            for cycle in range(6):
                daemon.start()
                load = Load(daemon, test_ca, f"C{cycle}")
                with load.running():
                    # at least a few acknowledged deliveries per cycle, then a random moment
                    wait_until(lambda: len(load.acked) >= 20, 20, "the first acknowledged deliveries")  # noqa: B023
                    time.sleep(rng.uniform(0.0, 0.8))
                    daemon.kill()
                acked |= load.acked
            daemon.start()
            wait_until(lambda: acked <= set(issue_ids(read_jsonl(out))), 60, "every acknowledged record in the file")
            wait_until(
                lambda: acked <= {json.loads(m["msg"])["snyk"]["issue"]["id"] for m in rsyslog.messages()},
                60,
                "every acknowledged record in rsyslog",
            )
        finally:
            daemon.kill()
        from_syslog = [json.loads(m["msg"]) for m in rsyslog.messages()]
    assert len(acked) > 50, "the load produced too few acknowledged deliveries to mean anything"
    for records in (read_jsonl(out), from_syslog):
        assert acked <= set(issue_ids(records))
        assert_same_record_for_each_issue(records)


def test_a_receiver_down_for_a_while_gets_everything_in_order(workdir: Path, test_ca: LocalCA) -> None:
    out = workdir / "records.jsonl"
    with Rsyslog(workdir / "rsyslog", ["tcp"], max_message_size=256 * 1024) as rsyslog:
        config = config_text(workdir / "state", test_ca, outputs(out, rsyslog.ports["tcp"]))
        daemon = Daemon(workdir / "d", config).start()
        try:
            with daemon.client(test_ca.ca_file) as client:
                assert post(client, body("BEFORE")).status_code == 202
                rsyslog.wait_for_messages(3)
                rsyslog.stop()
                for n in range(15):
                    assert post(client, body(f"DOWN{n:02d}")).status_code == 202
                time.sleep(1.0)  # several failed attempts with backoff
                rsyslog.restart()
                got = rsyslog.wait_for_messages(48, timeout=30)
        finally:
            daemon.stop()
    syslog_order = [json.loads(m["msg"])["snyk"]["issue"]["id"] for m in got]
    file_order = issue_ids(read_jsonl(out))
    deduped = list(dict.fromkeys(syslog_order))
    assert deduped == file_order, "per-output order is buffer order"
    assert len(deduped) == 48


def test_c18_sigterm_while_the_output_fails_then_everything_once(workdir: Path, test_ca: LocalCA) -> None:
    with Rsyslog(workdir / "rsyslog", ["tcp"]) as rsyslog:
        port = rsyslog.ports["tcp"]
        rsyslog.stop()
        config = config_text(workdir / "state", test_ca, outputs(workdir / "f.jsonl", port))
        daemon = Daemon(workdir / "d", config).start()
        try:
            with daemon.client(test_ca.ca_file) as client:
                for n in range(10):
                    assert post(client, body(f"T{n}", issues=1)).status_code == 202
            time.sleep(0.5)
            started = time.monotonic()
            assert daemon.terminate() == 0
            assert time.monotonic() - started < 10
            rsyslog.restart()
            daemon.start()
            got = rsyslog.wait_for_messages(10, timeout=30)
            time.sleep(0.5)
            got = rsyslog.messages()
        finally:
            daemon.stop()
    ids = [json.loads(m["msg"])["snyk"]["issue"]["id"] for m in got]
    assert sorted(ids) == sorted(f"T{n}-I0" for n in range(10)), "each record delivered exactly once"


def test_a_damaged_buffer_is_salvaged_at_start_and_the_daemon_keeps_serving(workdir: Path, test_ca: LocalCA) -> None:
    out = workdir / "records.jsonl"
    state = workdir / "state"
    with Rsyslog(workdir / "rsyslog", ["tcp"]) as rsyslog:
        rsyslog.stop()  # nothing drains: the buffer fills with undelivered events
        config = config_text(state, test_ca, outputs(out, rsyslog.ports["tcp"]))
        daemon = Daemon(workdir / "d", config).start()
        with daemon.client(test_ca.ca_file) as client:
            for n in range(60):
                assert post(client, body(f"OLD{n}", pad=3000)).status_code == 202
        assert daemon.terminate() == 0
        db = state / "buffer.db"
        with db.open("r+b") as fh:
            fh.seek(4096 * 40)
            fh.write(b"\x00" * 4096 * 4)  # four zeroed pages in the middle
        rsyslog.restart()
        daemon.start()
        try:
            errors = [e for e in daemon.logs() if e.get("level") == "ERROR" and "damaged" in e.get("message", "")]
            assert len(errors) == 1
            moved = Path(errors[0]["moved_to"])
            assert moved.is_dir() and (moved / "buffer.db").exists()
            assert "lost" in errors[0]["message"] and str(moved) in errors[0]["message"]
            with daemon.client(test_ca.ca_file) as client:
                assert post(client, body("NEW")).status_code == 202
            wait_until(lambda: "NEW-I0" in issue_ids(read_jsonl(out)), 30, "the new delivery in the file")
        finally:
            daemon.stop()
        daemon.start()  # a second start finds a sound file: nothing more is reported
        try:
            assert not [e for e in daemon.logs() if "damaged" in e.get("message", "")]
        finally:
            daemon.stop()


def test_over_the_high_water_mark_deliveries_get_503_until_it_drains(workdir: Path, test_ca: LocalCA) -> None:
    out = workdir / "records.jsonl"
    with Rsyslog(workdir / "rsyslog", ["tcp"], max_message_size=256 * 1024) as rsyslog:
        rsyslog.stop()
        limits = 'max_bytes = "1MiB"\nhigh_water = 0.5\nlow_water = 0.25\nmaintenance_interval = "0.2s"'
        config = config_text(workdir / "state", test_ca, outputs(out, rsyslog.ports["tcp"]), buffer_extra=limits)
        config = config.replace('maintenance_interval = "1s"\n', "")
        daemon = Daemon(workdir / "d", config).start()
        try:
            with daemon.client(test_ca.ca_file) as client:
                statuses = []
                for n in range(30):
                    response = post(client, body(f"BP{n}", issues=1, pad=50_000))
                    statuses.append(response.status_code)
                    if response.status_code == 503:
                        assert int(response.headers["retry-after"]) > 0
                        assert response.json()["error"] == "buffer_full"
                        break
                assert statuses[-1] == 503 and set(statuses[:-1]) == {202}
                accepted = len(statuses) - 1
                rsyslog.restart()
                rsyslog.wait_for_messages(accepted, timeout=30)
                wait_until(
                    lambda: post(client, body(f"AFTER{uuid.uuid4()}", issues=1)).status_code == 202,
                    30,
                    "deliveries accepted again after draining",
                )
        finally:
            daemon.stop()


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare for a private tmpfs")
def test_c20_a_full_disk_answers_503_then_recovers_losing_nothing(workdir: Path, test_ca: LocalCA) -> None:
    state = workdir / "state"
    state.mkdir()
    out = workdir / "records.jsonl"
    # The daemon runs in its own mount namespace with the state directory on a 3 MiB tmpfs.
    wrap = ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=8m tmpfs "{state}" && exec "$0" "$@"']
    with Rsyslog(workdir / "rsyslog", ["tcp"], max_message_size=256 * 1024) as rsyslog:
        rsyslog.stop()  # nothing drains until the receiver is back
        limits = 'reserve_bytes = "2MiB"\nmaintenance_interval = "0.2s"'
        config = config_text(state, test_ca, outputs(out, rsyslog.ports["tcp"]), buffer_extra=limits)
        config = config.replace('maintenance_interval = "1s"\n', "")
        daemon = Daemon(workdir / "d", config, wrap=wrap).start()
        try:
            acked: list[str] = []
            refused = 0
            rss: list[int] = []
            with daemon.client(test_ca.ca_file) as client:
                for n in range(200):
                    response = post(client, body(f"DF{n}", issues=1, pad=50_000))
                    if response.status_code == 202:
                        acked.append(f"DF{n}-I0")
                    else:
                        assert response.status_code == 503 and response.headers["retry-after"].isdigit()
                        assert response.json()["error"] == "disk_full"
                        refused += 1
                        rss.append(_rss_kib(daemon))
                        if refused >= 20:
                            break
                assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon must not crash"
                assert acked and refused == 20
                assert max(rss) - min(rss) < 20_000, f"resident memory grew while refusing: {rss}"
                rsyslog.restart()
                got = rsyslog.wait_for_messages(len(acked), timeout=60)
                wait_until(
                    lambda: post(client, body(f"AFTER{uuid.uuid4()}", issues=1)).status_code == 202,
                    60,
                    "deliveries accepted again once space returned",
                )
            delivered = [json.loads(m["msg"])["snyk"]["issue"]["id"] for m in got]
            assert set(acked) <= set(delivered)
            full_logs = [e for e in daemon.logs() if "disk full" in e.get("message", "")]
            assert 1 <= len(full_logs) <= 3, "the disk-full state is logged once per interval, not per request"
        finally:
            daemon.stop()


def _rss_kib(daemon: Daemon) -> int:
    assert daemon.proc is not None
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _unused(_: ThreadPoolExecutor, __: signal.Signals) -> None:
    return None


def test_a_deleted_state_directory_refuses_deliveries_and_says_restart(workdir: Path, test_ca: LocalCA) -> None:
    out = workdir / "records.jsonl"
    state = workdir / "state"
    daemon = Daemon(workdir / "d", config_text(state, test_ca, outputs(out))).start()
    try:
        with daemon.client(test_ca.ca_file) as client:
            assert post(client, body("BEFORE")).status_code == 202
            wait_until(lambda: len(read_jsonl(out)) == 3, 30, "the first delivery in the file")
            shutil.rmtree(state)
            refused = post(client, body("AFTER"))
            assert refused.json()["error"] == "buffer_lost" and int(refused.headers["retry-after"]) > 0
            assert "restart the service" in refused.json()["message"]
            ready = httpx.get(f"http://127.0.0.1:{daemon.admin_port}/readyz", timeout=10)
            assert ready.status_code == 503 and "buffer file deleted or replaced" in ready.text
            metrics = httpx.get(f"http://127.0.0.1:{daemon.admin_port}/metrics", timeout=10)
            assert metrics.status_code == 200  # read from the still-open file: how far draining got
            assert 'snyk_forwarder_output_pending_events{output="local"} 0.0' in metrics.text
            assert not state.exists()  # nothing quietly started a new, empty buffer there
        logs = daemon.logs()
        lost = [e for e in logs if "deleted or replaced" in e.get("message", "")]
        assert len(lost) == 1 and lost[0]["level"] == "ERROR"
        assert [e["event_id"] for e in logs if e.get("message") == "webhook stored"] == [1]
    finally:
        daemon.stop()


def test_a_second_daemon_on_the_same_state_directory_exits_69_naming_the_first(workdir: Path, test_ca: LocalCA) -> None:
    config = config_text(workdir / "state", test_ca, outputs(workdir / "records.jsonl"))
    first = Daemon(workdir / "first", config).start()
    try:
        second = Daemon(workdir / "second", config)
        with pytest.raises(RuntimeError, match="exited with 69"):
            second.start()
        assert first.proc is not None
        assert f"pid {first.proc.pid}" in second.log_path.read_text()
    finally:
        first.stop()
