"""The real daemon over a real TLS socket: what a user and Snyk see."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import BODY_A_SIGNATURE, issue, sample, snapshot_body
from tests.support.daemon import Daemon, LocalCA, config_text, post, read_jsonl, running, wait_for_lines

pytestmark = pytest.mark.slow


def file_output(path: Path, extra: str = "") -> str:
    return f'[outputs.local]\ntype = "file"\npath = "{path}"\nfsync = false\n{extra}'


def test_signed_events_become_records_in_the_file(workdir: Path, test_ca: LocalCA) -> None:
    out = workdir / "records.jsonl"
    with (
        running(workdir, config_text(workdir / "state", test_ca, file_output(out))) as daemon,
        daemon.client(test_ca.ca_file) as client,
    ):
        assert post(client, sample("body_a.json"), signature=BODY_A_SIGNATURE).status_code == 202
        assert post(client, sample("body_b.json")).status_code == 202
        assert post(client, sample("snapshot_small.json"), timestamp="2024-03-07T09:05:03Z").status_code == 202
        assert post(client, sample("ping.json"), event="ping/v0").status_code == 200
        assert post(client, sample("body_a.json"), event="project_snapshot/v1").status_code == 202
        assert post(client, sample("body_a.json"), signature="sha256=" + "0" * 64).status_code == 401
        records = wait_for_lines(out, 5)
        time.sleep(0.3)
        records = read_jsonl(out)
    assert len(records) == 5
    titles = [r["snyk"]["issue"]["title"] for r in records]
    assert titles[:2] == ["Prototype Pollution", "Café sandbox escape 🚒"]
    assert records[2]["@timestamp"] == "2024-03-07T09:05:03.000Z"
    assert len({r["event"]["id"] for r in records}) == 5


def test_c05_a_6_5_mb_snapshot_is_acknowledged_quickly_and_fully_shipped(workdir: Path, test_ca: LocalCA) -> None:
    filler = "x" * 1200
    issues = [issue(f"SNYK-JS-BULK-{i}", description=filler) for i in range(5000)]
    body = snapshot_body(issues)
    assert 6_000_000 < len(body) < 7_500_000
    out = workdir / "records.jsonl"
    listen = 'max_body_bytes = "8MiB"'
    with (
        running(workdir, config_text(workdir / "state", test_ca, file_output(out), listen_extra=listen)) as daemon,
        daemon.client(test_ca.ca_file) as client,
    ):
        started = time.monotonic()
        response = post(client, body)
        assert response.status_code == 202
        assert time.monotonic() - started < 10
        records = wait_for_lines(out, 5000, timeout=60)
        too_big = b'{"pad":"' + b"x" * (8 * 1024 * 1024 - 9) + b'"}'
        assert len(too_big) == 8 * 1024 * 1024 + 1
        assert post(client, too_big).status_code == 413
        time.sleep(0.3)
        records = read_jsonl(out)
    ids = [r["snyk"]["issue"]["id"] for r in records]
    assert len(ids) == 5000 and len(set(ids)) == 5000


def test_kill_9_right_after_the_2xx_loses_nothing(workdir: Path, test_ca: LocalCA) -> None:
    out = workdir / "records.jsonl"
    daemon = Daemon(workdir, config_text(workdir / "state", test_ca, file_output(out)))
    expected: set[str] = set()
    try:
        for cycle in range(3):
            daemon.start()
            bodies = [snapshot_body([issue(f"C{cycle}-E{e}-I{i}") for i in range(30)]) for e in range(8)]
            with daemon.client(test_ca.ca_file) as client, concurrent.futures.ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(lambda b: post(client, b).status_code, bodies))
            daemon.kill()  # SIGKILL the moment the last 2xx is in
            assert statuses == [202] * 8
            expected |= {f"C{cycle}-E{e}-I{i}" for e in range(8) for i in range(30)}
        daemon.start()
        records = wait_for_lines(out, len(expected), timeout=30)
        deadline = time.monotonic() + 30
        while {r["snyk"]["issue"]["id"] for r in records} != expected and time.monotonic() < deadline:
            time.sleep(0.05)
            records = read_jsonl(out)
    finally:
        daemon.kill()
    found = [r["snyk"]["issue"]["id"] for r in records]
    assert set(found) == expected
    # a duplicate is allowed only as a re-send of the very same record (same deterministic id)
    by_issue: dict[str, set[str]] = {}
    for r in records:
        by_issue.setdefault(r["snyk"]["issue"]["id"], set()).add(r["event"]["id"])
    assert all(len(ids) == 1 for ids in by_issue.values())


def test_sigterm_stops_accepting_then_exits_0(workdir: Path, test_ca: LocalCA) -> None:
    out = workdir / "records.jsonl"
    daemon = Daemon(workdir, config_text(workdir / "state", test_ca, file_output(out))).start()
    try:
        with daemon.client(test_ca.ca_file) as client:
            assert post(client, sample("body_a.json")).status_code == 202
        started = time.monotonic()
        assert daemon.terminate() == 0
        assert time.monotonic() - started < 10
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", daemon.port), timeout=1).close()
        messages = [e["message"] for e in daemon.logs()]
        assert "shutting down" in messages and messages[-1] == "stopped"
    finally:
        daemon.kill()
    assert len(read_jsonl(out)) == 1


def test_c03_an_empty_secret_refuses_to_start(workdir: Path, test_ca: LocalCA) -> None:
    text = config_text(workdir / "state", test_ca, file_output(workdir / "o.jsonl"))
    text = text.replace('secret = "whsec-EXAMPLE-not-real-0001"', 'secret = { env = "SNYK_FWD_UNSET_SECRET" }')
    (workdir / "c.toml").write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "forwarder", "serve", "--config", str(workdir / "c.toml")],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 78
    assert "webhook.secret.env" in result.stderr and "SNYK_FWD_UNSET_SECRET" in result.stderr
    assert not (workdir / "state").exists()


def test_a_stalled_body_gets_408_within_the_idle_timeout(workdir: Path, test_ca: LocalCA) -> None:
    listen = 'body_idle_timeout = "0.5s"\nbody_timeout = "5s"'
    config = config_text(workdir / "state", test_ca, file_output(workdir / "o.jsonl"), listen_extra=listen)
    with running(workdir, config) as daemon:
        context = ssl.create_default_context(cafile=str(test_ca.ca_file))
        with (
            socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(
                b"POST /webhooks/snyk HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                b'X-Snyk-Event: project_snapshot/v0\r\n\r\n{"partial":'
            )
            started = time.monotonic()
            answer = b""
            for _ in range(20):  # header and body may come in separate TLS records
                chunk = tls.recv(4096)
                answer += chunk
                if not chunk or b"}" in answer:
                    break
            assert time.monotonic() - started < 4
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"body_idle_timeout" in answer


def test_send_test_reaches_a_self_signed_listener(workdir: Path) -> None:
    out = workdir / "records.jsonl"
    config = f"""
