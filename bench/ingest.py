"""Ingest throughput of the real daemon next to a bare uvicorn app, same machine, same run.

Why a baseline in the same run: absolute req/s on a shared 2-core box say little (the load
generator takes CPU from the server, and the box's neighbours vary); the ratio daemon/bare,
measured minutes apart with identical client settings, isolates what the daemon's own work —
routing, HMAC, JSON parse, an fsynced SQLite commit per batch, the shipper — costs on top of
uvicorn + TLS.

Honesty rules this script enforces (see bench/README.md):

- every request is a distinct, correctly signed ``project_snapshot/v0`` body with a distinct
  ``X-Snyk-Transport-ID`` (a repeat would measure the dedup path); the pool is generated before
  the load starts and each record is sent at most once per target (warm-up and measurement
  read disjoint shares). A target that uses up its share is measured over its active window;
  a request wrk asks for with no record left voids the run;
- the client counts answers by status code; anything but 202 is printed loudly;
- after each daemon run the buffer (``<state>/buffer.db``) is opened read-only and reconciled
  with the 202 answers: every acknowledged event id must be there, and nothing else but requests
  still in flight when wrk stopped.

Run: ``.venv/bin/python bench/ingest.py`` (``--quick`` for a ~30 s smoke run, ``--help``).
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

HERE = Path(__file__).resolve().parent
LUA_SCRIPT = HERE / "wrk_requests.lua"
BARE_APP = HERE / "bare_app.py"
SAMPLE = HERE.parent / "forwarder" / "samples" / "snapshot_small.json"

SECRET = "whsec-EXAMPLE-not-real-0001"
WEBHOOK_PATH = "/webhooks/snyk"

# Pool sizing. Each record is sent at most once per target, so the pool bounds how long a target
# can be loaded. The bare app is 10-20x faster than the daemon (reference machine, 2 cores: ~33k
# req/s at 2 KB, ~13k req/s at 50 KB — 700 MB/s), so covering it for the whole window at 50 KB
# would take ~8 GB of pre-signed bodies. Instead the pool is capped (POOL_MB): the daemon always
# gets the full window, the bare app may use up its share early, and its rate is then taken over
# its active window (first request → last answer), which the report shows.
POOL_MAX_RATE = 40_000.0  # requests/s the pool is sized for at most (warm-up + measurement)
POOL_MB = 3072  # cap on the pool's body bytes per size
WARMUP_SHARE = 0.2  # at most this part of the pool is reserved for warm-up

DISTURBED_CPU_PCT = 10.0  # other load (% of one core) during a run above which the report warns
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0  # daemon: drain_timeout (10 s) + shutdown_timeout (10 s) + margin
LOG_TAIL = 400

_KNOWN_MARKERS = ("@@TID@@", "@@SEQ@@", "@@TS@@")
MAX_TRIM = 400  # characters of advisory text a small body may lose …
MIN_ADVISORY = 60  # … keeping at least this much of it
_BANNER = re.compile(r"listening on https?://[^\s:/]+:(\d+)/")


# --- options ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    duration: float
    warmup: float
    connections: int
    threads: int
    sizes: tuple[tuple[str, int], ...]
    workdir: Path | None
    pooldir: Path | None
    keep: bool
    wrk: str
    pool_rate: float
    pool_mb: float
    quick: bool


def parse_size(text: str) -> int:
    """``2k`` → 2048, ``50k`` → 51200, ``1m`` → 1 MiB, ``900`` → 900 bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)[bB]?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 2k, 50k, 900)")
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    value = int(float(match.group(1)) * scale)
    if value < 2048:
        raise argparse.ArgumentTypeError(f"{text!r}: a snapshot body with one issue needs ~2 KB (use 2k or more)")
    return value


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="Benchmark webhook ingest: the real daemon vs a bare uvicorn app, both over HTTPS.",
    )
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per target and size (10)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds before each measurement (2)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive HTTPS connections (32)")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="wrk threads (2: with one, wrk itself caps the bare app at 50 KB bodies on 2 cores)",
    )
    parser.add_argument("--sizes", default="2k,50k", help="comma-separated body sizes (2k,50k)")
    parser.add_argument("--quick", action="store_true", help="short smoke run: 3 s measured, 1 s warm-up")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the temp dir goes; the buffer's fsync cost is this disk's"
    )
    parser.add_argument(
        "--pooldir",
        type=Path,
        default=None,
        help="where the request pools go (default /dev/shm when it has room: writing GBs of pool to the disk "
        "under test would compete with the buffer's fsyncs)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (pools, state, logs) for inspection")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk", help="wrk binary")
    parser.add_argument(
        "--pool-rate",
        type=float,
        default=POOL_MAX_RATE,
        help=f"size each pool for this many req/s over warm-up + measurement ({POOL_MAX_RATE:g})",
    )
    parser.add_argument(
        "--pool-mb", type=float, default=POOL_MB, help=f"cap on each pool's body bytes, in MB ({POOL_MB})"
    )
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None else (3.0 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    if duration <= 0 or warmup < 0:
        parser.error("--duration must be > 0 and --warmup >= 0")
    if args.threads < 1 or args.connections < args.threads or args.connections % args.threads:
        parser.error("need --threads >= 1 and --connections a multiple of --threads (wrk splits them evenly)")
    try:
        sizes = tuple((label.strip(), parse_size(label)) for label in args.sizes.split(",") if label.strip())
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if not sizes:
        parser.error("--sizes is empty")
    if not Path(args.wrk).exists():
        parser.error(f"wrk not found at {args.wrk}; apt-get install wrk")
    return Options(
        duration=duration,
        warmup=warmup,
        connections=args.connections,
        threads=args.threads,
        sizes=sizes,
        workdir=args.workdir,
        pooldir=args.pooldir,
        keep=args.keep,
        wrk=args.wrk,
        pool_rate=args.pool_rate,
        pool_mb=args.pool_mb,
        quick=args.quick,
    )


# --- request pool -----------------------------------------------------------------------------------------


class SnapshotTemplate:
    """A Snyk ``project_snapshot/v0`` body of about ``target`` bytes with per-request slots.

    Why a split template instead of ``json.dumps`` per request: tens of thousands of 50 KB bodies
    must be signed before the load starts, and the per-request part (ids, timestamp) is tiny.
    Issues repeat the real sample's shape; the size comes from ~2.5 KB issues (more issues for
    bigger bodies, as with real snapshots) whose descriptions are padded to hit the target.
    """

    def __init__(self, target: int) -> None:
        sample = json.loads(SAMPLE.read_text())
        self.issues = max(1, round(target / 2500))
        padding = 0
        text = self._json(sample, padding)
        for _ in range(8):  # converge on the target: size is linear in the padding
            rendered = len(self._render_example(text))
            wanted = max(padding + (target - rendered) // self.issues, -MAX_TRIM)
            if abs(target - rendered) < self.issues or wanted == padding:
                break
            padding = wanted
            text = self._json(sample, padding)
        self._parts = [part.encode() for part in re.split("(" + "|".join(_KNOWN_MARKERS) + ")", text)]
        self.size = len(self._render_example(text))

    def _json(self, sample: dict[str, Any], padding: int) -> str:
        # Left out: fields Snyk sends empty or not at all for an npm project, so ~2 KB stays reachable.
        dropped = {"importingUser", "remediation", "imageId", "imageBaseImage", "imagePlatform", "imageCluster"}
        project = {k: v for k, v in sample["project"].items() if k not in dropped}
        project.update(
            id="@@TID@@",
            name="acme/bench-@@SEQ@@:package.json",
            lastTestedDate="@@TS@@",
            browseUrl="https://app.snyk.io/org/acme-platform/project/@@TID@@",
        )
        base_issue = sample["newIssues"][0]
        filler = (
            "Affected versions are vulnerable when a crafted input reaches the parser; see the advisory for the "
            "conditions, the proof of concept and the upstream fix. "
        )
        issues = []
        for n in range(self.issues):
            issue = json.loads(json.dumps(base_issue))
            issue_id = f"SNYK-JS-BENCHPKG{n:03d}-{7134501 + n}"
            issue["id"] = issue["issueData"]["id"] = issue_id
            issue["pkgName"] = f"bench-pkg-{n:03d}"
            issue["issueData"]["url"] = f"https://security.snyk.io/vuln/{issue_id}"
            overview = issue["issueData"]["description"]
            if padding < 0:  # a small target: shorten the advisory text instead of padding it
                overview = overview[: max(MIN_ADVISORY, len(overview) + padding)]
            pad = (filler * (max(0, padding) // len(filler) + 1))[: max(0, padding)]
            tag = " (snapshot @@SEQ@@)" if n == 0 else ""
            issue["issueData"]["description"] = f"{overview}\n## Details{tag}\n{pad}\n"
            issues.append(issue)
        body = {
            "project": project,
            "org": sample["org"],
            "group": sample["group"],
            "newIssues": issues,
            "removedIssues": [],
        }
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    @staticmethod
    def _render_example(text: str) -> bytes:
        example = {"@@TID@@": str(uuid.UUID(int=0)), "@@SEQ@@": "100000", "@@TS@@": _iso(0.0)}
        for marker, value in example.items():
            text = text.replace(marker, value)
        return text.encode()

    def render(self, tid: bytes, seq: bytes, ts: bytes) -> bytes:
        values = {b"@@TID@@": tid, b"@@SEQ@@": seq, b"@@TS@@": ts}
        return b"".join([values.get(part, part) for part in self._parts])


@dataclass(frozen=True, slots=True)
class Pool:
    """One file per wrk thread, split into a warm-up share and a measured share.

    Both targets get the same records: warm-up from offset 0 (at most ``warm_records`` each
    thread), measurement from ``measure_offsets`` (the rest). ``transport_ids`` lets the buffer
    check spot rows that did not come from this pool.
    """

    directory: Path
    records: int
    warm_records: tuple[int, ...]
    measure_offsets: tuple[int, ...]
    measure_records: tuple[int, ...]
    body_bytes: int
    body_min: int
    body_max: int
    issues_per_body: int
    transport_ids: frozenset[str]
    seconds: float


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def build_pool(directory: Path, template: SnapshotTemplate, records: int, warm: int, threads: int) -> Pool:
    """Pre-sign ``records`` distinct requests, dealt round-robin into one file per wrk thread;
    the first ``warm`` of them (overall) form the warm-up share."""
    started = time.perf_counter()
    directory.mkdir(parents=True)
    key = SECRET.encode()
    files = [(directory / f"thread-{n + 1}.pool").open("wb", buffering=1 << 20) for n in range(threads)]
    counts = [0] * threads
    sizes = [0] * threads
    warm_records = [0] * threads
    measure_offsets = [0] * threads
    tids: set[str] = set()
    total = 0
    smallest = math.inf
    largest = 0
    ts = _iso(time.time()).encode()
    try:
        for seq in range(records):
            n = seq % threads
            if seq == warm:
                warm_records = list(counts)
                measure_offsets = list(sizes)
            tid = str(uuid.uuid4())
            tids.add(tid)
            body = template.render(tid.encode(), b"%d" % seq, ts)
            sig = hmac.digest(key, body, "sha256").hex().encode()
            head = b"%s sha256=%s %s %d\n" % (tid.encode(), sig, ts, len(body))
            files[n].write(head)
            files[n].write(body)
            counts[n] += 1
            sizes[n] += len(head) + len(body)
            total += len(body)
            smallest = min(smallest, len(body))
            largest = max(largest, len(body))
    finally:
        for out in files:
            out.close()
    if len(tids) != records:  # uuid4 collisions are not expected, but the whole benchmark rests on this
        raise RuntimeError(f"pool has repeated transport ids: {records - len(tids)}")
    if warm >= records:
        warm_records, measure_offsets = list(counts), list(sizes)
    return Pool(
        directory=directory,
        records=records,
        warm_records=tuple(warm_records),
        measure_offsets=tuple(measure_offsets),
        measure_records=tuple(c - w for c, w in zip(counts, warm_records, strict=True)),
        body_bytes=total,
        body_min=int(smallest),
        body_max=largest,
        issues_per_body=template.issues,
        transport_ids=frozenset(tids),
        seconds=time.perf_counter() - started,
    )


def pool_size(opts: Options, body_size: int) -> tuple[int, int]:
    """(records, warm-up records) for one size: enough for ``pool_rate`` over warm-up + measurement,
    capped at ``pool_mb``; plus one record per connection and run that wrk may leave in flight."""
    wanted = math.ceil(opts.pool_rate * (opts.warmup + opts.duration) * 1.1)
    capped = min(wanted, int(opts.pool_mb * 1e6 / body_size))
    records = max(capped, 64 * opts.connections) + 4 * opts.connections
    share = opts.warmup / (opts.warmup + opts.duration)
    warm = min(math.ceil(opts.pool_rate * opts.warmup), int(records * min(share, WARMUP_SHARE)))
    return records, warm if opts.warmup else 0


# --- child processes --------------------------------------------------------------------------------------


class Child:
    """A server subprocess whose output is drained (a full pipe would stall it) and kept for the report."""

    def __init__(self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.stderr_lines = 0
        self.stop_seconds: float | None = None
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C reaches only us; we stop children in a known order
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._drains = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.stdout, False), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr, True), daemon=True),
        ]
        for t in self._drains:
            t.start()

    def _drain(self, stream: IO[str], sink: list[str], is_stderr: bool) -> None:
        for line in stream:
            with self._lock:
                if is_stderr:
                    self.stderr_lines += 1
                sink.append(line.rstrip("\n"))
                if len(sink) > LOG_TAIL:
                    del sink[: len(sink) - LOG_TAIL]

    def lines(self) -> tuple[list[str], list[str]]:
        with self._lock:
            return list(self.stdout), list(self.stderr)

    def stop(self) -> int | None:
        """SIGTERM, bounded wait, then SIGKILL; returns the exit status (None if it would not die)."""
        started = time.monotonic()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"!! {self.name} did not stop within {STOP_TIMEOUT:g}s of SIGTERM; killing it", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5.0)
        if self.stop_seconds is None:
            self.stop_seconds = time.monotonic() - started
        for t in self._drains:
            t.join(2.0)
        return self.proc.returncode

    def save_logs(self, directory: Path) -> None:
        out, err = self.lines()
        (directory / f"{self.name}.stdout.log").write_text("".join(line + "\n" for line in out))
        (directory / f"{self.name}.stderr.log").write_text("".join(line + "\n" for line in err))

    def usage(self) -> ProcUsage:
        return ProcUsage.read(self.proc.pid)


