"""The systemd side: the unit, scripts/install-service and uninstall-service, config/systemd.toml.

systemd is not PID 1 on the build machines, so the service itself never starts here. Instead:

* ``install-service --root`` makes a real install (virtualenv, user, config, credentials, unit) in a
  temporary root, and the tests check what it wrote;
* ``systemd-analyze verify --root`` checks the unit against that install (it needs ExecStart's program
  to exist) and ``systemd-analyze security --offline`` rates its hardening;
* the daemon of that install runs as an unprivileged user under the unit's seccomp filters
  (SystemCallFilter=, SystemCallErrorNumber=, MemoryDenyWriteExecute=, RestrictAddressFamilies=,
  SystemCallArchitectures=), rebuilt with libseccomp the way systemd 252 builds them, and must
  receive, store, ship and stop cleanly — the part of the hardening a Python daemon can trip over.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from forwarder.config import parse_config
from tests.support.daemon import LocalCA

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "snyk-forwarder.service"
SYSTEMD_CONFIG = REPO / "config" / "systemd.toml"
PREFIX = "/opt/snyk-forwarder"
NOBODY = 65534
IS_ROOT = os.geteuid() == 0
INSTALL_TIMEOUT = 240  # a cold pip install; about 10 s with a warm wheel cache

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (Debian: apt-get install systemd)"
)


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file in order (keys such as SystemCallFilter= repeat)."""
    settings: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def one(settings: dict[str, list[str]], key: str) -> str:
    values = settings.get(key, [])
    assert len(values) == 1, f"{key}= should be set once, found {values}"
    return values[0]