[listen]
port = 0
tls_self_signed = true
[state]
directory = "{workdir / "state"}"
[webhook]
secret = {{ file = "{workdir / "state" / "webhook-secret"}", generate = true }}
[admin]
port = 0
{file_output(out)}
"""
    with running(workdir, config) as daemon:
        assert (workdir / "state" / "tls" / "ca.pem").exists()
        cmd = [sys.executable, "-m", "forwarder", "send-test", "--config", str(daemon.config_path), "--url", daemon.url]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "202" in result.stdout
        records = wait_for_lines(out, 3)
        banner = (workdir / "stdout-1.txt").read_text()
    assert [r["event"]["action"] for r in records] == ["introduced", "introduced", "resolved"]
    assert "send-test" in banner and "ca.pem" in banner
    secret = (workdir / "state" / "webhook-secret").read_text().strip()
    assert secret not in banner and all(secret not in json.dumps(e) for e in daemon.logs())


def test_sigterm_while_an_output_is_down_exits_within_the_grace_period(workdir: Path, test_ca: LocalCA) -> None:
    from tests.support.ports import free_port

    dead_port = free_port()
    outputs = f'[outputs.siem]\ntype = "syslog"\nendpoint = "127.0.0.1:{dead_port}"\nretry_initial_backoff = "0.2s"\n'
    daemon = Daemon(workdir, config_text(workdir / "state", test_ca, outputs)).start()
    try:
        with daemon.client(test_ca.ca_file) as client:
            for n in range(10):
                assert post(client, snapshot_body([issue(f"SNYK-DOWN-{n}")])).status_code == 202
        time.sleep(0.5)
        started = time.monotonic()
        assert daemon.terminate(sig=signal.SIGTERM) == 0
        assert time.monotonic() - started < 6  # shutdown_timeout is 3 s
    finally:
        daemon.kill()


def test_send_test_before_the_first_start_creates_nothing_and_says_start_first(workdir: Path) -> None:
    """Operators run CLI commands as root: a secret or certificate made by them would be root's."""
    state = workdir / "state"
    config = workdir / "config.toml"
    config.write_text(
        f'[listen]\ntls_self_signed = true\n[state]\ndirectory = "{state}"\n'
        f'[webhook]\nsecret = {{ file = "{state / "webhook-secret"}", generate = true }}\n'
        f"{file_output(workdir / 'out.jsonl')}"
    )

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "forwarder", command, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    checked = run("check-config")
    assert checked.returncode == 0 and "the daemon creates it on its first start" in checked.stdout
    sent = run("send-test")
    assert sent.returncode == 1 and "start the daemon first" in sent.stderr
    status = run("status")
    assert status.returncode == 1 and "has the daemon ever run" in status.stderr
    assert not state.exists()


def test_send_test_to_an_untrusted_certificate_suggests_cacert(workdir: Path, test_ca: LocalCA) -> None:
    config = config_text(workdir / "state", test_ca, file_output(workdir / "out.jsonl"))
    with running(workdir, config) as daemon:
        cmd = [sys.executable, "-m", "forwarder", "send-test", "--config", str(daemon.config_path), "--url", daemon.url]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "--cacert" in result.stderr


def test_a_connection_that_never_starts_tls_is_closed_after_the_header_timeout(workdir: Path, test_ca: LocalCA) -> None:
    config = config_text(
        workdir / "state", test_ca, file_output(workdir / "o.jsonl"), listen_extra='header_timeout = "0.5s"'
    )
    with running(workdir, config) as daemon, socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as raw:
        started = time.monotonic()
        assert raw.recv(1024) == b""  # the server gave up on the handshake and closed
        assert time.monotonic() - started < 5  # asyncio's own default would be 60 s