@dataclass(frozen=True, slots=True)
class ProcUsage:
    """CPU seconds (all threads) and memory of a live process, from /proc."""

    cpu: float
    rss_kib: int

    @staticmethod
    def read(pid: int) -> ProcUsage:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks = os.sysconf("SC_CLK_TCK")
            cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
            status = Path(f"/proc/{pid}/status").read_text()
        except (OSError, ValueError, IndexError):
            return ProcUsage(0.0, 0)
        rss = re.search(r"^VmRSS:\s+(\d+)", status, re.M)
        return ProcUsage(cpu, int(rss.group(1)) if rss else 0)


@dataclass(frozen=True, slots=True)
class MachineCpu:
    """CPU seconds since boot: the hypervisor's steal, and each user-space process.

    Why: whatever else runs on the box (a test suite, a neighbour VM stealing time) takes CPU from
    the server under test. Comparing two snapshots, minus the server, wrk, this script and kernel
    threads (fsync and writeback work for the buffer lands in jbd2/kworker), leaves that
    disturbance, and the report names it.
    """

    steal: float
    processes: dict[int, tuple[str, float]]  # pid → (name, CPU seconds) of user-space processes

    @staticmethod
    def read() -> MachineCpu:
        ticks = os.sysconf("SC_CLK_TCK")
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            fields = []
        steal = (fields + [0] * 8)[7]
        processes: dict[int, tuple[str, float]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            rest = stat[stat.rindex(")") + 2 :].split()
            ppid, flags = int(rest[1]), int(rest[6])
            if ppid == 2 or int(entry.name) == 2 or flags & 0x00200000:  # kernel threads (PF_KTHREAD)
                continue
            if ppid == os.getpid():  # our servers and wrk are accounted for separately
                continue
            processes[int(entry.name)] = (name, (int(rest[11]) + int(rest[12])) / ticks)
        return MachineCpu(steal / ticks, processes)

    def others_since(self, before: MachineCpu, ours: set[int]) -> list[tuple[str, float]]:
        """User-space processes other than ``ours`` that used CPU between the snapshots, busiest first."""
        used = []
        for pid, (name, cpu) in self.processes.items():
            if pid in ours:
                continue
            delta = cpu - before.processes.get(pid, (name, 0.0))[1]
            if delta > 0:
                used.append((f"{name}[{pid}]", delta))
        return sorted(used, key=lambda item: -item[1])


PortFinder = Callable[[list[str], list[str]], int | None]  # (stdout lines, stderr lines) → port


class RssSampler:
    """Peak RSS during a run, sampled; VmHWM alone would mix in start-up and earlier runs."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(ProcUsage.read(self.pid).rss_kib)


def wait_for_port(child: Child, find_port: PortFinder, deadline: float) -> int:
    """Read the port the child announces, then poll a TCP connect until it accepts (short sleeps)."""
    port: int | None = None
    while port is None:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode} during start-up:\n{_tail(child)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} did not announce its port within {STARTUP_TIMEOUT:g}s:\n{_tail(child)}")
        port = find_port(*child.lines())
        if port is None:
            time.sleep(0.05)
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return port
        except OSError:
            if child.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} announced port {port} but does not accept:\n{_tail(child)}") from None
            time.sleep(0.05)


def tls_probe(port: int, tls: Tls) -> str:
    """The TLS version and cipher a client gets: both targets must offer the same, or the
    comparison would include a difference in encryption cost."""
    context = ssl.create_default_context(cafile=str(tls.ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5.0) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        cipher = conn.cipher()
        return f"{conn.version()} {cipher[0] if cipher else '?'}"


def _tail(child: Child, n: int = 20) -> str:
    out, err = child.lines()
    return "\n".join(["  stdout: " + line for line in out[-n:]] + ["  stderr: " + line for line in err[-n:]])


def _daemon_port(stdout: list[str], stderr: list[str]) -> int | None:
    """The port from the JSON ``listening for Snyk webhooks`` log line, else from the stdout banner."""
    for line in stderr:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("message") == "listening for Snyk webhooks":
                return int(record["port"])
    for line in stdout:
        match = _BANNER.search(line)
        if match:
            return int(match.group(1))
    return None


def _bare_port(stdout: list[str], _stderr: list[str]) -> int | None:
    for line in stdout:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("message") == "listening":
                return int(record["port"])
    return None


@dataclass(frozen=True, slots=True)
class Tls:
    cert: Path
    key: Path
    ca: Path


def make_tls(directory: Path) -> Tls:
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    tls = Tls(directory / "server.pem", directory / "server.key", directory / "ca.pem")
    leaf.private_key_pem.write_to_path(str(tls.key))
    leaf.cert_chain_pems[0].write_to_path(str(tls.cert))
    ca.cert_pem.write_to_path(str(tls.ca))
    return tls


def daemon_config(directory: Path, tls: Tls) -> Path:
    """The daemon's config for one run: fresh state, one file output, production buffer settings.

    ``log_level = "info"``: the ``listening`` line (our port source) is logged at info, and the
    success path logs nothing at info (``webhook stored`` is debug), so this costs no per-request
    logging. ``delivered_retention``: events the shipper already wrote would otherwise be purged
    by the maintenance timer during long runs, and the buffer check counts rows.
    """
    path = directory / "forwarder.toml"
    path.write_text(
        f"""[listen]
address = "127.0.0.1"
port = 0
tls_cert = "{tls.cert}"
tls_key = "{tls.key}"
max_connections = 2000

[webhook]
secret = "{SECRET}"

[state]
directory = "{directory / "state"}"

[buffer]
delivered_retention = "1d"

[service]
log_level = "info"

[admin]
port = 0

[outputs.local]
type = "file"
path = "{directory / "records.jsonl"}"
fsync = false
"""
    )
    return path


# --- wrk --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThreadResult:
    generated: int
    limit: int
    parked: int
    overdrawn: int
    offset: int
    answers: int
    first_us: int
    last_us: int
    statuses: dict[int, int]
    per_second: dict[int, int]


@dataclass(frozen=True, slots=True)
class WrkResult:
    duration: float
    responses: int
    errors: dict[str, int]
    latency_us: dict[str, float]
    threads: tuple[ThreadResult, ...]
    acked_ids: tuple[int, ...]
    client_cpu: float

    @property
    def statuses(self) -> dict[int, int]:
        total: dict[int, int] = {}
        for t in self.threads:
            for code, n in t.statuses.items():
                total[code] = total.get(code, 0) + n
        return total

    @property
    def accepted(self) -> int:
        return self.statuses.get(202, 0)

    @property
    def not_accepted(self) -> int:
        return sum(n for code, n in self.statuses.items() if code != 202)

    @property
    def generated(self) -> int:
        return sum(t.generated for t in self.threads)

    @property
    def overdrawn(self) -> int:
        return sum(t.overdrawn for t in self.threads)

    @property
    def pool_limited(self) -> bool:
        """The share ran out before wrk's duration: connections were parked, the window is shorter."""
        return any(t.parked for t in self.threads)

    @property
    def socket_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "status")

    @property
    def window(self) -> float:
        """Seconds from the first request sent to the last answer received, over all threads."""
        firsts = [t.first_us for t in self.threads if t.first_us >= 0]
        lasts = [t.last_us for t in self.threads if t.last_us >= 0]
        return (max(lasts) - min(firsts)) / 1e6 if firsts and lasts else 0.0

    @property
    def rate(self) -> float:
        return self.responses / self.window if self.window else 0.0

    def per_second(self) -> list[int]:
        """Answers in each whole second of the window (the last, partial second left out)."""
        total: dict[int, int] = {}
        for t in self.threads:
            for second, n in t.per_second.items():
                total[second] = total.get(second, 0) + n
        whole = int(self.window)
        return [total.get(second, 0) for second in range(1, whole + 1)]

    @property
    def unanswered(self) -> int:
        """Requests wrk sent without reading an answer (in flight at stop, or lost to a socket error).

        wrk calls request() once per run before connecting, to validate the script; that record
        is taken from the pool but never sent.
        """
        return max(0, self.generated - self.responses - (1 if self.threads else 0))


