"""The baseline for bench/ingest.py: uvicorn over HTTPS with nothing behind it.

The daemon's throughput only means something next to what the same server stack can do on the
same machine in the same minute, so this app mirrors how the daemon runs uvicorn —
httptools, uvloop (through an ``asyncio.Runner`` like the daemon's), no lifespan, no access log,
no Server header, the same TLS context (server defaults, TLS 1.2 minimum) and listening socket
(backlog 2048) — and does the least a webhook receiver can do: read the whole body, answer 202.
Whatever separates the two numbers is the daemon's own work (routing, HMAC, JSON parse, the
fsynced buffer, the shipper).

The TLS context and socket are built here rather than imported from ``forwarder``: the baseline
must not change or break when the daemon's internals are refactored. ``ingest.py`` checks that
both targets negotiate the same TLS version and cipher.

The answer has the daemon's shape (``{"status":"stored","event_id":N}``) so that wrk's Lua
``response()`` does identical work against both targets.

Usage: ``python bench/bare_app.py --cert C --key K [--port 0]``; prints one JSON line
``{"message": "listening", "port": N}`` on stdout once the socket is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_HEADERS = [(b"content-type", b"application/json")]


class BareApp:
    """Raw ASGI: no framework, no routing, so the baseline is uvicorn + TLS and nothing else."""

    def __init__(self) -> None:
        self._next_id = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        b"".join(chunks)  # the daemon holds the whole body in memory too; so does the baseline
        self._next_id += 1
        answer = b'{"status":"stored","event_id":%d}' % self._next_id
        headers = [*_HEADERS, (b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """As the daemon's listener: Python's server defaults, nothing older than TLS 1.2."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def bind(address: str, port: int) -> socket.socket:
    """As the daemon's listener: bound before uvicorn starts (so port 0 can be reported), backlog 2048."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-connections", type=int, default=2000)
    parser.add_argument("--keep-alive-timeout", type=int, default=5)
    args = parser.parse_args(argv)

    context = server_ssl_context(args.cert, args.key)
    sock = bind(args.address, args.port)
    config = uvicorn.Config(
        BareApp(),
        http="httptools",
        loop="uvloop",
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_keep_alive=args.keep_alive_timeout,
        limit_concurrency=args.max_connections,
        ssl_context_factory=lambda _config, _default: context,
    )
    server = uvicorn.Server(config)
    print(json.dumps({"message": "listening", "port": sock.getsockname()[1]}), flush=True)

    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(server.serve(sockets=[sock]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
