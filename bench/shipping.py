"""What the shipping benchmarks share: realistic snapshots, filling a buffer, per-stage timers.

The snapshots have the shape of ``forwarder/samples/snapshot_small.json`` with varied ids,
packages, CVEs, severities and 300–1,500-character descriptions (text, not repetition), so
flattening, formatting and compression see what production sees.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import trustme

import forwarder.records as records_module
from forwarder.buffer import SqliteBuffer
from forwarder.config.model import DeliveryConfig
from forwarder.flatten import Snapshot
from forwarder.formats import build_formatter
from forwarder.outputs.base import Output
from forwarder.records import RecordStream
from forwarder.shipper import Shipper
from forwarder.types import Webhook

REPO = Path(__file__).resolve().parents[1]
WORDS = (
    "attacker",
    "crafted",
    "input",
    "payload",
    "prototype",
    "pollution",
    "remote",
    "code",
    "execution",
    "denial",
    "service",
    "regular",
    "expression",
    "backtracking",
    "path",
    "traversal",
    "archive",
    "entry",
    "deserialization",
    "untrusted",
    "object",
    "injection",
    "command",
    "shell",
    "argument",
    "header",
    "smuggling",
    "request",
    "response",
    "cookie",
    "session",
    "fixation",
    "token",
    "leak",
    "buffer",
    "overflow",
    "integer",
    "bounds",
    "check",
    "memory",
    "allocation",
    "parser",
    "library",
    "function",
    "version",
    "upgrade",
    "affected",
    "vulnerable",
    "package",
    "dependency",
    "transitive",
    "release",
    "patch",
    "fixed",
    "mitigation",
    "configuration",
)
SEVERITIES = ("low", "medium", "medium", "high", "high", "critical")
F = TypeVar("F", bound=Callable[..., Any])


# --- data --------------------------------------------------------------------------------------------


def make_issue(rng: random.Random, n: int, template: dict[str, Any]) -> dict[str, Any]:
    issue: dict[str, Any] = json.loads(json.dumps(template))
    package = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{n % 977}"
    issue_id = f"SNYK-JS-{package.upper().replace('-', '')}-{7_000_000 + n}"
    data = issue["issueData"]
    issue["id"] = data["id"] = issue_id
    issue["pkgName"] = package
    issue["pkgVersions"] = [f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}"]
    data["title"] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))).title()
    data["severity"] = rng.choice(SEVERITIES)
    data["url"] = f"https://security.snyk.io/vuln/{issue_id}"
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(45, 220)))
    data["description"] = f"## Overview\n[{package}](https://www.npmjs.com/package/{package}) {words}\n"
    data["identifiers"]["CVE"] = [f"CVE-20{rng.randint(15, 25)}-{rng.randint(1000, 99999)}"]
    data["cvssScore"] = round(rng.uniform(1.0, 10.0), 1)
    data["publicationTime"] = f"2025-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T14:20:03Z"
    issue["priority"]["score"] = rng.randint(100, 1000)
    return issue


def snapshots(records: int, per_snapshot: int, seed: int = 7) -> list[bytes]:
    sample = json.loads((REPO / "forwarder" / "samples" / "snapshot_small.json").read_bytes())
    template = sample["newIssues"][0]
    rng = random.Random(seed)
    bodies: list[bytes] = []
    n = 0
    while n < records:
        count = min(per_snapshot, records - n)
        payload = dict(sample)
        payload["project"] = dict(sample["project"], name=f"acme/service-{len(bodies) % 40}:package.json")
        payload["newIssues"] = [make_issue(rng, n + i, template) for i in range(count)]
        payload["removedIssues"] = []
        bodies.append(json.dumps(payload, separators=(",", ":")).encode())
        n += count
    return bodies


def write_tls(workdir: Path) -> tuple[Path, Path, Path]:
    """A trustme CA and a certificate for 127.0.0.1 in ``workdir``: (ca, cert, key) files."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return ca_file, cert_file, key_file