def run_wrk(
    opts: Options, port: int, pool: Pool, offsets: Sequence[int], limits: Sequence[int], seconds: float, out: Path
) -> WrkResult:
    """One wrk run over ``limits[n]`` records of thread n's pool file, starting at ``offsets[n]``."""
    env = dict(os.environ)
    env.update(
        BENCH_POOL_DIR=str(pool.directory),
        BENCH_OFFSETS=",".join(str(o) for o in offsets),
        BENCH_LIMITS=",".join(str(n) for n in limits),
        BENCH_THREADS=str(opts.threads),
        BENCH_CONNECTIONS=str(opts.connections // opts.threads),  # wrk's split; any remainder is dropped
        BENCH_OUT=str(out),
    )
    whole = max(1, math.ceil(seconds))  # wrk takes whole seconds
    argv = [
        opts.wrk,
        f"--threads={opts.threads}",
        f"--connections={opts.connections}",
        f"--duration={whole}s",
        "--timeout=10s",  # slower answers are counted as timeouts instead of recorded latencies
        f"--script={LUA_SCRIPT}",
        f"https://127.0.0.1:{port}{WEBHOOK_PATH}",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=whole + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    if proc.stderr.strip():  # wrk prints Lua errors from request()/response() and carries on
        raise RuntimeError(f"wrk reported errors:\n{proc.stderr}")
    data = json.loads(out.read_text())
    acked = tuple(int(line) for line in Path(f"{out}.acked").read_text().split())
    threads = tuple(
        ThreadResult(
            generated=int(t["generated"]),
            limit=int(t["limit"]),
            parked=int(t["parked"]),
            overdrawn=int(t["overdrawn"]),
            offset=int(t["offset"]),
            answers=int(t["answers"]),
            first_us=int(t["first_us"]),
            last_us=int(t["last_us"]),
            statuses={int(k): int(v) for k, v in t["statuses"].items()},
            per_second={int(k): int(v) for k, v in t["per_second"].items()},
        )
        for t in sorted(data["threads"], key=lambda t: int(t["thread"]))
    )
    latency = {k: float(v) for k, v in data["latency_us"].items() if k != "percentiles"}
    latency.update({f"p{k}": float(v) for k, v in data["latency_us"]["percentiles"].items()})
    return WrkResult(
        duration=float(data["duration_us"]) / 1e6,
        responses=int(data["requests"]),
        errors={k: int(v) for k, v in data["errors"].items()},
        latency_us=latency,
        threads=threads,
        acked_ids=acked,
        client_cpu=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    )


# --- measuring one target ---------------------------------------------------------------------------------


@dataclass(slots=True)
class TargetResult:
    name: str
    warm: WrkResult
    measured: WrkResult
    wall: float  # seconds the measured wrk run took, start-up included
    server_cpu: float
    other_cpu: list[tuple[str, float]]  # other user-space processes that used CPU meanwhile (name, seconds)
    steal: float  # CPU seconds the hypervisor gave to other guests
    rss_start_kib: int
    rss_peak_kib: int
    rss_end_kib: int
    exit_status: int | None = None
    stderr_lines: int = 0
    tls: str = "?"
    stop_seconds: float | None = None
    stderr_notable: list[str] = field(default_factory=list)
    buffer: BufferCheck | None = None
    records_written: int | None = None


def measure(opts: Options, child: Child, port: int, pool: Pool, out_dir: Path) -> TargetResult:
    """Warm-up over the pool's warm-up share, then the measured run over the rest (same records
    for every target)."""
    warm = _empty()
    if opts.warmup:
        starts = tuple(0 for _ in range(opts.threads))
        warm = run_wrk(opts, port, pool, starts, pool.warm_records, opts.warmup, out_dir / f"{child.name}-warmup.json")
    before = child.usage()
    machine_before = MachineCpu.read()
    started = time.monotonic()
    with RssSampler(child.proc.pid) as sampler:
        measured = run_wrk(
            opts,
            port,
            pool,
            pool.measure_offsets,
            pool.measure_records,
            opts.duration,
            out_dir / f"{child.name}-measured.json",
        )
    wall = time.monotonic() - started
    after = child.usage()
    machine_after = MachineCpu.read()
    others = machine_after.others_since(machine_before, {child.proc.pid, os.getpid()})
    return TargetResult(
        name=child.name,
        warm=warm,
        measured=measured,
        wall=wall,
        server_cpu=after.cpu - before.cpu,
        other_cpu=others,
        steal=machine_after.steal - machine_before.steal,
        rss_start_kib=before.rss_kib,
        rss_peak_kib=max([before.rss_kib, after.rss_kib, *sampler.samples]),
        rss_end_kib=after.rss_kib,
    )


def _empty() -> WrkResult:
    return WrkResult(0.0, 0, {}, {}, (), (), 0.0)


# --- the buffer check -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BufferCheck:
    rows: int
    distinct_tids: int
    distinct_bodies: int
    foreign_tids: int
    acked: int
    acked_missing: int
    unacked_rows: int
    unanswered: int
    quarantined: int
    shipped_to: int | None
    max_id: int | None

    @property
    def ok(self) -> bool:
        return (
            self.acked_missing == 0
            and self.foreign_tids == 0
            and self.distinct_tids == self.rows
            and self.distinct_bodies == self.rows
            and 0 <= self.unacked_rows <= self.unanswered
            and self.quarantined == 0
        )


def check_buffer(db: Path, pool: Pool, runs: Sequence[WrkResult]) -> BufferCheck:
    """Reconcile the daemon's buffer with what the client saw (read-only, after the daemon stopped).

    Exact equality rows == 202 answers holds unless wrk stopped while requests were in flight:
    the daemon still stores those (it cannot know nobody is listening), so they are counted
    separately and bounded by the number of requests wrk generated but saw no answer to.
    """
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows, distinct_tids, distinct_bodies, max_id = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT transport_id), COUNT(DISTINCT body_sha256), MAX(id) FROM events"
        ).fetchone()
        ids_tids = conn.execute("SELECT id, transport_id FROM events").fetchall()
        quarantined = conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
        shipped = conn.execute("SELECT MIN(event_id) FROM cursors").fetchone()[0]
    finally:
        conn.close()
    stored_ids = {row[0] for row in ids_tids}
    acked = [i for run in runs for i in run.acked_ids]
    acked_set = set(acked)
    unanswered = sum(run.unanswered for run in runs)
    return BufferCheck(
        rows=rows,
        distinct_tids=distinct_tids,
        distinct_bodies=distinct_bodies,
        foreign_tids=sum(1 for _, tid in ids_tids if tid not in pool.transport_ids),
        acked=len(acked),
        acked_missing=len(acked_set - stored_ids) + (len(acked) - len(acked_set)),
        unacked_rows=len(stored_ids - acked_set),
        unanswered=unanswered,
        quarantined=quarantined,
        shipped_to=(shipped - 1) if shipped is not None else None,
        max_id=max_id,
    )


