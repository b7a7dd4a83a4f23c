"""The admin listener: /healthz, /readyz and /metrics on their own (loopback) port.

- ``/healthz``: the event loop answers, and the buffer's writer thread is alive — restart me if not.
- ``/readyz``: 200 only when deliveries are accepted (buffer writable, below its high-water mark)
  and no output is paused on a configuration error; otherwise 503 with the reasons, for load
  balancers and for operators. Outputs that are retrying are listed but do not make it unready.
- ``/metrics``: Prometheus text format (prometheus-client), counters and scrape-time gauges.

It runs as a second uvicorn server in the same loop, without signal handling of its own: the
webhook server owns the signals and the service stops this one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from forwarder.metrics import REGISTRY


@dataclass(frozen=True, slots=True)
class Health:
    alive: bool
    ready_problems: list[str]
    # Outputs whose latest attempt failed: worth seeing, but deliveries are still accepted and
    # buffered, so they do not make the instance unready (a load balancer must keep sending).
    retrying: list[str] = field(default_factory=list)


def build_admin_app(health: Callable[[], Health]) -> Starlette:
    async def healthz(request: Request) -> Response:
        state = health()
        return JSONResponse({"alive": state.alive}, status_code=200 if state.alive else 503)

    async def readyz(request: Request) -> Response:
        state = health()
        problems = state.ready_problems
        return JSONResponse(
            {"ready": not problems, "problems": problems, "retrying": state.retrying},
            status_code=503 if problems else 200,
        )

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)])


class AdminServer(uvicorn.Server):
    """uvicorn without its own signal capture (the webhook server has it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def admin_server(app: Starlette) -> AdminServer:
    config = uvicorn.Config(app, http="h11", lifespan="off", log_config=None, access_log=False, server_header=False)
    return AdminServer(config)
