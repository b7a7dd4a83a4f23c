"""One daemon per state directory, enforced with an advisory lock the kernel drops on exit.

Two daemons on one buffer would each believe they own the cursors: both would ship every event
(duplicates in the SIEM) and their purges would race. SQLite's own locking only serialises
transactions, it does not stop that. flock() is released by the kernel when the process dies,
however it dies, so a crash never leaves a stale lock that blocks the restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from forwarder.errors import StorageError

LOCK_NAME = "daemon.lock"


class DirectoryInUse(StorageError):
    """Another live process holds the state directory."""


class DirectoryLock:
    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def acquire(cls, directory: Path) -> DirectoryLock:
        path = directory / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot create the lock file {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DirectoryInUse(
                f"another snyk-forwarder (pid {holder}) is already running on the state directory {directory}; "
                "stop it first, or give this instance its own [state] directory (instances never share a buffer)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    @staticmethod
    def holder(directory: Path) -> int | None:
        """The pid of the daemon running on ``directory``, or None when none is (checks, takes nothing)."""
        try:
            fd = os.open(directory / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else 0
        finally:
            os.close(fd)  # also drops the shared lock if we got it
        return None

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing drops the flock
            self._fd = -1