# --- one size, both targets -------------------------------------------------------------------------------


@dataclass(slots=True)
class SizeResult:
    label: str
    pool: Pool
    bare: TargetResult
    daemon: TargetResult


def run_size(
    opts: Options, label: str, size: int, root: Path, pools: Path, tls: Tls, stack: contextlib.ExitStack
) -> SizeResult:
    template = SnapshotTemplate(size)
    records, warm = pool_size(opts, template.size)
    print(
        f"[{label}] signing {records:,} distinct requests (~{template.size:,} B each, {warm:,} for warm-up) "
        f"in {pools}…",
        flush=True,
    )
    pool = build_pool(pools / f"pool-{label}", template, records, warm, opts.threads)
    print(f"[{label}] pool ready: {pool.body_bytes / 1e6:,.0f} MB in {pool.seconds:.1f}s", flush=True)

    python = sys.executable
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    bare_dir = root / f"bare-{label}"
    bare_dir.mkdir()
    bare = Child(
        "bare",
        [python, str(BARE_APP), "--cert", str(tls.cert), "--key", str(tls.key), "--port", "0"],
        cwd=bare_dir,
        env=env,
    )
    stack.callback(bare.stop)
    port = wait_for_port(bare, _bare_port, time.monotonic() + STARTUP_TIMEOUT)
    bare_tls = tls_probe(port, tls)
    print(f"[{label}] bare uvicorn on :{port}: warm-up {opts.warmup:g}s, measure {opts.duration:g}s…", flush=True)
    bare_result = measure(opts, bare, port, pool, bare_dir)
    bare_result.tls = bare_tls
    bare_result.exit_status = bare.stop()
    _collect_logs(bare_result, bare, bare_dir)

    daemon_dir = root / f"daemon-{label}"
    daemon_dir.mkdir()
    config = daemon_config(daemon_dir, tls)
    daemon = Child("daemon", [python, "-m", "forwarder", "serve", "--config", str(config)], cwd=daemon_dir, env=env)
    stack.callback(daemon.stop)
    port = wait_for_port(daemon, _daemon_port, time.monotonic() + STARTUP_TIMEOUT)
    daemon_tls = tls_probe(port, tls)
    print(f"[{label}] daemon on :{port}: warm-up {opts.warmup:g}s, measure {opts.duration:g}s…", flush=True)
    daemon_result = measure(opts, daemon, port, pool, daemon_dir)
    daemon_result.tls = daemon_tls
    daemon_result.exit_status = daemon.stop()
    _collect_logs(daemon_result, daemon, daemon_dir)
    daemon_result.buffer = check_buffer(
        daemon_dir / "state" / "buffer.db", pool, [daemon_result.warm, daemon_result.measured]
    )
    with contextlib.suppress(OSError), (daemon_dir / "records.jsonl").open("rb") as f:
        daemon_result.records_written = sum(1 for _ in f)
    if not opts.keep:  # the pool is the bulk of the space used; the next size needs the room
        shutil.rmtree(pool.directory, ignore_errors=True)
    return SizeResult(label, pool, bare_result, daemon_result)


