"""Start the real daemon (``python -m forwarder serve``) as a subprocess for end-to-end tests.

The daemon binds port 0 and reports the port it got in its "listening for Snyk webhooks" log
line, so tests never pick a port themselves. Every wait is bounded in time.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import trustme

from tests.helpers import SECRET, sign
from tests.support.ports import wait_for_port

REPO = Path(__file__).resolve().parents[2]


class LocalCA:
    """A trustme CA with a server certificate for 127.0.0.1, ::1 and localhost, written to ``directory``."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1", "::1", "localhost")
        self.ca_file = directory / "ca.pem"
        self.cert_file = directory / "server.pem"
        self.key_file = directory / "server.key"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server.cert_chain_pems[0].write_to_path(str(self.cert_file))
        for pem in server.cert_chain_pems[1:]:
            pem.write_to_path(str(self.cert_file), append=True)
        server.private_key_pem.write_to_path(str(self.key_file))


def config_text(
    state: Path, ca: LocalCA, outputs: str, *, listen_extra: str = "", extra: str = "", buffer_extra: str = ""
) -> str:
    return f"""
[listen]
address = "127.0.0.1"
port = 0
tls_cert = "{ca.cert_file}"
tls_key = "{ca.key_file}"
drain_timeout = "3s"
{listen_extra}

[webhook]
secret = "{SECRET}"

[state]
directory = "{state}"

[buffer]
maintenance_interval = "1s"
{buffer_extra}

[service]
shutdown_timeout = "3s"
log_level = "debug"

[admin]
address = "127.0.0.1"
port = 0

{extra}

{outputs}
"""


class Daemon:
    def __init__(
        self, workdir: Path, config: str, *, env: dict[str, str] | None = None, wrap: list[str] | None = None
    ) -> None:
        """``wrap`` prefixes the command (e.g. to run the daemon inside a mount namespace)."""
        self.wrap = wrap or []
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "config.toml"
        self.config_path.write_text(config)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.admin_port: int | None = None
        self.url = ""
        self.runs = 0
        self.ca_file: Path | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"daemon-{self.runs}.log"

    def start(self, timeout: float = 30.0) -> Daemon:
        self.runs += 1
        with self.log_path.open("wb") as log, (self.workdir / f"stdout-{self.runs}.txt").open("wb") as out:
            self.proc = subprocess.Popen(
                [*self.wrap, sys.executable, "-m", "forwarder", "serve", "--config", str(self.config_path)],
                stdout=out,
                stderr=log,
                cwd=self.workdir,
                env=self.env,
            )
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.01) + 1):
            entries = self.logs()
            listening = [e for e in entries if e.get("message") == "listening for Snyk webhooks"]
            if listening:
                self.port = int(listening[-1]["port"])
                self.url = listening[-1]["url"]
                admin = [e for e in entries if str(e.get("message", "")).startswith("admin endpoints listening")]
                self.admin_port = int(admin[-1]["port"]) if admin else None
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"daemon did not start within {timeout}s:\n{self.log_path.read_text()}")
            time.sleep(0.01)
        wait_for_port("127.0.0.1", self.port, timeout=max(1.0, deadline - time.monotonic()))
        return self

    def logs(self, run: int | None = None) -> list[dict[str, Any]]:
        path = self.workdir / f"daemon-{run or self.runs}.log"
        entries = []
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                entries.append({"message": line, "level": "RAW"})
        return entries

    def client(self, ca_file: Path) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(ca_file))
        return httpx.Client(base_url=self.url.rsplit("/webhooks/", 1)[0], verify=context, timeout=30.0)

    def terminate(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """SIGTERM and wait (a clean exit also lets coverage save its data); SIGKILL if it hangs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextmanager
def running(workdir: Path, config: str) -> Iterator[Daemon]:
    daemon = Daemon(workdir, config).start()
    try:
        yield daemon
    finally:
        daemon.stop()


def post(
    client: httpx.Client,
    body: bytes,
    *,
    event: str = "project_snapshot/v0",
    signature: str | None = None,
    transport_id: str | None = None,
    timestamp: str | None = None,
    path: str = "/webhooks/snyk",
) -> httpx.Response:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Snyk-Webhooks/0000000",
        "X-Snyk-Event": event,
        "X-Snyk-Transport-ID": transport_id or str(uuid.uuid4()),
        "X-Hub-Signature": signature or sign(body),
    }
    if timestamp:
        headers["X-Snyk-Timestamp"] = timestamp
    return client.post(path, content=body, headers=headers)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines written so far: the daemon may be in the middle of writing the next one."""
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()]


def wait_for_lines(path: Path, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.02) + 1):
        lines = read_jsonl(path)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)
    return read_jsonl(path)
