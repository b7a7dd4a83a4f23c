"""Loopback port helpers for tests that start real network daemons.

Tests never use fixed ports: parallel runs, CI neighbours and a developer's own services would collide.
A port picked here is only *probably* free by the time a daemon binds it, so callers that hand it to
another process must be ready to retry with a new one (see ``syslogd.py``).
"""

from __future__ import annotations

import socket
import time
from typing import Literal

__all__ = ["free_port", "wait_for_port"]

LOOPBACK = "127.0.0.1"

# Short first sleeps keep fast daemons fast; the cap keeps a slow one from being hammered.
_FIRST_DELAY = 0.005
_MAX_DELAY = 0.1


def free_port(kind: Literal["tcp", "udp"] = "tcp", host: str = LOOPBACK) -> int:
    """Return a port the kernel just considered free on ``host`` for ``kind``.

    The socket is closed before returning, so the port can be taken by someone else before the
    caller uses it: treat the answer as a good guess, not a reservation.
    """
    if kind == "tcp":
        sock_type = socket.SOCK_STREAM
    elif kind == "udp":
        sock_type = socket.SOCK_DGRAM
    else:  # pragma: no cover - guarded by the type, kept for untyped callers
        raise ValueError(f"kind must be 'tcp' or 'udp', not {kind!r}")
    with socket.socket(socket.AF_INET, sock_type) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Block until something accepts TCP connections on ``host:port``, or raise ``TimeoutError``.

    Polls with short, growing sleeps instead of one long sleep so that a daemon that is up in 50 ms
    costs 50 ms, and a dead one fails after ``timeout`` instead of hanging. The loop is bounded both by
    the deadline and by an attempt count, so a clock that misbehaves cannot make it spin forever.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout!r}")
    deadline = time.monotonic() + timeout
    max_attempts = int(timeout / _FIRST_DELAY) + 2
    delay = _FIRST_DELAY
    last_error: OSError | None = None
    for _ in range(max_attempts):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            with socket.create_connection((host, port), timeout=min(0.5, remaining)):
                return
        except OSError as exc:
            last_error = exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, _MAX_DELAY)
    raise TimeoutError(
        f"nothing accepted TCP connections on {host}:{port} within {timeout:.1f}s (last error: {last_error!r})"
    )
