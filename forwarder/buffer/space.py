"""Disk-space safety: a reserve file, released when the disk fills, so draining never deadlocks.

When the filesystem under the buffer is full, appends fail (503, nothing acknowledged) — but
the shippers still need to write: a cursor move, a dead letter, the DELETE that purges delivered
events. All of those need a few pages of WAL. So the buffer keeps ``reserve.bin`` preallocated
next to the database and deletes it the moment the disk is found full: that frees exactly
enough room for draining to go on. New deliveries stay refused until the reserve can be
allocated again, which is also the test that space has really come back.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

RESERVE_NAME = "reserve.bin"
# On a small volume (a container's scratch disk, a tmpfs) a fixed reserve, and recover()'s
# twice-the-reserve test, would leave the buffer "disk full" before it ever stored anything; so
# the reserve takes at most this share of the filesystem, but never less than what draining a
# full disk needs: purging a chunk of events and checkpointing writes about a MiB of WAL.
MAX_SHARE = 0.05
MIN_RESERVE = 2 << 20


def reserve_size(directory: Path, configured: int) -> int:
    """``buffer.reserve_bytes``, capped at 5 % of the filesystem (but at least 2 MiB)."""
    if configured <= 0:
        return 0
    stats = os.statvfs(directory)
    return min(configured, max(MIN_RESERVE, int(stats.f_blocks * stats.f_frsize * MAX_SHARE)))


class Reserve:
    def __init__(self, directory: Path, size: int) -> None:
        self.path = directory / RESERVE_NAME
        self.size = reserve_size(directory, size)

    def ensure(self) -> bool:
        """Allocate the reserve if it is missing; False when the disk has no room for it."""
        if self.size <= 0:
            return True
        try:
            if self.path.exists() and self.path.stat().st_size >= self.size:
                return True
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self.release()
                return False
            raise
        return True

    def recover(self) -> bool:
        """After a full disk: allocate the reserve again only if that still leaves as much free,
        so accepting deliveries again does not immediately fill the disk once more."""
        if self.size <= 0:
            return True
        stats = os.statvfs(self.path.parent)
        if stats.f_bavail * stats.f_frsize < 2 * self.size:
            return False
        return self.ensure()

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