def seconds(value: str) -> float:
    """A systemd time span such as ``30s``, ``5min`` or ``90``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h)?", value)
    assert match, f"unexpected time span {value!r}"
    factor = {"ms": 0.001, "min": 60.0, "m": 60.0, "h": 3600.0}.get(match.group(2) or "s", 1.0)
    return float(match.group(1)) * factor


def credential_names(value: Any) -> set[str]:
    """Every ``{ credential = "NAME" }`` in a parsed TOML document."""
    if isinstance(value, dict):
        found = {value["credential"]} if isinstance(value.get("credential"), str) else set()
        return found.union(*(credential_names(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(credential_names(v) for v in value))
    return set()


def run(argv: list[str], *, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


# --- the unit and the shipped configuration, read as text -------------------------------------------


def test_the_unit_and_the_systemd_config_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unit = unit_settings(UNIT.read_text())
    # The daemon's side of the contract (issue 7): notify, watchdog, SIGHUP reload, exit 78 = config error.
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"
    assert seconds(one(unit, "WatchdogSec")) == 30
    assert one(unit, "ExecStart") == (
        f"{PREFIX}/venv/bin/snyk-forwarder serve --config ${{CONFIGURATION_DIRECTORY}}/config.toml"
    )
    assert one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "Restart") == "on-failure"
    assert "78" in one(unit, "RestartPreventExitStatus").split()
    assert one(unit, "ConfigurationDirectory") == one(unit, "StateDirectory") == one(unit, "LogsDirectory")
    assert one(unit, "StateDirectoryMode") == "0700"
    assert one(unit, "CapabilityBoundingSet") == one(unit, "AmbientCapabilities") == ""

    # Every credential the config names is loaded by the unit, from where install-service puts it.
    loaded = dict(value.split(":", 1) for value in unit["LoadCredential"])
    wanted = credential_names(tomllib.loads(SYSTEMD_CONFIG.read_text()))
    assert "webhook-secret" in wanted
    for name in wanted:
        assert loaded[name] == f"/etc/snyk-forwarder/credentials/{name}"

    # The config loads the way the service sees it, and only writes where ProtectSystem=strict allows.
    LocalCA(tmp_path / "tls")  # a matching tls/server.pem and tls/server.key
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "webhook-secret").write_text("from-load-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "credentials"))
    config = parse_config(SYSTEMD_CONFIG.read_text(), base_dir=tmp_path)
    assert [s.reveal() for s in config.webhook.secrets] == ["from-load-credential"]
    assert config.state_dir == Path("/var/lib") / one(unit, "StateDirectory")
    writable = [Path("/var/lib") / one(unit, "StateDirectory"), Path("/var/log") / one(unit, "LogsDirectory")]
    for output in config.outputs:
        path = getattr(output.settings, "path", None)
        if path is not None:
            assert any(path.is_relative_to(d) for d in writable), f"{output.name} writes {path}: read-only"
    # systemd kills what is still running after TimeoutStopSec; the daemon's own deadlines come first.
    grace = config.listen.drain_timeout + config.service.shutdown_timeout
    assert grace + 5 <= seconds(one(unit, "TimeoutStopSec"))


# --- install-service / uninstall-service ----------------------------------------------------------


@dataclass(frozen=True)
class Install:
    root: Path
    output: str

    @property
    def etc(self) -> Path:
        return self.root / "etc" / "snyk-forwarder"

    @property
    def venv(self) -> Path:
        return self.root / PREFIX.lstrip("/") / "venv"

    @property
    def unit(self) -> Path:
        return self.root / "etc" / "systemd" / "system" / "snyk-forwarder.service"

    def id_of(self, database: str, name: str = "snyk-forwarder") -> int:
        for line in (self.root / "etc" / database).read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2])
        raise AssertionError(f"{name} is not in {self.root}/etc/{database}")


def install_service(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(["bash", str(REPO / "scripts" / "install-service"), "--root", str(root), *args], timeout=INSTALL_TIMEOUT)


@pytest.fixture(scope="module")
def installed() -> Iterator[Install]:
    """One real install for the module. Outside pytest's 0700 temp tree, so the unprivileged user
    the daemon runs as below can reach the virtualenv."""
    root = Path(tempfile.mkdtemp(prefix="snyk-forwarder-root-"))
    try:
        root.chmod(0o755)
        result = install_service(root)
        assert result.returncode == 0, result.stdout + result.stderr
        yield Install(root, result.stdout)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_install_service_writes_the_tree_with_private_modes(installed: Install) -> None:
    etc = installed.etc
    assert mode(etc) == 0o750
    assert mode(etc / "tls") == 0o750
    assert mode(etc / "credentials") == 0o700
    assert mode(etc / "credentials" / "webhook-secret") == 0o600
    assert mode(etc / "config.toml") == 0o640
    assert (etc / "config.toml").read_text() == SYSTEMD_CONFIG.read_text()
    assert mode(installed.root / "var" / "lib" / "snyk-forwarder") == 0o700
    assert mode(installed.root / "var" / "log" / "snyk-forwarder") == 0o750
    assert mode(installed.unit) == 0o644
    assert installed.unit.read_text() == UNIT.read_text()  # the default prefix needs no rewrite

    secret = (etc / "credentials" / "webhook-secret").read_text()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}\n", secret), "32 random bytes as base64url, one line"

    # A real, non-editable install: the package is imported from the virtualenv, not the checkout.
    where = run([str(installed.venv / "bin" / "python"), "-I", "-c", "import forwarder; print(forwarder.__file__)"])
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.venv)
    assert os.access(installed.venv / "bin" / "snyk-forwarder", os.X_OK)

    if IS_ROOT:  # ownership: root writes the config, the service's group may only read it
        uid, gid = installed.id_of("passwd"), installed.id_of("group")
        for path in (etc, etc / "tls", etc / "config.toml"):
            assert (path.stat().st_uid, path.stat().st_gid) == (0, gid), path
        assert (etc / "credentials" / "webhook-secret").stat().st_uid == 0
        state = installed.root / "var" / "lib" / "snyk-forwarder"
        assert (state.stat().st_uid, state.stat().st_gid) == (uid, gid)
    assert "systemctl was not called" in installed.output


def test_install_service_again_keeps_config_and_secret(installed: Install) -> None:
    config = installed.etc / "config.toml"
    secret = installed.etc / "credentials" / "webhook-secret"
    config.write_text(config.read_text() + "# edited by the operator\n")
    before = (config.read_text(), secret.read_text())
    again = install_service(installed.root)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (config.read_text(), secret.read_text()) == before
    assert "kept the existing" in again.stdout
    assert mode(config) == 0o640


def test_the_installed_config_checks_out_with_the_credentials(installed: Install) -> None:
    LocalCA(installed.etc / "tls")  # writes tls/server.pem and tls/server.key, where the config expects them
    command = [
        str(installed.venv / "bin" / "snyk-forwarder"),
        "check-config",
        "--config",
        str(installed.etc / "config.toml"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    ok = run(command, env={**env, "CREDENTIALS_DIRECTORY": str(installed.etc / "credentials")})
    assert ok.returncode == 0, ok.stderr
    assert "1 webhook secret(s)" in ok.stdout
    assert "state in /var/lib/snyk-forwarder" in ok.stdout
    # Without systemd's credentials the webhook secret is missing: a configuration error, not a start.
    missing = run(command, env=env)
    assert missing.returncode == 78
    assert "webhook.secret.credential" in missing.stderr


def test_uninstall_keeps_config_and_state_and_purge_removes_them(installed: Install, tmp_path: Path) -> None:
    copy = Install(tmp_path / "root", "")
    shutil.copytree(installed.root, copy.root, symlinks=True)
    (copy.root / "var" / "lib" / "snyk-forwarder" / "buffer.db").write_bytes(b"undelivered events")
    uninstall = ["bash", str(REPO / "scripts" / "uninstall-service"), "--root", str(copy.root)]

    for _ in range(2):  # the second run finds nothing left to do and still succeeds
        result = run(uninstall)
        assert result.returncode == 0, result.stderr
        assert not copy.unit.exists()
        assert not copy.venv.exists()
        assert (copy.etc / "config.toml").is_file()
        assert (copy.etc / "credentials" / "webhook-secret").is_file()
        assert (copy.root / "var" / "lib" / "snyk-forwarder" / "buffer.db").read_bytes() == b"undelivered events"

    manual_run = copy.root / "run" / "snyk-forwarder" / "credentials"  # a run without systemd left copies
    manual_run.mkdir(parents=True)
    (manual_run / "webhook-secret").write_text("copy")
    purged = run([*uninstall, "--purge"])
    assert purged.returncode == 0, purged.stderr
    for path in ("etc/snyk-forwarder", "var/lib/snyk-forwarder", "var/log/snyk-forwarder", "run/snyk-forwarder"):
        assert not (copy.root / path).exists(), path
    if IS_ROOT:
        assert "snyk-forwarder:" not in (copy.root / "etc" / "passwd").read_text()
        assert "snyk-forwarder:" not in (copy.root / "etc" / "group").read_text()


@pytest.mark.parametrize("script", ["install-service", "uninstall-service"])
def test_the_scripts_refuse_to_change_the_machine_without_root(script: str) -> None:
    # Without --root they would write to /etc and /opt: as an ordinary user they must stop first.
    extra: dict[str, Any] = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if IS_ROOT else {}
    # A copy the ordinary user can read: the checkout (and pytest's tmp_path) may sit in a directory
    # only root may enter (mktemp -d makes it 0700).
    readable = Path(tempfile.mkdtemp(prefix="snyk-fwd-scripts-"))
    try:
        readable.chmod(0o755)
        copy = readable / script
        shutil.copy(REPO / "scripts" / script, copy)
        copy.chmod(0o755)
        result = run(["bash", str(copy)], cwd="/", **extra)
    finally:
        shutil.rmtree(readable)
    assert result.returncode == 1
    assert "must run as root" in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--prefix", "opt/relative"], 1, "absolute path"),
        (["--prefix", "/home/me/forwarder"], 1, "ProtectHome"),
        (["--prefx", "/opt/x"], 2, "unknown argument"),
    ],
)
def test_install_service_rejects_bad_arguments_before_doing_anything(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    result = install_service(tmp_path, *args)
    assert result.returncode == code
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- systemd-analyze --------------------------------------------------------------------------------


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_installed_unit(installed: Install, tmp_path: Path) -> None:
    # verify --root resolves every path and unit inside the root: give it the targets the unit orders
    # itself against and /bin/kill (ExecReload=); ExecStart's program is the real install's.
    system_units = next(p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir())
    shutil.copytree(system_units, installed.root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
    kill = shutil.which("kill", path="/usr/bin:/bin")
    assert kill is not None
    (installed.root / "bin").mkdir(exist_ok=True)
    shutil.copy2(kill, installed.root / "bin" / "kill")

    def verify(unit: Path) -> subprocess.CompletedProcess[str]:
        return run(["systemd-analyze", "verify", f"--root={installed.root}", str(unit)], timeout=60)

    result = verify(installed.unit)
    findings = [line for line in (result.stdout + result.stderr).splitlines() if "snyk-forwarder.service" in line]
    assert result.returncode == 0 and not findings, result.stdout + result.stderr

    # The same check notices a typo and a missing program (it only warns on the first, hence the text check).
    broken = installed.unit.with_name("snyk-forwarder-broken.service")
    broken.write_text(
        installed.unit.read_text()
        .replace("Restart=on-failure", "Restrat=on-failure")
        .replace(f"{PREFIX}/venv/bin/", "/opt/missing/bin/")
    )
    bad = verify(broken)
    assert "Restrat" in bad.stderr
    assert "/opt/missing/bin/snyk-forwarder" in bad.stderr


# Checks of `systemd-analyze security` the forwarder cannot pass: it must reach the network, serve
# Snyk on TCP, log through AF_UNIX, and ProtectClock= itself adds the read-only rtc device.
NEEDED_EXPOSURE = {
    "PrivateNetwork=",
    "IPAddressDeny=",
    "RestrictAddressFamilies=~AF_(INET|INET6)",
    "RestrictAddressFamilies=~AF_UNIX",
    "RootDirectory=/RootImage=",
    "DeviceAllow=",
}


@needs_systemd_analyze
def test_systemd_analyze_security_rates_the_unit_at_most_2() -> None:
    text = run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)])
    match = re.search(r"Overall exposure level for snyk-forwarder\.service: (\d+(?:\.\d+)?)", text.stdout)
    assert match, text.stdout + text.stderr
    assert float(match.group(1)) <= 2.0, text.stdout

    checks = run(["systemd-analyze", "security", "--offline=true", "--json=short", str(UNIT)])
    exposed = {c["name"] for c in json.loads(checks.stdout) if c["exposure"] not in (None, "0.0")}
    assert exposed <= NEEDED_EXPOSURE, f"hardening lost: {sorted(exposed - NEEDED_EXPOSURE)}"


# --- the daemon under the unit's seccomp filters ----------------------------------------------------

# Runs in the installed virtualenv's Python: sets no_new_privs (NoNewPrivileges=), loads the filters in
# systemd's order (the allow list last, since loading a filter is itself a filtered call), then execs.
# The rules are those of systemd 252's seccomp-util.c.
SANDBOX = r"""
import ctypes, errno, json, os, sys

