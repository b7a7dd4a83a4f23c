"""``file`` output: one formatted record per line, appended to a local file.

The embedded default uses it so a newcomer sees records without any SIEM. It also suits a
collector that tails files (Filebeat, the Splunk Universal Forwarder, an InsightIDR agent).
Rotation-friendly: if the path is renamed or removed (logrotate), the next batch reopens it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from forwarder.config.model import DeliveryConfig
from forwarder.config.reader import Table
from forwarder.errors import OutputError
from forwarder.formats import FORMAT_NAMES
from forwarder.outputs.base import OutputType
from forwarder.types import Delivered, Message, Outcome, Record, Retry

# --- config -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileSettings:
    path: Path
    # fsync after each batch: the line survives power loss before the buffer forgets it. Off
    # only when the file is itself a throwaway (tests, a tmpfs tailed by another agent).
    fsync: bool = True


def parse(t: Table) -> FileSettings:
    path: Path = t.path_value("path")
    if path.is_dir():
        raise t.error(
            "path", f"{path} is a directory", hint=f'name a file in it, e.g. path = "{path / "records.jsonl"}"'
        )
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise t.error(
                    "path", f"{ancestor} is a file, so {path} cannot be created under it", hint="fix the directory part"
                )
            break
    return FileSettings(path=path, fsync=t.boolean("fsync", True))


# --- encode -------------------------------------------------------------------------------------------


def encode(batch: Sequence[Message]) -> bytes:
    """JSON lines / CEF lines: every format escapes newlines, so one record is one line."""
    return b"".join(m.body + b"\n" for m in batch)


# --- client -------------------------------------------------------------------------------------------


class FileOutput:
    def __init__(self, name: str, settings: FileSettings) -> None:
        self.name = name
        self.settings = settings
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None

    def message_budget(self, record: Record) -> int | None:
        return None

    async def send(self, batch: Sequence[Message]) -> Outcome:
        data = encode(batch)
        try:
            await asyncio.to_thread(self._append, data)
        except OSError as exc:
            self._close()
            return Retry(f"cannot write {self.settings.path}: {exc.strerror or exc}")
        return Delivered()

    async def healthcheck(self) -> None:
        """Whether the file could be appended to, without creating anything: ``check-config
        --probe`` often runs as root, and a root-owned file or directory made here would lock the
        service user out. Missing directories are fine when the nearest existing one is writable
        (sending creates them)."""
        path = self.settings.path
        if path.exists():
            if not path.is_file():
                raise OutputError(f"{path} exists but is not a regular file; give the path of a file")
            if not os.access(path, os.W_OK):
                raise OutputError(f"cannot append to {path}: not writable; let the service user write it")
            return
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise OutputError(f"cannot create {path}: {ancestor} is not a directory; fix the output's path")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise OutputError(
                f"cannot create {path}: {ancestor} is not writable; create the directory and let the service "
                "user write it"
            )

    async def aclose(self) -> None:
        self._close()

    def _append(self, data: bytes) -> None:
        fd = self._open_if_needed()
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if self.settings.fsync:
            os.fsync(fd)

    def _open_if_needed(self) -> int:
        path = self.settings.path
        if self._fd is not None:
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == self._identity:
                    return self._fd
            except FileNotFoundError:
                pass
            self._close()  # rotated or removed: start a new file at the configured path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        st = os.fstat(fd)
        self._fd, self._identity = fd, (st.st_dev, st.st_ino)
        return fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self._identity = None


# --- build --------------------------------------------------------------------------------------------


def build(name: str, settings: FileSettings) -> FileOutput:
    return FileOutput(name, settings)


TYPE = OutputType(
    parse=parse,
    build=build,
    formats=FORMAT_NAMES,
    # A short linger: under load, records share a write and a cursor commit instead of one each.
    delivery_defaults=DeliveryConfig(batch_max_records=1000, batch_timeout=0.1),
)