def _collect_logs(result: TargetResult, child: Child, directory: Path) -> None:
    child.save_logs(directory)
    _out, err = child.lines()
    result.stderr_lines = child.stderr_lines
    result.stop_seconds = child.stop_seconds
    notable = []
    for line in err:
        level = ""
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            level = str(record.get("level", "")).upper() if isinstance(record, dict) else ""
        if level in {"", "WARNING", "ERROR", "CRITICAL"}:
            notable.append(line)
    result.stderr_notable = notable


# --- report -----------------------------------------------------------------------------------------------


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def report_header(opts: Options) -> None:
    cores = os.cpu_count() or 0
    print()
    print("snyk-forwarder ingest benchmark")
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    print(f"  when:     {now}Z on {os.uname().nodename}, {cores} CPU core(s)")
    print(
        f"  client:   wrk, {opts.threads} thread(s), {opts.connections} keep-alive HTTPS connections; per target and "
        f"size: warm-up {opts.warmup:g}s, then {opts.duration:g}s measured"
    )
    print("  targets:  daemon = python -m forwarder serve (fsynced SQLite buffer, file output shipper running)")
    print("            bare   = raw ASGI app on uvicorn (read body, answer 202) with the daemon's TLS/uvicorn setup")
    print(f"  CAVEAT:   wrk and the server under test share these {cores} core(s); the daemon's shipper needs CPU too.")
    print("            Absolute req/s are bound to this machine; the ratio is the figure to compare (same client")
    print("            settings, same requests, same run). Latency is closed-loop: each connection waits for its")
    print("            answer, so a slow server is offered less load rather than queueing it.")
    if opts.quick:
        print("  QUICK:    smoke run with short windows: numbers are noisy, do not quote them.")


