"""The daemon's lifecycle, in one place: start → run → reload → stop.

Start: open the buffer (salvaging a damaged file), start one lane per output, bind the HTTPS
socket and the admin socket, then serve; tell systemd READY=1 once the webhook server listens.
Run: uvicorn serves webhooks; lanes drain the buffer; maintenance purges on a timer; the
watchdog pings systemd while the loop and the buffer's writer thread are alive.
Reload (SIGHUP): see :mod:`forwarder.reload`; an invalid new configuration changes nothing.
Stop (SIGTERM or SIGINT), in this order, each step bounded in time:

1. stop accepting: uvicorn closes the listening socket (new connections are refused);
2. in-flight requests finish, each either committed (2xx) or answered 503 (``listen.drain_timeout``);
3. lanes finish or abandon their current batch (``service.shutdown_timeout``); whatever is not
   confirmed stays in the buffer for the next start;
4. outputs, the admin listener and the buffer close; exit 0.

A second signal skips the waiting. Signal handling builds on uvicorn's own capture (which
restores the handlers installed here and re-raises what it caught) rather than competing with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

import uvicorn

from forwarder import metrics, telemetry
from forwarder import reload as reloading
from forwarder.admin_http import AdminServer, Health, admin_server, build_admin_app
from forwarder.buffer import SqliteBuffer
from forwarder.buffer.sqlite import BufferLimits
from forwarder.config import Config
from forwarder.errors import ConfigError, StorageError
from forwarder.lanes import Lane
from forwarder.listener import (
    Endpoint,
    StartupError,
    TlsFiles,
    bind,
    endpoint,
    load_certificate,
    server_ssl_context,
    tls_files,
)
from forwarder.notify import Notifier
from forwarder.receiver import Verifier, WebhookEndpoint, build_app
from forwarder.receiver.protocol import protocol_class

__all__ = ["Service", "StartupError", "run"]


class _Server(uvicorn.Server):
    """uvicorn's server, reporting the first stop signal when it happens rather than after the drain."""

    on_exit: Callable[[str], None] = staticmethod(lambda reason: None)
    handshake_timeout: float = 60.0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            self.on_exit(signal.Signals(sig).name)
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup for pre-bound sockets, plus a TLS handshake deadline.

        uvicorn leaves asyncio's default of 60 s, and a connection still in its handshake is
        invisible to the HTTP protocol (its header deadline and the connection limit), so idle
        TLS connections could pile up to the file-descriptor limit. The service always passes
        its own sockets, which is the only branch of uvicorn's startup needed here.
        """
        assert sockets is not None, "the service binds its sockets itself"
        await self.lifespan.startup()
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        loop = asyncio.get_running_loop()
        timeout = self.handshake_timeout if config.ssl else None
        self.servers = [
            await loop.create_server(
                create_protocol, sock=sock, ssl=config.ssl, backlog=config.backlog, ssl_handshake_timeout=timeout
            )
            for sock in sockets
        ]
        self.started = True


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
        on_commit=telemetry.buffer_committed,
    )


class Service:
    def __init__(
        self, config: Config, *, reload_config: Callable[[], Config] | None = None, notifier: Notifier | None = None
    ) -> None:
        self.config = config
        self.lanes: dict[str, Lane] = {}
        self.buffer: SqliteBuffer | None = None
        self.endpoint: Endpoint | None = None
        self.admin_port: int | None = None
        self.notifier = notifier or Notifier()
        self._reload_config = reload_config
        self._server: _Server | None = None
        self._admin: AdminServer | None = None
        self._webhooks: WebhookEndpoint | None = None
        self._tls: TlsFiles | None = None
        self._ssl: ssl.SSLContext | None = None
        self._signals = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._reloading = asyncio.Lock()

    async def run(self, *, on_ready: Callable[[Service], None] | None = None) -> int:
        config = self.config
        self._install_signal_handlers()
        try:
            self.buffer = open_buffer(config)
        except StorageError as exc:
            raise StartupError(f"cannot open the buffer in {config.state_dir}: {exc}") from exc
        if self.buffer.state.salvage is not None:
            telemetry.buffer_salvaged(self.buffer.state.salvage.describe(), str(self.buffer.state.salvage.moved_to))
        try:
            for oc in config.outputs:
                self.lanes[oc.name] = await Lane.start(
                    oc, self.buffer, summary=config.records.summary, spawn=self._spawn
                )
            self._tls = tls_files(config)
            self._ssl = server_ssl_context(self._tls) if self._tls else None
            sock = bind(config.listen.address, config.listen.port)
            self.endpoint = endpoint(sock, config.listen.path, self._tls)
            self._server = self._webhook_server()
            admin_sock = self._start_admin()
            self._spawn(self._maintenance(), "maintenance")
            self._spawn(self._announce_ready(on_ready), "ready")
            if self.notifier.watchdog_interval:
                self._spawn(self._watchdog(self.notifier.watchdog_interval), "watchdog")
            if self._signals == 0:
                await self._server.serve(sockets=[sock])
            else:
                sock.close()
                if admin_sock is not None:
                    admin_sock.close()
        finally:
            await self._stop()
        return 0

    # --- starting ------------------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_report_crash)
        self._tasks.append(task)
        return task

    def _webhook_server(self) -> _Server:
        listen = self.config.listen
        assert self.buffer is not None
        self._webhooks = WebhookEndpoint(
            verifier=Verifier([s.reveal() for s in self.config.webhook.secrets]),
            store=self.buffer.append,
            listen=listen,
            admission=self.buffer.admission,
        )
        context = self._ssl
        uv_config = uvicorn.Config(
            build_app(self._webhooks, listen.path),
            http=protocol_class(listen.header_timeout, listen.max_header_bytes),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=int(max(1, listen.keep_alive_timeout)),
            limit_concurrency=listen.max_connections,
            timeout_graceful_shutdown=int(max(1, listen.drain_timeout)),
            ssl_context_factory=(lambda _config, _default: context) if context else None,
        )
        server = _Server(uv_config)
        server.on_exit = self._begin_stop
        server.handshake_timeout = listen.header_timeout
        return server

    def _start_admin(self) -> Any:
        admin = self.config.admin
        if not admin.enabled:
            return None
        sock = bind(admin.address, admin.port, what="admin")
        self.admin_port = sock.getsockname()[1]
        metrics.SERVICE.source = self._gauges
        self._admin = admin_server(build_admin_app(self._health))
        self._spawn(self._admin.serve(sockets=[sock]), "admin")
        telemetry.admin_listening(admin.address, self.admin_port)
        return sock

    async def _announce_ready(self, on_ready: Callable[[Service], None] | None) -> None:
        """READY=1 (and the banner) once uvicorn really listens, not merely once it was created."""
        assert self._server is not None and self.endpoint is not None
        for _ in range(3000):
            if self._server.started or self._server.should_exit:
                break
            await asyncio.sleep(0.01)
        if not self._server.started:
            return
        telemetry.listening(self.endpoint.url, self.endpoint.address, self.endpoint.port)
        self.notifier.ready(f"listening on {self.endpoint.url}; {len(self.lanes)} outputs")
        if on_ready is not None:
            on_ready(self)

    # --- running -------------------------------------------------------------------------------------------

    async def _maintenance(self) -> None:
        """Purge, expire and vacuum on a timer; every second while deliveries are being refused
        (disk full, high water), so that the buffer reopens as soon as it can."""
        assert self.buffer is not None
        buffer = self.buffer
        while True:
            interval = self.config.buffer.maintenance_interval
            await asyncio.sleep(min(interval, 1.0) if buffer.admission() is not None else interval)
            try:
                report = await buffer.maintain()
            except StorageError as exc:
                telemetry.maintenance_failed(str(exc))
                continue
            telemetry.maintenance_done(report.events_purged, report.dedup_keys_expired)
            if buffer.state.disk_full:
                telemetry.disk_full_persists(buffer.state.disk_full_since)

    async def _watchdog(self, interval: float) -> None:
        while True:
            if self.buffer is not None and self.buffer.writer_alive:
                self.notifier.watchdog()
            await asyncio.sleep(interval)

    def _health(self) -> Health:
        problems: list[str] = []
        buffer = self.buffer
        alive = buffer is not None and buffer.writer_alive
        if buffer is None or not alive:
            problems.append("buffer is not open")
        elif (refused := buffer.admission()) is not None:
            problems.append(
                {
                    "file_lost": "buffer file deleted or replaced: deliveries are refused, restart the service",
                    "disk_full": "disk full: deliveries are refused",
                    "backpressure": "buffer above its high-water mark: deliveries are refused",
                }[refused]
            )
        retrying = []
        for name, lane in sorted(self.lanes.items()):
            status = lane.shipper.status
            if status.paused:
                problems.append(f"output {name} paused: {status.paused}")
            elif status.last_error_at is not None and status.last_error_at > (status.last_delivery_at or 0.0):
                retrying.append(f"output {name} retrying: {status.last_error}")
        if self._server is None or not self._server.started or self._server.should_exit:
            problems.append("webhook listener not serving")
        return Health(alive=alive, ready_problems=problems, retrying=retrying)

    def _gauges(self) -> metrics.ServiceGauges:
        buffer = self.buffer
        outputs = []
        if buffer is not None:
            now = time.time()
            for name, (pending, oldest) in buffer.pending_by_output(
                {n: lane.shipper.status.position for n, lane in self.lanes.items()}
            ).items():
                paused = bool(self.lanes[name].shipper.status.paused) if name in self.lanes else False
                outputs.append(metrics.OutputGauge(name, pending, max(0.0, now - oldest) if oldest else 0.0, paused))
        state = buffer.state if buffer is not None else None
        return metrics.ServiceGauges(
            stored_bytes=state.stored_bytes if state else 0,
            max_bytes=buffer.limits.max_bytes if buffer else 0,
            disk_full=bool(state and state.disk_full),
            backpressure=bool(state and state.backpressure),
            outputs=outputs,
            body_bytes_in_memory=self._webhooks.body_bytes_in_memory if self._webhooks else 0,
        )

    # --- reloading -----------------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Apply a new configuration (SIGHUP); False, changing nothing, when it is invalid."""
        if self._reload_config is None or self.buffer is None:
            return False
        async with self._reloading:
            self.notifier.reloading()
            try:
                try:
                    new = await asyncio.to_thread(self._reload_config)
                    changes = reloading.plan(self.config, new)
                    if changes.listen_changed or self._tls is not None:
                        tls = tls_files(new)
                        if self._ssl is not None and tls is not None:
                            load_certificate(self._ssl, tls)
                except (ConfigError, StartupError) as exc:
                    telemetry.reload_failed(str(exc))
                    return False
                await self._apply(new, changes)
                if changes.restart_needed:
                    telemetry.reload_needs_restart(list(changes.restart_needed))
                telemetry.reloaded(changes.summary())
                return True
            finally:
                self.notifier.ready("reloaded" if self.endpoint is None else f"listening on {self.endpoint.url}")

    async def _apply(self, new: Config, changes: reloading.ReloadPlan) -> None:
        assert self.buffer is not None and self._webhooks is not None
        old = self.config
        if changes.secrets_changed:
            self._webhooks.verifier = Verifier([s.reveal() for s in new.webhook.secrets])
        if changes.listen_changed:
            self._webhooks.update_limits(new.listen)
        if changes.log_level_changed:
            logging.getLogger().setLevel(new.service.log_level.upper())
        timeout = old.service.shutdown_timeout
        for name in (*changes.outputs_removed, *changes.outputs_replaced):
            lane = self.lanes.pop(name)
            await lane.stop(timeout)
            await lane.close()
        await self.buffer.set_outputs([o.name for o in new.outputs])
        by_name = {o.name: o for o in new.outputs}
        for name in (*changes.outputs_added, *changes.outputs_replaced):
            self.lanes[name] = await Lane.start(
                by_name[name], self.buffer, summary=new.records.summary, spawn=self._spawn
            )
        for lane in self.lanes.values():
            lane.shipper.wake()  # a paused output probes again at once after a reload
        # Settings that need a restart keep their running values.
        self.config = reloading.keep_running(old, new)

    # --- stopping ------------------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._reload_task(), "reload"))

    async def _reload_task(self) -> None:
        await self.reload()

    def _begin_stop(self, reason: str) -> None:
        telemetry.shutting_down(reason)
        if self._webhooks is not None:
            # Bodies still arriving near the end of the drain period get a clean 503 just before
            # uvicorn would cancel them (500); most uploads finish well within it.
            self._webhooks.shutdown(grace=self.config.listen.drain_timeout * 0.8)
        self.notifier.stopping(f"stopping ({reason})")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1 and (self._server is None or not self._server.should_exit):
            self._begin_stop(signal.Signals(signum).name)
        if self._server is not None:
            self._server.should_exit = True
            if self._signals > 1:
                self._server.force_exit = True
        if self._signals > 1:
            for task in self._tasks:
                task.cancel()

    async def _stop(self) -> None:
        timeout = self.config.service.shutdown_timeout
        lanes = list(self.lanes.values())
        for lane in lanes:
            lane.shipper.stop()
        results = await asyncio.gather(*(lane.stop(timeout) for lane in lanes))
        unfinished = [lane.name for lane, finished in zip(lanes, results, strict=True) if not finished]
        if unfinished:
            telemetry.shippers_unfinished(sorted(unfinished))
        if self._admin is not None:
            self._admin.should_exit = True
        for task in self._tasks:
            if task.get_name() != "admin":
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                async with asyncio.timeout(5):
                    await task
        for lane in lanes:
            await lane.close()
        if self.buffer is not None:
            await self.buffer.close()
        metrics.SERVICE.source = None
        telemetry.stopped()


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        telemetry.service_log.critical(
            "internal task stopped with an error; restart the service and report this bug",
            exc_info=task.exception(),
            extra={"task": task.get_name()},
        )


def run(
    config: Config,
    *,
    reload_config: Callable[[], Config] | None = None,
    on_ready: Callable[[Service], None] | None = None,
) -> int:
    """Run the service to completion on uvloop (when installed); returns the exit code."""
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(Service(config, reload_config=reload_config).run(on_ready=on_ready))