spec = json.loads(sys.argv[1])
lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]

class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

lib.seccomp_rule_add_array.argtypes = [
    ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Cmp)
]
ALLOW, KILL_PROCESS, EQ, MASKED_EQ = 0x7FFF0000, 0x80000000, 4, 7
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000

def errno_action(number):
    return 0x00050000 | (number & 0xFFFF)

def rule(ctx, action, name, *cmps):
    number = lib.seccomp_syscall_resolve_name(name.encode())
    if number != -1:  # a name from another architecture
        lib.seccomp_rule_add_array(ctx, action, number, len(cmps), (Cmp * max(1, len(cmps)))(*cmps))

def load(ctx):
    if lib.seccomp_load(ctx) != 0:
        sys.exit("seccomp_load failed")

if ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
    sys.exit("PR_SET_NO_NEW_PRIVS failed")
if spec["families"]:  # RestrictAddressFamilies=: any other family is EAFNOSUPPORT
    ctx = lib.seccomp_init(ALLOW)
    for family in range(64):
        if family not in spec["families"]:
            rule(ctx, errno_action(errno.EAFNOSUPPORT), "socket", Cmp(0, EQ, family, 0))
    load(ctx)
if spec["mdwe"]:  # MemoryDenyWriteExecute=: no W+X mapping, no mapping made executable later
    ctx = lib.seccomp_init(ALLOW)
    rule(ctx, errno_action(errno.EPERM), "mmap", Cmp(2, MASKED_EQ, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC))
    rule(ctx, errno_action(errno.EPERM), "mprotect", Cmp(2, MASKED_EQ, PROT_EXEC, PROT_EXEC))
    rule(ctx, errno_action(errno.EPERM), "pkey_mprotect", Cmp(2, MASKED_EQ, PROT_EXEC, PROT_EXEC))
    rule(ctx, errno_action(errno.EPERM), "shmat", Cmp(2, MASKED_EQ, SHM_EXEC, SHM_EXEC))
    load(ctx)