def report_size(opts: Options, res: SizeResult) -> bool:
    """Print one size's tables and checks; False if anything makes the numbers untrustworthy."""
    pool = res.pool
    targets = (res.bare, res.daemon)
    print()
    print(
        f"== body {res.label}: {pool.body_min:,}–{pool.body_max:,} bytes of JSON, {pool.issues_per_body} issue(s) per "
        f"snapshot; pool {pool.records:,} distinct signed requests"
    )
    print(
        f"   ({sum(pool.warm_records):,} for warm-up, {sum(pool.measure_records):,} for the measured run "
        "of each target)"
    )
    print(
        f"  {'target':<7} {'req/s':>8} {'window':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'p99.9':>7}"
        f" {'max ms':>7} {'202s':>8} {'other':>6} {'sockerr':>7}"
    )
    for t in targets:
        m = t.measured
        lat = m.latency_us
        print(
            f"  {t.name:<7} {m.rate:>8,.0f} {m.window:>6.1f}s {_ms(lat.get('p50')):>7} {_ms(lat.get('p90')):>7}"
            f" {_ms(lat.get('p99')):>7} {_ms(lat.get('p99.9')):>7} {_ms(lat.get('max')):>7}"
            f" {m.accepted:>8,} {m.not_accepted:>6,} {m.socket_errors:>7,}"
        )
    ratio = _ratio(res)
    verdict = "meets the ≥ 0.5× target" if ratio >= 0.5 else "BELOW the ≥ 0.5× target"
    print(f"  ratio daemon/bare req/s: {ratio:.2f}×  ({verdict})")
    same_tls = res.bare.tls == res.daemon.tls
    print(
        f"  TLS offered: bare {res.bare.tls}, daemon "
        + ("the same" if same_tls else f"{res.daemon.tls} — !! DIFFERENT: the comparison includes TLS cost")
    )
    for t in targets:
        if t.measured.pool_limited:
            print(
                f"  note: {t.name} used up the pool's {sum(pool.measure_records):,} measured requests after "
                f"{t.measured.window:.1f}s (of {opts.duration:g}s); its rate and latency are over that window"
            )
    for t in targets:
        seconds = t.measured.per_second()
        if len(seconds) >= 2:
            shown = " ".join(f"{n:,}" for n in seconds[:20]) + (" …" if len(seconds) > 20 else "")
            print(f"  {t.name} req/s by second: {shown}")
    print(
        f"  {'CPU during the run (100% = 1 core)':<37} {'server':>7} {'per req':>9} {'wrk':>6}"
        f"   {'SIGTERM→exit':>12}   server RSS MiB"
    )
    for t in targets:
        m = t.measured
        srv = t.server_cpu / t.wall * 100 if t.wall else 0.0
        cli = m.client_cpu / t.wall * 100 if t.wall else 0.0
        per = t.server_cpu / m.responses * 1e6 if m.responses else 0.0
        rss = f"{t.rss_start_kib / 1024:.0f} → peak {t.rss_peak_kib / 1024:.0f} → {t.rss_end_kib / 1024:.0f}"
        stop = f"{t.stop_seconds:.1f}s" if t.stop_seconds is not None else "-"
        print(f"  {t.name:<37} {srv:>6.0f}% {per:>6,.0f} µs {cli:>5.0f}%   {stop:>12}   {rss}")

    trustworthy = True
    for t in targets:
        other = sum(cpu for _, cpu in t.other_cpu) / t.wall * 100 if t.wall else 0.0
        steal = t.steal / t.wall * 100 if t.wall else 0.0
        if other >= DISTURBED_CPU_PCT or steal >= DISTURBED_CPU_PCT:
            names = ", ".join(f"{name} {cpu / t.wall * 100:.0f}%" for name, cpu in t.other_cpu[:3])
            print(
                f"  !! disturbed ({t.name}): other processes used {other:.0f}% of a core ({names}), "
                f"steal {steal:.0f}%;\n     this target's numbers are lower than the machine can do — "
                "rerun when it is idle"
            )
        for phase, run in (("warm-up", t.warm), ("measured", t.measured)):
            if run.not_accepted or run.socket_errors or run.errors.get("status"):
                trustworthy = False
                codes = ", ".join(f"{c}×{n}" for c, n in sorted(run.statuses.items()) if c != 202)
                sock = {k: v for k, v in run.errors.items() if k != "status" and v}
                print(
                    f"  !!! ERRORS ({t.name}, {phase}): non-202 answers [{codes or 'none'}], "
                    f"wrk status errors {run.errors.get('status', 0)}, socket errors {sock or 'none'}"
                )
            if run.overdrawn:
                trustworthy = False
                print(
                    f"  !!! POOL OVERDRAWN ({t.name}, {phase}): {run.overdrawn} request() call(s) found no record "
                    "left; an unsigned filler was sent instead — the run is void"
                )
        if t.exit_status not in (0, -signal.SIGTERM):
            trustworthy = False
            print(f"  !!! {t.name} exited with status {t.exit_status} after SIGTERM")
        if t.stderr_notable:
            print(f"  {t.name} stderr: {t.stderr_lines} line(s), {len(t.stderr_notable)} warning/error/unstructured:")
            for line in t.stderr_notable[:5]:
                print(f"    {line[:200]}")
            if len(t.stderr_notable) > 5:
                print(f"    … {len(t.stderr_notable) - 5} more (--keep keeps the logs' temp dir)")

    disjoint = all(_within_shares(t, pool) for t in targets)
    trustworthy &= disjoint
    taken = ", ".join(f"{t.name} {t.warm.generated:,} + {t.measured.generated:,}" for t in targets)
    print(f"  distinct requests: taken (warm-up + measured) {taken};")
    print(
        "                     each run stayed in its own share of the pool, so no request was sent twice → "
        + ("OK" if disjoint else "FAILED")
    )
    check = res.daemon.buffer
    if check is not None:
        print(
            f"  buffer check: rows in events {check.rows:,} = 202 answers {check.acked:,} (warm-up + measured)"
            f" + {check.unacked_rows} stored, unanswered"
        )
        print(
            f"                (≤ {check.unanswered} requests were in flight when wrk stopped; the daemon stores "
            "those, nobody reads the answer)"
        )
        print(
            f"                distinct transport ids {check.distinct_tids:,}, "
            f"distinct bodies {check.distinct_bodies:,}, rows not from this pool {check.foreign_tids},"
        )
        print(
            f"                202 answers without a row {check.acked_missing}, quarantined {check.quarantined} → "
            + ("OK" if check.ok else "FAILED")
        )
        if check.shipped_to is not None and check.max_id is not None:
            behind = check.max_id - check.shipped_to
            print(
                f"  shipper:      file output confirmed up to event {check.shipped_to:,} of {check.max_id:,} "
                f"({behind:,} not yet shipped at stop);"
            )
            print(f"                {res.daemon.records_written or 0:,} records in the file")
        if not check.ok:
            trustworthy = False
            print("  !!! BUFFER CHECK FAILED: the buffer does not match the 202 answers")
    return trustworthy


