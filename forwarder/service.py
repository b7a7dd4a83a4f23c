"""The daemon's lifecycle, in one place: start → run → stop.

Start: open the buffer, build outputs and one shipper each, bind the HTTPS socket, then serve.
Run: uvicorn serves webhooks; shippers drain the buffer; maintenance purges on a timer.
Stop (SIGTERM or SIGINT), in this order, each step bounded in time:

1. stop accepting: uvicorn closes the listening socket (new connections are refused);
2. in-flight requests finish, each either committed (2xx) or answered 503 (``listen.drain_timeout``);
3. shippers finish or abandon their current batch (``service.shutdown_timeout``); whatever is
   not confirmed stays in the buffer for the next start;
4. outputs and the buffer close; exit 0.

A second signal skips the waiting. Signal handling builds on uvicorn's own capture (which
restores the handlers installed here and re-raises what it caught) rather than competing with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from forwarder import selfsigned, telemetry
from forwarder.buffer import SqliteBuffer
from forwarder.buffer.sqlite import BufferLimits
from forwarder.config import Config
from forwarder.errors import EX_UNAVAILABLE, ForwarderError, StorageError
from forwarder.formats import build_formatter
from forwarder.outputs import OUTPUT_TYPES, Output
from forwarder.receiver import Verifier, WebhookEndpoint, build_app
from forwarder.records import RecordStream
from forwarder.shipper import Shipper


class StartupError(ForwarderError):
    """Something the daemon needs at start (port, state directory, certificate) is unusable."""

    exit_code = EX_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    address: str
    port: int
    ca_file: Path | None


def tls_files(config: Config) -> tuple[Path, Path, Path | None] | None:
    """(cert, key, CA-to-trust) for the listener, creating the self-signed set when configured."""
    listen = config.listen
    if listen.plain_http:
        return None
    if listen.tls_self_signed:
        files = selfsigned.ensure(config.state_dir / "tls")
        return files.cert, files.key, files.ca
    assert listen.tls_cert is not None and listen.tls_key is not None
    return listen.tls_cert, listen.tls_key, None


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(
            f"cannot load the TLS certificate {cert} and key {key}: {exc}; check that both are PEM, "
            "match each other, and are readable by the service user"
        ) from exc
    return context


def bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot listen on {address}:{port}: {exc.strerror}; pick another listen.port, or stop "
            "whatever holds it (ss -ltnp)"
        ) from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, reporting the first stop signal when it happens rather than after the drain."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            telemetry.shutting_down(signal.Signals(sig).name)
        super().handle_exit(sig, frame)


def open_buffer(config: Config) -> SqliteBuffer:
    b = config.buffer
    limits = BufferLimits(
        max_bytes=b.max_bytes, high_water=b.high_water, low_water=b.low_water, reserve_bytes=b.reserve_bytes
    )
    return SqliteBuffer.open(
        config.state_dir,
        outputs=[o.name for o in config.outputs],
        dedup_window=b.dedup_window,
        dedup_bodies=b.dedup_bodies,
        delivered_retention=b.delivered_retention,
        limits=limits,
        integrity_check=b.integrity_check,
    )


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.shippers: list[Shipper] = []
        self.outputs: list[Output] = []
        self.buffer: SqliteBuffer | None = None
        self.endpoint: Endpoint | None = None
        self._server: uvicorn.Server | None = None
        self._signals = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self, *, on_ready: Any = None) -> int:
        config = self.config
        self._install_signal_handlers()
        try:
            self.buffer = open_buffer(config)
        except StorageError as exc:
            raise StartupError(f"cannot open the buffer in {config.state_dir}: {exc}") from exc
        if self.buffer.state.salvage is not None:
            telemetry.buffer_salvaged(self.buffer.state.salvage.describe(), str(self.buffer.state.salvage.moved_to))
        try:
            await self._start_shippers(self.buffer)
            tls = tls_files(config)
            sock = bind(config.listen.address, config.listen.port)
            self.endpoint = self._endpoint(sock, tls)
            self._server = self._uvicorn(tls)
            self._spawn(self._maintenance(), "maintenance")
            telemetry.listening(self.endpoint.url, self.endpoint.address, self.endpoint.port)
            if on_ready is not None:
                on_ready(self)
            if self._signals == 0:
                await self._server.serve(sockets=[sock])
            else:
                sock.close()
        finally:
            await self._stop()
        return 0

    async def _start_shippers(self, buffer: SqliteBuffer) -> None:
        positions = await buffer.positions()
        for oc in self.config.outputs:
            output = OUTPUT_TYPES[oc.type].build(oc.name, oc.settings)
            self.outputs.append(output)
            stream = RecordStream(
                buffer.reader(),
                positions[oc.name],
                oc.delivery,
                build_formatter(oc.delivery),
                summary=self.config.records.summary,
                budget=output.message_budget,
            )
            shipper = Shipper(output, oc.delivery, buffer, stream)
            self.shippers.append(shipper)
            self._spawn(shipper.run(), f"shipper:{oc.name}")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_report_crash)
        self._tasks.append(task)

    def _endpoint(self, sock: socket.socket, tls: tuple[Path, Path, Path | None] | None) -> Endpoint:
        host, port = sock.getsockname()[:2]
        shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - display only
        shown = f"[{shown}]" if ":" in shown else shown
        scheme = "http" if tls is None else "https"
        return Endpoint(f"{scheme}://{shown}:{port}{self.config.listen.path}", host, port, tls[2] if tls else None)

    def _uvicorn(self, tls: tuple[Path, Path, Path | None] | None) -> uvicorn.Server:
        listen = self.config.listen
        assert self.buffer is not None
        verifier = Verifier([s.reveal() for s in self.config.webhook.secrets])
        endpoint = WebhookEndpoint(
            verifier=verifier, store=self.buffer.append, listen=listen, admission=self.buffer.admission
        )
        context = server_ssl_context(tls[0], tls[1]) if tls else None
        uv_config = uvicorn.Config(
            build_app(endpoint, listen.path),
            http="httptools",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=int(max(1, listen.keep_alive_timeout)),
            limit_concurrency=listen.max_connections,
            timeout_graceful_shutdown=int(max(1, listen.drain_timeout)),
            ssl_context_factory=(lambda _config, _default: context) if context else None,
        )
        return _Server(uv_config)

    async def _maintenance(self) -> None:
        """Purge, expire and vacuum on a timer; every second while deliveries are being refused
        (disk full, high water), so that the buffer reopens as soon as it can."""
        assert self.buffer is not None
        buffer = self.buffer
        while True:
            urgent = buffer.admission() is not None
            await asyncio.sleep(
                min(self.config.buffer.maintenance_interval, 1.0) if urgent else self.config.buffer.maintenance_interval
            )
            try:
                report = await buffer.maintain()
            except StorageError as exc:
                telemetry.maintenance_failed(str(exc))
                continue
            telemetry.maintenance_done(report.events_purged, report.transport_ids_expired)
            if buffer.state.disk_full:
                telemetry.disk_full_persists(buffer.state.disk_full_since)

    # --- stopping -----------------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1 and (self._server is None or not self._server.should_exit):
            telemetry.shutting_down(signal.Signals(signum).name)
        if self._server is not None:
            self._server.should_exit = True
            if self._signals > 1:
                self._server.force_exit = True
        if self._signals > 1:
            for task in self._tasks:
                task.cancel()

    async def _stop(self) -> None:
        for shipper in self.shippers:
            shipper.stop()
        shipper_tasks = [t for t in self._tasks if t.get_name().startswith("shipper:")]
        if shipper_tasks:
            _done, pending = await asyncio.wait(shipper_tasks, timeout=self.config.service.shutdown_timeout)
            if pending:
                telemetry.shippers_unfinished(sorted(t.get_name().split(":", 1)[1] for t in pending))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for output in self.outputs:
            with contextlib.suppress(Exception):
                await output.aclose()
        for shipper in self.shippers:
            shipper.stream.close()
        if self.buffer is not None:
            await self.buffer.close()
        telemetry.stopped()


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        telemetry.service_log.critical(
            "internal task stopped with an error; restart the service and report this bug",
            exc_info=task.exception(),
            extra={"task": task.get_name()},
        )


def run(config: Config, *, on_ready: Any = None) -> int:
    """Run the service to completion on uvloop (when installed); returns the exit code."""
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(Service(config).run(on_ready=on_ready))