# SystemCallFilter= (allow list) with SystemCallErrorNumber=; native architecture only.
ctx = lib.seccomp_init(errno_action(spec["errno"]) if spec["errno"] else KILL_PROCESS)
for name in spec["allow"]:
    rule(ctx, ALLOW, name)
load(ctx)
os.execv(spec["argv"][0], spec["argv"])
"""


PROBE = r"""
import mmap, socket
for attempt in (lambda: mmap.mmap(-1, 4096, prot=7), lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)):
    try:
        attempt()
        print("allowed", 0)
    except OSError as exc:
        print("refused", exc.errno)
"""


def syscall_groups() -> dict[str, list[str]]:
    """``systemd-analyze syscall-filter``: every @group and its members (calls or other groups)."""
    listing = run(["systemd-analyze", "syscall-filter", "--no-pager"])
    assert listing.returncode == 0, listing.stderr
    groups: dict[str, list[str]] = {}
    current = ""
    for line in listing.stdout.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif line.startswith("    ") and current and not line.strip().startswith("#"):
            groups[current].append(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    calls: set[str] = set()
    for name in names:
        calls |= expand(groups[name], groups) if name.startswith("@") else {name}
    return calls


def sandbox_spec(unit: dict[str, list[str]], argv: list[str]) -> dict[str, Any]:
    """The unit's seccomp settings, resolved the way systemd resolves them."""
    groups = syscall_groups()
    allow: set[str] = set()
    for i, value in enumerate(unit["SystemCallFilter"]):
        if value.startswith("~"):
            allow -= expand(value[1:].split(), groups)
        else:
            assert i == 0, "an allow list comes first"
            allow |= expand(value.split(), groups)
    assert one(unit, "SystemCallArchitectures") == "native"
    families = {"AF_UNIX": socket.AF_UNIX, "AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6}
    error = one(unit, "SystemCallErrorNumber")
    return {
        "allow": sorted(allow),
        "errno": getattr(errno, error) if error else 0,
        "families": [int(families[f]) for f in one(unit, "RestrictAddressFamilies").split()],
        "mdwe": one(unit, "MemoryDenyWriteExecute") == "yes",
        "argv": argv,
    }


class SyslogSink:
    """A TCP listener that keeps whatever the syslog output sends."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(30)
        self.port: int = self.server.getsockname()[1]
        self.received = bytearray()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(30)
            while chunk := conn.recv(65536):
                self.received += chunk

    def close(self) -> None:
        self.server.close()


def wait_until(condition: Callable[[], Any], timeout: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout}s; daemon log:\n{log.read_text(errors='replace')[-4000:]}")


def log_entry(log: Path, message: str) -> dict[str, Any] | None:
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if str(entry.get("message", "")).startswith(message):
            return dict(entry)
    return None


@needs_systemd_analyze
def test_the_installed_daemon_works_under_the_units_seccomp_filters(installed: Install) -> None:
    work = Path(tempfile.mkdtemp(prefix="snyk-forwarder-sandbox-"))
    sink = SyslogSink()
    proc: subprocess.Popen[bytes] | None = None
    try:
        ca = LocalCA(work / "tls")
        (work / "credentials").mkdir()
        (work / "credentials" / "webhook-secret").write_text("whsec-sandbox-test\n")
        (work / "config.toml").write_text(
            f"""
[listen]
address = "127.0.0.1"
port = 0
tls_cert = "tls/server.pem"
tls_key = "tls/server.key"
drain_timeout = "3s"
[webhook]
secret = {{ credential = "webhook-secret" }}
[state]
directory = "state"
[service]
shutdown_timeout = "3s"
[admin]
address = "127.0.0.1"
port = 0
[outputs.archive]
type = "file"
path = "state/records.jsonl"
[outputs.siem]
type = "syslog"
endpoint = "127.0.0.1:{sink.port}"
transport = "tcp"
"""
        )
        user: dict[str, Any] = {}
        if IS_ROOT:  # as the service runs: an ordinary user without capabilities
            for path in [work, *work.rglob("*")]:
                os.chown(path, NOBODY, NOBODY)
            user = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
        daemon = [str(installed.venv / "bin" / "snyk-forwarder"), "serve", "--config", str(work / "config.toml")]
        spec = sandbox_spec(unit_settings(UNIT.read_text()), daemon)
        env = {"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(work / "credentials")}
        python = str(installed.venv / "bin" / "python")

        # The filters bite: inside the same sandbox, W+X memory and a netlink socket are refused.
        probe = [python, "-I", "-c", PROBE]
        refused = run([python, "-c", SANDBOX, json.dumps({**spec, "argv": probe})], cwd="/", env=env, **user)
        assert refused.stdout.split() == ["refused", str(errno.EPERM), "refused", str(errno.EAFNOSUPPORT)], (
            refused.stdout + refused.stderr
        )

        log = work / "daemon.log"
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                [python, "-c", SANDBOX, json.dumps(spec)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=work,
                env=env,
                **user,
            )

        def started() -> dict[str, Any] | None:
            assert proc is not None and proc.poll() is None, f"daemon exited:\n{log.read_text(errors='replace')}"
            return log_entry(log, "listening for Snyk webhooks")

        listening = wait_until(started, 30, "the daemon did not listen", log)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert re.search(r"^Seccomp:\s+2$", status, re.M), "the daemon itself runs filtered"
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)

        sent = run(
            [
                str(installed.venv / "bin" / "snyk-forwarder"),
                *("send-test", "--config", str(work / "config.toml"), "--cacert", str(ca.ca_file)),
                *("--url", str(listening["url"])),
            ],
            env={**os.environ, **env},
        )
        assert sent.returncode == 0 and "202" in sent.stdout, sent.stdout + sent.stderr

        records = work / "state" / "records.jsonl"
        wait_until(lambda: records.exists() and records.read_text().count("\n") >= 1, 15, "no record in the file", log)
        wait_until(lambda: b"snyk" in sink.received, 15, "nothing reached syslog", log)
        admin = log_entry(log, "admin endpoints listening")
        assert admin is not None, log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{admin['port']}/healthz", timeout=10) as response:
            assert response.status == 200

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text(errors="replace")
        # A call the filters refuse surfaces as EPERM: nothing may have been logged about one.
        problems = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if not line.startswith("{")
            or json.loads(line).get("level") in ("ERROR", "CRITICAL")
            or re.search(r"not permitted|PermissionError|EPERM|EAFNOSUPPORT|not supported", line)
        ]
        assert not problems, "\n".join(problems)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        sink.close()
        shutil.rmtree(work, ignore_errors=True)