def _within_shares(t: TargetResult, pool: Pool) -> bool:
    """Warm-up read records [0, warm share) and measurement [warm share, end) of each thread's file."""
    for run, shares in ((t.warm, pool.warm_records), (t.measured, pool.measure_records)):
        if run.overdrawn or any(th.generated > share for th, share in zip(run.threads, shares, strict=False)):
            return False
    return True


# --- main -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP all raise KeyboardInterrupt, so the cleanup in ``finally`` runs for each
    (SIGINT too: a shell starts background jobs with SIGINT ignored, and Python would inherit that)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _pool_base(opts: Options, fallback: Path) -> Path:
    """Pools go to RAM (/dev/shm) when it has room: GBs of pool written to the disk under test would
    be flushed by the kernel during the run and compete with the buffer's fsyncs."""
    if opts.pooldir is not None:
        return opts.pooldir
    shm = Path("/dev/shm")
    with contextlib.suppress(OSError):
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize > opts.pool_mb * 1e6 * 1.5:
            return shm
    return fallback


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    base = opts.workdir or Path(tempfile.gettempdir())
    root = Path(tempfile.mkdtemp(prefix="snyk-fwd-bench-", dir=base))
    pools = Path(tempfile.mkdtemp(prefix="snyk-fwd-bench-pools-", dir=_pool_base(opts, root)))
    started = time.monotonic()
    results: list[SizeResult] = []
    try:
        with _signals_raise(), contextlib.ExitStack() as stack:
            tls = make_tls(root)
            for label, size in opts.sizes:
                results.append(run_size(opts, label, size, root, pools, tls, stack))
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:  # a server or wrk failed; the message carries their output
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if opts.keep:
            print(f"kept {root} and {pools}", file=sys.stderr)
        else:
            shutil.rmtree(pools, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)
    report_header(opts)
    trustworthy = all([report_size(opts, r) for r in results])
    print()
    print("headline (daemon/bare req/s): " + ", ".join(f"{r.label}: {_ratio(r):.2f}×" for r in results))
    print(f"total wall time {time.monotonic() - started:.0f}s")
    if not trustworthy:
        print("!!! THIS RUN HAD ERRORS (see '!!!' lines above): do not quote its numbers.")
        return 1
    return 0


def _ratio(r: SizeResult) -> float:
    return r.daemon.measured.rate / r.bare.measured.rate if r.bare.measured.rate else 0.0


if __name__ == "__main__":
    sys.exit(main())
