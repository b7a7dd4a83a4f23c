"""Real syslog receivers (rsyslog 8.2302, syslog-ng 3.38 from Debian 12) for tests to send to.

Why real daemons: the forwarder's framing, size limits, escaping and TLS behaviour only matter as far as
real SIEM-side receivers accept them, and the two receivers disagree in ways a fake would paper over
(see the project's syslog notes, ``shared/notes/syslog.md`` §7-§8). Each instance runs unprivileged in
the foreground with its own config, pid, spool/persist and control files inside a work directory, binds
only 127.0.0.1 on ports picked at run time, never touches /dev/log, /var/lib or /etc, and writes every
message it receives as one JSON object per line, built by the receiver itself (rsyslog ``option.jsonf``
list template, syslog-ng ``$(format-json)``), so what the tests read back is the receiver's own parse.

The daemons come from ``scripts/fetch-receivers``, which unpacks the Debian packages into
``<repo>/.cache/receivers/root`` (override with ``SNYK_FWD_RECEIVERS_ROOT``). If they are missing, the
constructors raise :class:`ReceiversNotInstalled` rather than letting tests skip silently.

Message dicts (:class:`SyslogMessage`) hold the fields *as the receiver stored them*; known differences:

* NILVALUE (``-``) fields: rsyslog keeps ``"-"`` for PROCID/MSGID/STRUCTURED-DATA, syslog-ng gives ``""``;
  a ``-`` HOSTNAME stays ``"-"`` in rsyslog and becomes the sender's address in syslog-ng.
* ``timestamp``: rsyslog echoes the sender's RFC 3339 form (``2024-03-07T09:05:03.120Z``); syslog-ng
  re-renders it with 6 fraction digits and a numeric zone (``2024-03-07T09:05:03.120000+00:00``). Compare
  with :func:`datetime.datetime.fromisoformat`, not as strings.
* ``msg``: rsyslog keeps a leading UTF-8 BOM, syslog-ng strips it. ``raw`` keeps it for both.
* ``structured_data``: rsyslog keeps the SD text verbatim; syslog-ng re-serialises it from its parse
  (same text for well-formed input). ``sdata`` is ``{sd_id: {param: value}}`` with values unescaped
  (``\\"``, ``\\\\``, ``\\]`` resolved), from rsyslog's ``mmpstrucdata`` and syslog-ng's ``.SDATA.*``.
* Control characters: rsyslog escapes them on receipt by default (LF -> ``#012``); this module turns that
  off (``parser.escapeControlCharactersOnReceive="off"``), so an LF inside an octet-counted or UDP message
  arrives as a real LF for both receivers (JSON-escaped as ``\\n`` in the file, so lines stay valid JSON).
  A trailing LF of a UDP datagram is still dropped by rsyslog (``parser.dropTrailingLFOnReception``).
* Listeners: ``tcp``/``tls`` take octet-counted frames (RFC 6587 §3.4.1 / RFC 5425); ``tcp_lf``/``tls_lf``
  take LF-framed ones, so an LF inside a message there splits it into two records, the second one broken.
  rsyslog's ``tcp_lf`` has octet-counting detection switched off, so, like syslog-ng's ``network()``, it
  shows an octet-counted frame's length prefix in APP-NAME/HOSTNAME. But rsyslog's ``tcp``/``tls`` still
  auto-detect LF framing and accept it, while syslog-ng's ``syslog()`` drops it ("Invalid frame header"):
  only syslog-ng proves that a sender really octet-counts.
* TLS: without ``client_ca_file`` rsyslog logs "CA certificate is not set" at start (harmless). With it,
  a client without a certificate is refused, but under TLS 1.3 the *sender sees no error*: its handshake
  and writes succeed and the message is silently dropped; only the receiver's log says why.
* Size: ``max_message_size`` sets rsyslog ``maxMessageSize`` (and raises imtcp ``maxFrameSize`` to at
  least that) and syslog-ng ``log-msg-size()``. Oversize behaviour differs per receiver (notes §7-§8).
* Invalid UTF-8 in a message is passed through by rsyslog as raw bytes (decoded here with
  ``surrogateescape`` so it survives into the dict); syslog-ng writes such bytes as the text ``\\xNN``.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Final, Literal, Self, TypedDict, cast, get_args

from .ports import LOOPBACK, free_port, wait_for_port

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "LISTENERS",
    "Listener",
    "ReceiverStartError",
    "ReceiversNotInstalled",
    "Rsyslog",
    "RsyslogGtls",
    "SyslogMessage",
    "SyslogNg",
    "SyslogReceiver",
    "receivers_root",
]

Listener = Literal["udp", "tcp", "tcp_lf", "tls", "tls_lf"]
LISTENERS: Final[tuple[Listener, ...]] = get_args(Listener)
TLS_LISTENERS: Final[frozenset[str]] = frozenset({"tls", "tls_lf"})

# Large enough that tests pick the limit they want to exercise, rather than tripping the defaults
# (rsyslog 8096 bytes, syslog-ng 65536) by accident.
DEFAULT_MAX_MESSAGE_SIZE: Final = 256 * 1024

ROOT_ENV: Final = "SNYK_FWD_RECEIVERS_ROOT"
_REPO = Path(__file__).resolve().parents[2]
_DEFAULT_ROOT = _REPO / ".cache" / "receivers" / "root"

# Readiness probes for UDP carry this APP-NAME; they are hidden from messages().
PROBE_APP_NAME: Final = "syslogd-test-probe"

_START_ATTEMPTS = 4  # a port stolen between free_port() and the daemon's bind() is retried with new ports
_RESTART_ATTEMPTS = 3  # same ports on restart: only transient bind failures are worth retrying
_POLL_FIRST = 0.01
_POLL_MAX = 0.1
_SUN_PATH_MAX = 100  # AF_UNIX paths are limited to 108 bytes; keep a margin


class SyslogMessage(TypedDict):
    """One received message, as the receiver parsed and stored it (see the module docstring)."""

    receiver: str  # "rsyslog" or "syslog-ng"
    listener: str  # which listener received it: one of LISTENERS
    raw: str  # the message as received, without octet-count prefix or LF trailer
    pri: int
    facility: int
    severity: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured_data: str  # raw SD string
    sdata: dict[str, dict[str, str]]  # {sd_id: {param: unescaped value}}
    msg: str


class ReceiversNotInstalled(RuntimeError):
    """The unpacked receivers are missing: tests must fail loudly, not skip."""


class ReceiverStartError(RuntimeError):
    """The receiver did not come up; the message carries its own diagnostics."""


class _PortTaken(Exception):
    """A listener port was taken by someone else between picking and binding: retry with new ports."""


def receivers_root() -> Path:
    """Where ``scripts/fetch-receivers`` unpacked the Debian packages (or ``$SNYK_FWD_RECEIVERS_ROOT``)."""
    env = os.environ.get(ROOT_ENV)
    return Path(env) if env else _DEFAULT_ROOT


def _multiarch_dir(root: Path) -> str:
    """The Debian multiarch triplet of the unpacked tree, read from where rsyslog put its modules.

    Read from the tree rather than computed, so that it is right even without dpkg-dev/gcc installed.
    """
    for module in sorted(root.glob("usr/lib/*/rsyslog/imtcp.so")):
        return module.parent.parent.name
    raise ReceiversNotInstalled(_not_installed_message(root, "rsyslog modules (usr/lib/*/rsyslog)"))


def _not_installed_message(root: Path, what: str) -> str:
    return (
        f"{what} not found under {root}. Run scripts/fetch-receivers (from {_REPO}) to download and "
        f"unpack rsyslog and syslog-ng, or point {ROOT_ENV} at a tree that has them."
    )


def _conf_str(value: str | os.PathLike[str]) -> str:
    """Quote a string for rsyslog RainerScript and syslog-ng config (both honour \\\\ and \\")."""
    text = os.fspath(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _listening_inodes(kind: Literal["tcp", "udp"], port: int) -> set[int]:
    """Inodes of loopback/any sockets bound to ``port`` (TCP: listening only), from /proc/net."""
    inodes: set[int] = set()
    wanted_state = "0A" if kind == "tcp" else "07"  # TCP_LISTEN / TCP_CLOSE (an unconnected UDP socket)
    for table in (f"/proc/net/{kind}", f"/proc/net/{kind}6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            local, state, inode = fields[1], fields[3], fields[9]
            _addr, _, port_hex = local.rpartition(":")
            if state == wanted_state and int(port_hex, 16) == port:
                inodes.add(int(inode))
    return inodes


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except OSError:
        return inodes
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, so that a wrapper (strace, valgrind) or a forking daemon still counts."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 256:
        current = todo.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                todo.extend(int(child) for child in children.read_text().split())
    return found


def _port_owner(kind: Literal["tcp", "udp"], port: int, pid: int) -> Literal["ours", "other", "none"]:
    """Who holds ``port``: our daemon, someone else (a lost race), or nobody yet.

    A connect() alone cannot tell our daemon from a process that grabbed the port first; /proc can.
    """
    bound = _listening_inodes(kind, port)
    if not bound:
        return "none"
    ours: set[int] = set()
    for member in _process_tree(pid):
        ours |= _socket_inodes(member)
    return "ours" if bound & ours else "other"


def _procfs_usable() -> bool:
    return Path("/proc/net/tcp").exists() and Path(f"/proc/{os.getpid()}/fd").is_dir()


_LIVE: weakref.WeakSet[SyslogReceiver] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    # A test run interrupted before stop() must not leave daemons behind (they run in their own session,
    # so they would not get the terminal's SIGINT).
    for receiver in list(_LIVE):
        with contextlib.suppress(Exception):
            receiver.kill()


class SyslogReceiver(abc.ABC):
    """Shared lifecycle of a real syslog daemon under test: config, ports, process, output, diagnostics.

    Use as a context manager or call :meth:`start`/:meth:`stop`. One instance per work directory.
    """

    name: ClassVar[str]

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        listeners: Iterable[Listener] | None = None,
        *,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        client_ca_file: str | os.PathLike[str] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        start_timeout: float = 10.0,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        """Prepare (but do not start) the receiver.

        ``cert_file``/``key_file`` (PEM) are required when a TLS listener is asked for. ``client_ca_file``
        turns on mutual TLS: clients must then present a certificate signed by that CA. ``root`` defaults
        to :func:`receivers_root`. ``listeners=None`` means all of them, less the TLS ones when no
        certificate is given.
        """
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.ports: dict[str, int] = {}
        if listeners is None:
            with_tls = bool(cert_file)
            listeners = tuple(lst for lst in LISTENERS if with_tls or lst not in TLS_LISTENERS)
        chosen = list(dict.fromkeys(listeners))
        unknown = [lst for lst in chosen if lst not in LISTENERS]
        if unknown or not chosen:
            raise ValueError(f"listeners must be a non-empty subset of {LISTENERS}, got {chosen!r}")
        if TLS_LISTENERS.intersection(chosen) and not (cert_file and key_file):
            raise ValueError("TLS listeners need cert_file and key_file (PEM paths)")
        if client_ca_file is not None and not TLS_LISTENERS.intersection(chosen):
            raise ValueError("client_ca_file only makes sense with a TLS listener")
        if max_message_size < 480:  # RFC 5426/5424 minimum a receiver must accept
            raise ValueError(f"max_message_size must be at least 480, not {max_message_size}")
        self.workdir = Path(workdir).resolve()
        self.listeners: tuple[Listener, ...] = tuple(chosen)
        self.cert_file = Path(cert_file).resolve() if cert_file else None
        self.key_file = Path(key_file).resolve() if key_file else None
        self.client_ca_file = Path(client_ca_file).resolve() if client_ca_file else None
        self.max_message_size = max_message_size
        self.start_timeout = start_timeout
        self.root = Path(root) if root is not None else receivers_root()
        self.output_path = self.workdir / f"{self.name}-messages.jsonl"
        self.log_path = self.workdir / f"{self.name}.log"
        self.config_path = self.workdir / f"{self.name}.conf"
        self.pid_path = self.workdir / f"{self.name}.pid"
        self._probe_token = uuid.uuid4().hex
        self._parsed: list[SyslogMessage] = []
        self._offset = 0
        self._torn_budget = 0
        self._read_lock = threading.Lock()
        self._starts = 0
        self._check_installed()

    # ----------------------------------------------------------------- daemon-specific parts

    @abc.abstractmethod
    def _binary(self) -> Path: ...

    @abc.abstractmethod
    def _lib_path(self) -> list[Path]: ...

    @abc.abstractmethod
    def _argv(self) -> list[str]: ...

    @abc.abstractmethod
    def _config_text(self) -> str: ...

    @abc.abstractmethod
    def _record(self, obj: Mapping[str, Any]) -> SyslogMessage: ...

    def _extra_log_paths(self) -> list[Path]:
        return []

    @abc.abstractmethod
    def _prepare_run(self) -> None:
        """Create per-run paths before the daemon starts."""

    @abc.abstractmethod
    def _cleanup_run(self) -> None:
        """Remove per-run paths after the daemon stopped."""

    def _check_installed(self) -> None:
        binary = self._binary()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise ReceiversNotInstalled(_not_installed_message(self.root, f"{binary.name} ({binary})"))

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start on fresh ports, retrying with new ones if a port was taken between picking and binding."""
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._start(keep_ports=False)
        return self

    def restart(self) -> None:
        """Stop (if running) and start again on the *same* ports: a receiver back after an outage."""
        if not self.ports:
            raise RuntimeError("restart() needs a receiver that was started before")
        self.stop()
        self._start(keep_ports=True)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if the daemon has not exited after ``timeout`` seconds."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=timeout)
        self._reap()

    def kill(self) -> None:
        """SIGKILL at once, like a crash: no flush, no goodbye. Ports are kept for :meth:`restart`."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
        self._reap()

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        # The daemon leads its own session and process group, so the group holds only its process tree:
        # signalling the group also reaches a wrapper's children (strace, valgrind) or a forked helper.
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            proc.send_signal(sig)

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None:
            # Whatever is left of the group once the leader is gone (e.g. a tracee after strace exits).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._proc is not None:
            _LIVE.discard(self)
        self._proc = None
        self._cleanup_run()

    def _start(self, *, keep_ports: bool) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        attempts = _RESTART_ATTEMPTS if keep_ports else _START_ATTEMPTS
        failures: list[str] = []
        for attempt in range(1, attempts + 1):
            if not keep_ports:
                self.ports = {lst: free_port("udp" if lst == "udp" else "tcp") for lst in self.listeners}
            self._spawn(attempt)
            try:
                self._wait_ready()
            except _PortTaken as exc:
                failures.append(f"attempt {attempt}: {exc}")
                self.kill()
                if keep_ports:
                    # The same ports may come free again (e.g. a lingering old instance); back off a bit.
                    time.sleep(0.2 * attempt)
                continue
            except BaseException:
                self.kill()
                raise
            return
        raise ReceiverStartError(
            f"{self.name} could not bind its ports after {attempts} attempts: " + "; ".join(failures) + self._log_tail()
        )

    def _spawn(self, attempt: int) -> None:
        self._starts += 1
        # A fresh token per start: a probe from the previous run must not pass for this one's readiness.
        self._probe_token = uuid.uuid4().hex
        self._prepare_run()
        self._seal_torn_line()
        self.config_path.write_text(self._config_text(), encoding="utf-8")
        self.pid_path.unlink(missing_ok=True)
        env = dict(os.environ)
        lib_path = ":".join(str(p) for p in self._lib_path())
        env["LD_LIBRARY_PATH"] = lib_path + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        log_file = self.log_path.open("ab")
        ports = " ".join(f"{k}={v}" for k, v in self.ports.items())
        log_file.write(f"=== start #{self._starts} (attempt {attempt}) ports: {ports}\n".encode())
        log_file.flush()
        self._log_file = log_file
        try:
            # Own session: Ctrl-C in the test terminal goes to pytest, which then stops us in order.
            self._proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        except BaseException:
            self._reap()
            raise
        _LIVE.add(self)

    def _wait_ready(self) -> None:
        """Return once every listener is bound by *our* process, or raise.

        TCP listeners are awaited with :func:`wait_for_port` for the plain ones; for TLS ones a bare
        connect would make the daemon log a failed handshake into the diagnostics that tests read, so
        they are awaited through /proc (the listening socket must belong to our pid). UDP has no connect,
        so a probe datagram is sent until the receiver writes it out: that proves the whole path,
        socket to output file, is live.
        """
        deadline = time.monotonic() + self.start_timeout
        procfs = _procfs_usable()
        pending = list(self.listeners)
        delay = _POLL_FIRST
        max_rounds = int(self.start_timeout / _POLL_FIRST) + 10
        for _ in range(max_rounds):
            self._check_alive()
            for lst in list(pending):
                if self._listener_ready(lst, procfs):
                    pending.remove(lst)
            if not pending:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(delay)
            delay = min(delay * 1.5, _POLL_MAX)
        self._check_alive()
        raise ReceiverStartError(
            f"{self.name} listeners {pending} not ready within {self.start_timeout:.1f}s"
            f" (ports {self.ports})" + self._log_tail()
        )

    def _listener_ready(self, lst: Listener, procfs: bool) -> bool:
        port = self.ports[lst]
        kind: Literal["tcp", "udp"] = "udp" if lst == "udp" else "tcp"
        pid = self._proc.pid if self._proc is not None else -1
        if procfs:
            owner = _port_owner(kind, port, pid)
            if owner == "other":
                raise _PortTaken(f"{kind} port {port} for listener {lst!r} is held by another process")
            if owner == "none":
                return False
        if kind == "udp":
            return self._udp_probe(port)
        if lst in TLS_LISTENERS and procfs:
            return True
        try:
            wait_for_port(LOOPBACK, port, timeout=0.05)
        except TimeoutError:
            return False
        return True

    def _udp_probe(self, port: int) -> bool:
        if any(self._probe_token in m["msg"] for m in self._read_all() if m["app_name"] == PROBE_APP_NAME):
            return True
        frame = f"<135>1 - - {PROBE_APP_NAME} - - - probe {self._probe_token}".encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(frame, (LOOPBACK, port))
        return False

    def _check_alive(self) -> None:
        proc = self._proc
        if proc is None:
            raise ReceiverStartError(f"{self.name} is not running")
        code = proc.poll()
        if code is None:
            return
        log = self.log_text()
        if "Address already in use" in log.split(f"=== start #{self._starts} ")[-1]:
            raise _PortTaken(f"{self.name} exited ({code}) because a port was in use")
        raise ReceiverStartError(f"{self.name} exited with status {code} during start-up" + self._log_tail())

    # ----------------------------------------------------------------- reading back

    def address(self, listener: Listener) -> tuple[str, int]:
        """``(host, port)`` to send to for ``listener``."""
        return (LOOPBACK, self.ports[listener])

    def messages(self, *, include_probes: bool = False) -> list[SyslogMessage]:
        """Every message written so far, in arrival order, across restarts (readiness probes hidden)."""
        records = self._read_all()
        if include_probes:
            return records
        return [m for m in records if m["app_name"] != PROBE_APP_NAME]

    def wait_for_messages(
        self,
        n: int,
        timeout: float = 10.0,
        *,
        where: Callable[[SyslogMessage], bool] | None = None,
    ) -> list[SyslogMessage]:
        """Poll until at least ``n`` messages (matching ``where``, if given) arrived and return them all.

        Raises ``TimeoutError`` listing what did arrive plus the daemon's log tail, because "0 messages"
        alone rarely says whether the sender, the framing or the receiver was at fault.
        """
        deadline = time.monotonic() + timeout
        delay = _POLL_FIRST
        got: list[SyslogMessage] = []

        def current() -> list[SyslogMessage]:
            found = self.messages()
            return found if where is None else [m for m in found if where(m)]

        for _ in range(int(timeout / _POLL_FIRST) + 2):
            got = current()
            if len(got) >= n:
                return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, _POLL_MAX)
        got = current()
        if len(got) >= n:
            return got
        raise TimeoutError(
            f"{self.name}: expected at least {n} messages within {timeout:.1f}s, got {len(got)}: "
            f"{[m['raw'][:120] for m in got]}" + self._log_tail()
        )

    def _read_all(self) -> list[SyslogMessage]:
        # Incremental: only complete lines past the last offset are parsed, so polling a large file is
        # cheap, and a line the daemon is still writing is left for the next call.
        with self._read_lock:
            try:
                with self.output_path.open("rb") as fh:
                    fh.seek(self._offset)
                    chunk = fh.read()
            except FileNotFoundError:
                chunk = b""
            end = chunk.rfind(b"\n")
            if end >= 0:
                fresh: list[SyslogMessage] = []
                torn = self._torn_budget
                for line in chunk[:end].split(b"\n"):
                    if not line.strip():
                        continue
                    text = line.decode("utf-8", "surrogateescape")
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError as exc:
                        if torn > 0:  # cut short by kill(); see _seal_torn_line()
                            torn -= 1
                            continue
                        raise ValueError(f"{self.name} wrote a line that is not JSON: {text[:300]!r}") from exc
                    fresh.append(self._record(obj))
                # Committed only once the whole chunk parsed, so an error repeats instead of duplicating.
                self._parsed += fresh
                self._torn_budget = torn
                self._offset += end + 1
            return list(self._parsed)

    def _seal_torn_line(self) -> None:
        """End a record that a killed daemon left half-written, so the next run's first line stays whole.

        A large record can take several write() calls; SIGKILL between them leaves a line without its
        newline, which the restarted daemon would otherwise continue. That one line is then skipped.
        """
        with self._read_lock:
            try:
                with self.output_path.open("rb+") as fh:
                    if fh.seek(0, os.SEEK_END) == 0:
                        return
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        fh.write(b"\n")
                        self._torn_budget += 1
            except FileNotFoundError:
                return

    def log_text(self) -> str:
        """The daemon's own diagnostics (stdout/stderr, plus rsyslog's internal messages), all runs."""
        parts = [_read_text(self.log_path)]
        parts += [_read_text(p) for p in self._extra_log_paths()]
        return "\n".join(p for p in parts if p)

    def _log_tail(self, lines: int = 40) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"\n--- {self.name} log ({self.log_path}) ---\n{tail}" if tail else ""

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {state} ports={self.ports} workdir={self.workdir}>"


def _int_field(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key, "")
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _str_field(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key, "")
    return value if isinstance(value, str) else json.dumps(value)


def _flatten_sdata(tree: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``{sd_id: {param: value}}``; params with dots (nested by format-json) are joined back with dots."""
    out: dict[str, dict[str, str]] = {}
    for sd_id, params in tree.items():
        flat: dict[str, str] = {}
        stack: list[tuple[str, Any]] = [("", params)]
        while stack:
            prefix, node = stack.pop()
            if isinstance(node, Mapping):
                stack.extend((f"{prefix}.{k}" if prefix else str(k), v) for k, v in node.items())
            else:
                flat[prefix] = node if isinstance(node, str) else json.dumps(node)
        out[str(sd_id)] = flat
    return out


class Rsyslog(SyslogReceiver):
    """rsyslog 8.2302 with imudp/imtcp and the OpenSSL stream driver for TLS.

    All listeners feed one ruleset that runs ``mmpstrucdata`` (for ``sdata``) and writes one JSON line
    per message with an ``option.jsonf`` list template; the listener is the input's ``inputname``.
    rsyslog hands its own messages (start, errors, "oversize message" warnings) to the system log socket
    by default; ``processInternalMessages="on"`` keeps them in this instance, where the default ruleset
    writes them to a separate file that :meth:`log_text` includes. Only start-up errors also reach stderr.
    """

    name = "rsyslog"
    stream_driver: ClassVar[str] = "ossl"

    @property
    def internal_log_path(self) -> Path:
        return self.workdir / "rsyslog-internal.log"

    @property
    def spool_dir(self) -> Path:
        return self.workdir / "rsyslog-spool"

    def _binary(self) -> Path:
        return self.root / "usr/sbin/rsyslogd"

    def _module_dir(self) -> Path:
        return self.root / "usr/lib" / _multiarch_dir(self.root) / "rsyslog"

    def _lib_path(self) -> list[Path]:
        triplet = _multiarch_dir(self.root)
        return [self.root / "usr/lib" / triplet, self.root / "lib" / triplet]

    def _check_installed(self) -> None:
        super()._check_installed()
        modules = self._module_dir()
        for module in ("imudp.so", "imtcp.so", "mmpstrucdata.so", f"lmnsd_{self.stream_driver}.so"):
            if not (modules / module).is_file():
                raise ReceiversNotInstalled(_not_installed_message(self.root, f"rsyslog module {module}"))

    def _argv(self) -> list[str]:
        return [
            str(self._binary()),
            "-n",
            "-f",
            str(self.config_path),
            "-i",
            str(self.pid_path),
            "-M",
            str(self._module_dir()),
        ]

    def _extra_log_paths(self) -> list[Path]:
        return [self.internal_log_path]

    def _prepare_run(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)

    def _cleanup_run(self) -> None:
        """Nothing per-run to remove: the spool dir is kept for the next start, like a real install."""

    def _config_text(self) -> str:
        q = _conf_str
        tls_globals = ""
        if self.cert_file and self.key_file:
            tls_globals = (
                f"  defaultNetstreamDriverCertFile={q(self.cert_file)}\n"
                f"  defaultNetstreamDriverKeyFile={q(self.key_file)}\n"
            )
            if self.client_ca_file:
                tls_globals += f"  defaultNetstreamDriverCAFile={q(self.client_ca_file)}\n"
        auth_mode = "x509/certvalid" if self.client_ca_file else "anon"
        # imtcp rejects octet-counted frames above maxFrameSize (default 200000) as framing errors, which
        # would undercut a larger max_message_size.
        max_frame = max(200_000, self.max_message_size)
        inputs: list[str] = []
        for lst in self.listeners:
            common = f'address="127.0.0.1" port="{self.ports[lst]}" name="{lst}" ruleset="fwd_capture"'
            if lst == "udp":
                inputs.append(f'input(type="imudp" {common})')
                continue
            params = [common, f'maxFrameSize="{max_frame}"']
            if lst.endswith("_lf"):
                params.append('supportOctetCountedFraming="off"')
            if lst in TLS_LISTENERS:
                params += [
                    f'streamDriver.name="{self.stream_driver}"',
                    'streamDriver.mode="1"',
                    f'streamDriver.authMode="{auth_mode}"',
                ]
            inputs.append(f'input(type="imtcp" {" ".join(params)})')
        fields = [
            ("raw", "rawmsg"),
            ("pri", "pri"),
            ("facility", "syslogfacility"),
            ("severity", "syslogseverity"),
            ("hostname", "hostname"),
            ("app_name", "app-name"),
            ("procid", "procid"),
            ("msgid", "msgid"),
            ("structured_data", "structured-data"),
            ("msg", "msg"),
            ("listener", "inputname"),
            ("sdata", "$!rfc5424-sd"),
        ]
        props = "\n".join(f'  property(outname="{out}" name="{prop}" format="jsonf")' for out, prop in fields)
        needs_udp = "udp" in self.listeners
        needs_tcp = any(lst != "udp" for lst in self.listeners)
        return f"""# generated by tests/support/syslogd.py; started as: {" ".join(self._argv())}
# maxMessageSize must come before any input is defined. processInternalMessages="on": the default hands
# rsyslog's own messages to the system log socket (/dev/log), which a test receiver must not touch.
global(
  maxMessageSize="{self.max_message_size}"
  workDirectory={q(self.spool_dir)}
  parser.escapeControlCharactersOnReceive="off"
  net.enableDNS="off"
  processInternalMessages="on"
{tls_globals})
{'module(load="imudp")' if needs_udp else ""}
{'module(load="imtcp" maxSessions="200")' if needs_tcp else ""}
module(load="mmpstrucdata")

template(name="fwd_json" type="list" option.jsonf="on") {{
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
{props}
  constant(outname="receiver" value="rsyslog" format="jsonf")
}}
template(name="fwd_internal" type="string" string="%timegenerated:::date-rfc3339% %syslogtag%%msg%\\n")

# rsyslog's own messages (start, errors, oversize warnings) land in the default ruleset.
action(type="omfile" file={q(self.internal_log_path)} template="fwd_internal")

ruleset(name="fwd_capture") {{
  action(type="mmpstrucdata" sd_name.lowercase="off")
  action(type="omfile" file={q(self.output_path)} template="fwd_json")
}}

{chr(10).join(inputs)}
"""

    def _record(self, obj: Mapping[str, Any]) -> SyslogMessage:
        sd_text = obj.get("sdata", "")
        sd_tree: Any = json.loads(sd_text) if isinstance(sd_text, str) and sd_text.strip() else {}
        return SyslogMessage(
            receiver=self.name,
            listener=_str_field(obj, "listener"),
            raw=_str_field(obj, "raw"),
            pri=_int_field(obj, "pri"),
            facility=_int_field(obj, "facility"),
            severity=_int_field(obj, "severity"),
            timestamp=_str_field(obj, "timestamp"),
            hostname=_str_field(obj, "hostname"),
            app_name=_str_field(obj, "app_name"),
            procid=_str_field(obj, "procid"),
            msgid=_str_field(obj, "msgid"),
            structured_data=_str_field(obj, "structured_data"),
            sdata=_flatten_sdata(sd_tree) if isinstance(sd_tree, Mapping) else {},
            msg=_str_field(obj, "msg"),
        )


class RsyslogGtls(Rsyslog):
    """rsyslog with the GnuTLS stream driver instead of OpenSSL.

    The two drivers differ on the wire in ways a sender must survive: with Python 3.11 clients here,
    ``ossl`` negotiates TLS 1.3 and answers ``close_notify``; ``gtls`` negotiates TLS 1.2 and closes
    without answering it (the client's ``unwrap()`` raises ``SSLEOFError``).
    """

    stream_driver = "gtls"


class SyslogNg(SyslogReceiver):
    """syslog-ng 3.38: ``syslog()`` sources for octet-counted TCP/TLS, ``network(flags(syslog-protocol))``
    for UDP and the LF-framed listeners (the only way to parse RFC 5424 from LF-framed input, notes §8).

    ``keep-hostname(yes)`` matters: syslog-ng otherwise replaces HOSTNAME with the sender's address.
    Internal messages go to stderr (``-e``), captured in the log file.
    """

    name = "syslog-ng"
    _ctl_tmpdir: Path | None = None

    @property
    def persist_path(self) -> Path:
        return self.workdir / "syslog-ng.persist"

    def _binary(self) -> Path:
        return self.root / "usr/sbin/syslog-ng"

    def _module_dir(self) -> Path:
        return self.root / "usr/lib/syslog-ng/3.38"

    def _lib_path(self) -> list[Path]:
        triplet = _multiarch_dir(self.root)
        return [self.root / "usr/lib" / triplet, self.root / "lib" / triplet, self.root / "usr/lib/syslog-ng"]

    def _check_installed(self) -> None:
        super()._check_installed()
        for module in ("libafsocket.so", "libjson-plugin.so", "libsyslogformat.so"):
            if not (self._module_dir() / module).is_file():
                raise ReceiversNotInstalled(_not_installed_message(self.root, f"syslog-ng module {module}"))

    @property
    def control_path(self) -> Path:
        if self._ctl_tmpdir is not None:
            return self._ctl_tmpdir / "ctl"
        return self.workdir / "syslog-ng.ctl"

    def _prepare_run(self) -> None:
        # pytest's tmp paths can exceed the AF_UNIX path limit; the control socket then lives in a short
        # private temp dir instead (removed after the run).
        if len(str(self.workdir / "syslog-ng.ctl")) > _SUN_PATH_MAX and self._ctl_tmpdir is None:
            self._ctl_tmpdir = Path(tempfile.mkdtemp(prefix="sng-"))

    def _cleanup_run(self) -> None:
        if self._ctl_tmpdir is not None:
            shutil.rmtree(self._ctl_tmpdir, ignore_errors=True)
            self._ctl_tmpdir = None

    def _argv(self) -> list[str]:
        return [
            str(self._binary()),
            "-F",
            "-e",
            "--no-caps",
            f"--module-path={self._module_dir()}",
            f"--cfgfile={self.config_path}",
            f"--persist-file={self.persist_path}",
            f"--pidfile={self.pid_path}",
            f"--control={self.control_path}",
        ]

    def _tls_block(self) -> str:
        assert self.cert_file is not None
        assert self.key_file is not None
        q = _conf_str
        if self.client_ca_file:
            verify = f"peer-verify(required-trusted) ca-file({q(self.client_ca_file)})"
        else:
            verify = "peer-verify(optional-untrusted)"
        return f"tls(key-file({q(self.key_file)}) cert-file({q(self.cert_file)}) {verify})"

    def _config_text(self) -> str:
        sources: list[str] = []
        for lst in self.listeners:
            where = f'ip("127.0.0.1") port({self.ports[lst]})'
            if lst == "udp":
                driver = f'network({where} transport("udp") flags(syslog-protocol, store-raw-message))'
            elif lst == "tcp":
                driver = f'syslog({where} transport("tcp") flags(store-raw-message))'
            elif lst == "tcp_lf":
                driver = f'network({where} transport("tcp") flags(syslog-protocol, store-raw-message))'
            elif lst == "tls":
                driver = f'syslog({where} transport("tls") flags(store-raw-message) {self._tls_block()})'
            else:
                driver = (
                    f'network({where} transport("tls") flags(syslog-protocol, store-raw-message) {self._tls_block()})'
                )
            sources.append(
                f"source s_{lst} {{ {driver}; }};\n"
                f'log {{ source(s_{lst}); rewrite {{ set("{lst}" value("listener")); }}; '
                "destination(d_json); };"
            )
        pairs = " ".join(
            f"--pair {key}=${{{macro}}}"
            for key, macro in (
                ("raw", "RAWMSG"),
                ("pri", "PRI"),
                ("facility", "FACILITY_NUM"),
                ("severity", "SEVERITY_NUM"),
                ("timestamp", "ISODATE"),
                ("hostname", "HOST"),
                ("app_name", "PROGRAM"),
                ("procid", "PID"),
                ("msgid", "MSGID"),
                ("structured_data", "SDATA"),
                ("msg", "MSG"),
                ("listener", "listener"),
            )
        )
        # No quotes or backslashes in the expression, so it can go into the string literal as is; the
        # trailing \n is syslog-ng's escape for the line end.
        template = f'"$(format-json {pairs} --pair receiver=syslog-ng --key .SDATA.*)\\n"'
        return f"""@version: 3.38
# generated by tests/support/syslogd.py
options {{
  keep-hostname(yes); chain-hostnames(no); use-dns(no); dns-cache(no); use-fqdn(no);
  frac-digits(6); log-msg-size({self.max_message_size}); flush-lines(1); stats-freq(0);
  create-dirs(no); mark-freq(0);
}};
destination d_json {{ file({_conf_str(self.output_path)} template({template})); }};
{chr(10).join(sources)}
"""

    def _record(self, obj: Mapping[str, Any]) -> SyslogMessage:
        sd_tree = obj.get("_SDATA", {})
        return SyslogMessage(
            receiver=self.name,
            listener=_str_field(obj, "listener"),
            raw=_str_field(obj, "raw"),
            pri=_int_field(obj, "pri"),
            facility=_int_field(obj, "facility"),
            severity=_int_field(obj, "severity"),
            timestamp=_str_field(obj, "timestamp"),
            hostname=_str_field(obj, "hostname"),
            app_name=_str_field(obj, "app_name"),
            procid=_str_field(obj, "procid"),
            msgid=_str_field(obj, "msgid"),
            structured_data=_str_field(obj, "structured_data"),
            sdata=_flatten_sdata(cast(Mapping[str, Any], sd_tree)) if isinstance(sd_tree, Mapping) else {},
            msg=_str_field(obj, "msg"),
        )