async def filled_buffer(workdir: Path, records: int, per_snapshot: int) -> SqliteBuffer:
    """A fresh buffer holding ``records`` records for the outputs "measured" and "profiled"."""
    print(f"generating {records:,} records in snapshots of {per_snapshot} issues …", flush=True)
    bodies = snapshots(records, per_snapshot)
    buffer = SqliteBuffer.open(workdir / "state", outputs=["measured", "profiled"], dedup_bodies=False)
    await fill(buffer, bodies)
    print(f"buffer filled: {len(bodies)} snapshots, {sum(map(len, bodies)) / 1e6:.1f} MB of webhook bodies", flush=True)
    return buffer


async def fill(buffer: SqliteBuffer, bodies: list[bytes]) -> None:
    for i, body in enumerate(bodies):
        webhook = Webhook(
            body=body,
            body_sha256=hashlib.sha256(body).hexdigest(),
            event_name="project_snapshot/v0",
            received_at=time.time(),
            transport_id=f"bench-{i}",
            snyk_timestamp="2025-03-14T03:12:45.118Z",
        )
        await buffer.append(webhook)


@dataclass(frozen=True, slots=True)
class Drained:
    wall: float
    cpu: float
    shortened: int


async def drain_with(
    output: Output,
    delivery: DeliveryConfig,
    buffer: SqliteBuffer,
    name: str,
    total: int,
    stages: Stages | None,
    output_stages: Callable[[Stages], None],
) -> Drained:
    """Ship ``total`` records from ``name``'s position through the real RecordStream and Shipper,
    timing the shared stages (and, through ``output_stages``, the output's own) when profiling."""
    formatter = build_formatter(delivery)
    budget = output.message_budget
    if stages is not None:
        formatter = stages.timed("format (ECS JSON)", formatter)
        budget = stages.timed("fit (budget per record)", budget)
        stages.patch(Snapshot, "record", "flatten")
        stages.patch(buffer, "advance", "buffer: save cursor", is_async=True)
        stages.replace(records_module, "orjson", TimedJson(stages))
        output_stages(stages)
    position = (await buffer.positions())[name]
    reader = buffer.reader()
    if stages is not None:
        stages.patch(reader, "events_from", "buffer: read events", is_async=True)
    stream = RecordStream(reader, position, delivery, formatter, summary=False, budget=budget)
    shipper = Shipper(output, delivery, buffer, stream)
    await output.healthcheck()
    wall, cpu = time.perf_counter(), time.process_time()
    task = asyncio.create_task(shipper.run())
    while shipper.status.delivered + shipper.status.dead_lettered < total:
        await asyncio.sleep(0.005)
        if task.done():
            raise RuntimeError("the shipper stopped early") from task.exception()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    shipper.stop()
    await task
    stream.close()
    await output.aclose()
    if stages is not None:
        stages.restore()
    if shipper.status.dead_lettered:
        raise RuntimeError(f"{shipper.status.dead_lettered} records were dead-lettered")
    return Drained(wall, cpu, stream.shortened)


# --- timing ------------------------------------------------------------------------------------------


class Stages:
    """Wall time per stage; nested stages are reported on their own (HTTP includes waiting)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[Callable[[], None]] = []

    def timed(self, name: str, fn: F) -> F:
        seconds, calls = self.seconds, self.calls

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start
                calls[name] += 1

        return wrapper  # type: ignore[return-value]

    def timed_async(self, name: str, fn: F) -> F:
        seconds, calls = self.seconds, self.calls

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start
                calls[name] += 1

        return wrapper  # type: ignore[return-value]

    def patch(self, owner: Any, attribute: str, name: str, *, is_async: bool = False) -> None:
        original = getattr(owner, attribute)
        self.replace(owner, attribute, (self.timed_async if is_async else self.timed)(name, original))

    def replace(self, owner: Any, attribute: str, value: Any) -> None:
        original = getattr(owner, attribute)
        setattr(owner, attribute, value)
        self._undo.append(lambda: setattr(owner, attribute, original))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


class TimedJson:
    """Stands in for ``orjson`` inside ``forwarder.records`` to time the payload parse."""

    JSONDecodeError = orjson.JSONDecodeError

    def __init__(self, stages: Stages) -> None:
        self.loads = stages.timed("parse JSON body", orjson.loads)


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
