"""Running it as a service: systemd notifications, admin endpoints, reload under load, operator CLI."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import SECRET, issue, sample, sign, snapshot_body
from tests.support.daemon import Daemon, LocalCA, config_text, post, read_jsonl
from tests.support.ports import free_port
from tests.support.syslogd import Rsyslog

pytestmark = pytest.mark.slow


def file_output(name: str, path: Path) -> str:
    return f'[outputs.{name}]\ntype = "file"\npath = "{path}"\nfsync = false\nbatch_timeout = "10ms"\n'


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forwarder", *args], capture_output=True, text=True, timeout=60, env=env
    )


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if condition():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_systemd_notifications_ready_watchdog_reload_stopping(workdir: Path, test_ca: LocalCA) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(workdir / "notify.sock"))
    notify.settimeout(10)
    config = config_text(workdir / "state", test_ca, file_output("local", workdir / "o.jsonl"))
    daemon = Daemon(
        workdir / "d", config, env={"NOTIFY_SOCKET": str(workdir / "notify.sock"), "WATCHDOG_USEC": "400000"}
    )
    try:
        daemon.start()
        messages = [notify.recv(4096).decode() for _ in range(3)]
        ready = [m for m in messages if m.startswith("READY=1")]
        assert ready and daemon.url in ready[0]
        assert any(m == "WATCHDOG=1" for m in messages) or notify.recv(4096) == b"WATCHDOG=1"
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        seen = [notify.recv(4096).decode() for _ in range(8)]
        reload_at = next(i for i, m in enumerate(seen) if m.startswith("RELOADING=1"))
        assert any(m.startswith("READY=1") for m in seen[reload_at + 1 :])
        assert daemon.terminate() == 0
        tail = []
        for _ in range(20):
            try:
                tail.append(notify.recv(4096).decode())
            except TimeoutError:
                break
            if tail[-1].startswith("STOPPING=1"):
                break
        assert tail and tail[-1].startswith("STOPPING=1")
    finally:
        daemon.kill()
        notify.close()


def test_admin_endpoints_health_readiness_and_metrics(workdir: Path, test_ca: LocalCA) -> None:
    dead = free_port()
    outputs = file_output("local", workdir / "o.jsonl") + (
        f'[outputs.siem]\ntype = "syslog"\nendpoint = "127.0.0.1:{dead}"\nretry_initial_backoff = "0.05s"\n'
        'retry_max_backoff = "0.2s"\n'
    )
    daemon = Daemon(workdir / "d", config_text(workdir / "state", test_ca, outputs)).start()
    try:
        assert daemon.admin_port is not None
        admin = httpx.Client(base_url=f"http://127.0.0.1:{daemon.admin_port}", timeout=10)
        with daemon.client(test_ca.ca_file) as client:
            assert post(client, sample("body_a.json")).status_code == 202
            assert post(client, sample("body_b.json"), signature="sha256=" + "0" * 64).status_code == 401
        wait_until(lambda: len(read_jsonl(workdir / "o.jsonl")) == 1, 10, "the record in the file")
        assert admin.get("/healthz").json() == {"alive": True}
        ready = admin.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        text = admin.get("/metrics").text
        assert 'snyk_forwarder_webhook_requests_total{status="202"} 1.0' in text
        assert 'snyk_forwarder_webhook_requests_total{status="401"} 1.0' in text
        assert "snyk_forwarder_signature_failures_total 1.0" in text
        assert 'snyk_forwarder_events_total{outcome="stored"} 1.0' in text
        assert 'snyk_forwarder_records_delivered_total{output="local"} 1.0' in text
        assert 'snyk_forwarder_output_pending_events{output="siem"} 1.0' in text
        assert 'snyk_forwarder_output_pending_events{output="local"} 0.0' in text
        retry = 'snyk_forwarder_delivery_failures_total{kind="retry",output="siem"}'
        wait_until(lambda: retry in admin.get("/metrics").text, 10, "a failed attempt counted for siem")
        assert "snyk_forwarder_buffer_commit_seconds_bucket" in text
        admin.close()
    finally:
        daemon.stop()


def test_readiness_reports_a_paused_output_and_backpressure(workdir: Path, test_ca: LocalCA) -> None:
    # a tiny buffer limit with an unreachable output: the high-water mark trips after one body
    dead = free_port()
    outputs = f'[outputs.siem]\ntype = "syslog"\nendpoint = "127.0.0.1:{dead}"\n'
    config = config_text(
        workdir / "state", test_ca, outputs, buffer_extra='max_bytes = "1MiB"\nhigh_water = 0.05\nlow_water = 0.01'
    )
    daemon = Daemon(workdir / "d", config).start()
    try:
        with daemon.client(test_ca.ca_file) as client:
            assert post(client, snapshot_body([issue("BIG", description="x" * 80_000)])).status_code == 202
            refused = post(client, snapshot_body([issue("NEXT")]))
        assert refused.status_code == 503 and refused.headers["retry-after"]
        ready = httpx.get(f"http://127.0.0.1:{daemon.admin_port}/readyz", timeout=10)
        assert ready.status_code == 503
        assert any("high-water" in p for p in ready.json()["problems"])
    finally:
        daemon.stop()


def test_reload_under_load_loses_nothing_and_bad_config_keeps_the_old_one(workdir: Path, test_ca: LocalCA) -> None:
    first, second = workdir / "a.jsonl", workdir / "b.jsonl"
    state = workdir / "state"
    config = config_text(state, test_ca, file_output("a", first))
    daemon = Daemon(workdir / "d", config).start()
    acked: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with daemon.client(test_ca.ca_file) as client:
            for n in range(10_000):
                if stop.is_set():
                    return
                if post(client, snapshot_body([issue(f"L{n}")])).status_code == 202:
                    acked.append(f"L{n}")

    worker = threading.Thread(target=load)
    try:
        worker.start()
        time.sleep(0.5)
        new_secret = "rotated-secret-value-2"
        reloaded = (
            config.replace(f'secret = "{SECRET}"', f'secrets = ["{SECRET}", "{new_secret}"]')
            + "\n"
            + file_output("b", second)
        )
        daemon.config_path.write_text(reloaded)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any(e.get("message") == "configuration reloaded" for e in daemon.logs()), 10, "the reload")
        time.sleep(0.5)
        with daemon.client(test_ca.ca_file) as client:  # the second secret is accepted now
            body = snapshot_body([issue("ROTATED")])
            assert post(client, body, signature=sign(body, new_secret)).status_code == 202
        daemon.config_path.write_text(reloaded.replace("[webhook]", "[webhook\n"))  # broken TOML
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any("reload failed" in e.get("message", "") for e in daemon.logs()), 10, "the refusal")
        time.sleep(0.3)
        stop.set()
        worker.join(timeout=30)
        expected = set(acked) | {"ROTATED"}
        wait_until(lambda: expected <= {r["snyk"]["issue"]["id"] for r in read_jsonl(first)}, 30, "all records in a")
        wait_until(lambda: "ROTATED" in {r["snyk"]["issue"]["id"] for r in read_jsonl(second)}, 30, "records in b")
        assert daemon.proc.poll() is None, "a bad reload must not stop the daemon"
    finally:
        stop.set()
        worker.join(timeout=30)
        daemon.stop()
    assert len(acked) > 20
    in_a = [r["snyk"]["issue"]["id"] for r in read_jsonl(first)]
    assert len(in_a) == len(set(in_a)), "nothing was sent twice to the output that kept running"


def test_operator_cli_status_replay_flatten_and_probe(workdir: Path, test_ca: LocalCA) -> None:
    out = workdir / "o.jsonl"
    with Rsyslog(workdir / "rsyslog", ["tcp"]) as rsyslog:
        port = rsyslog.ports["tcp"]
        dead = free_port()
        outputs = file_output("local", out) + (
            f'[outputs.siem]\ntype = "syslog"\nendpoint = "127.0.0.1:{port}"\nmax_message_bytes = 2500\n'
            f'[outputs.down]\ntype = "syslog"\nendpoint = "127.0.0.1:{dead}"\nconnect_timeout = "1s"\n'
        )
        config = config_text(workdir / "state", test_ca, outputs)
        daemon = Daemon(workdir / "d", config).start()
        try:
            with daemon.client(test_ca.ca_file) as client:
                # 600 short version strings cannot be shortened below 2,500 bytes: dead-lettered on "siem"
                huge = issue("HUGE")
                huge["pkgVersions"] = [f"1.0.{n}" for n in range(600)]
                big = snapshot_body([huge])
                assert post(client, big).status_code == 202
                assert post(client, sample("body_a.json")).status_code == 202
            wait_until(lambda: len(read_jsonl(out)) == 2, 10, "records in the file")

            def status_json() -> dict[str, Any]:
                result = cli("status", "--config", str(daemon.config_path), "--json")
                assert result.returncode == 0, result.stderr
                return json.loads(result.stdout)  # type: ignore[no-any-return]

            def down_error() -> object:
                return next(o for o in status_json()["outputs"] if o["name"] == "down")["last_error"]

            wait_until(down_error, 10, "the down output's error on disk")
            data = status_json()
            by_name = {o["name"]: o for o in data["outputs"]}
            assert by_name["local"]["pending_events"] == 0
            assert by_name["down"]["pending_events"] == 2 and by_name["down"]["last_error"]
            assert by_name["down"]["state"] == "retrying" and by_name["local"]["state"] == "ok"
            assert by_name["siem"]["dead_letters"] == 1
            table = cli("status", "--config", str(daemon.config_path))
            assert "OUTPUT" in table.stdout and "down" in table.stdout and "Connection refused" in table.stdout
            assert "retrying" in table.stdout and "FULL" not in table.stdout
            ready = httpx.get(f"http://127.0.0.1:{daemon.admin_port}/readyz", timeout=10)
            assert ready.status_code == 200  # a retrying output is news, not a reason to stop sending here
            assert [r for r in ready.json()["retrying"] if r.startswith("output down retrying:")]
            replay = cli("replay", "--config", str(daemon.config_path), "--output", "siem", "--into", "local")
            assert replay.returncode == 0 and "queued 1" in replay.stdout and "the running daemon" in replay.stdout
            wait_until(lambda: len(read_jsonl(out)) == 3, 20, "the replayed record in the file")
            probe = cli("check-config", "--config", str(daemon.config_path), "--probe")
            assert probe.returncode == 1
            assert "output siem: reachable" in probe.stdout and "output down: FAILED" in probe.stdout
        finally:
            daemon.stop()
    flat = cli(
        "flatten", str(Path(__file__).resolve().parents[2] / "forwarder/samples/snapshot_small.json"), "--format", "cef"
    )
    assert flat.returncode == 0 and len(flat.stdout.splitlines()) == 3
    assert all(line.startswith("CEF:0|Snyk|Snyk|1.0|") for line in flat.stdout.splitlines())


def test_sigterm_during_a_slow_upload_answers_503_retry_not_500(workdir: Path, test_ca: LocalCA) -> None:
    """The drain period (3 s here) ends with a clean "retry later", never a cancelled request."""
    config = config_text(workdir / "state", test_ca, file_output("local", workdir / "out.jsonl"))
    daemon = Daemon(workdir / "d", config).start()
    body = snapshot_body([issue("SLOW-1")])
    context = ssl.create_default_context(cafile=str(test_ca.ca_file))
    with (
        socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        head = (
            f"POST /webhooks/snyk HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"X-Snyk-Event: project_snapshot/v0\r\nX-Hub-Signature: {sign(body)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        conn.sendall(head.encode() + body[:10])  # ...and the rest never comes
        metrics = f"http://127.0.0.1:{daemon.admin_port}/metrics"
        reading = f"snyk_forwarder_receiver_body_bytes_in_memory {float(len(body))}"
        wait_until(lambda: reading in httpx.get(metrics, timeout=10).text, 10, "the body read to start")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        answer = b""
        for _ in range(1000):  # bounded by the socket timeout too
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
                break
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 503"), answer
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert b"retry-after: 5" in headers.lower()
    assert json.loads(payload)["error"] == "shutting_down"
    assert daemon.proc.wait(timeout=15) == 0
    logs = daemon.log_path.read_text()
    assert "Traceback" not in logs and '"status": 500' not in logs
