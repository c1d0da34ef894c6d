"""A worker's own health port (TANDEM_WORKER_HEALTH_PORT): `/healthz`, `/readyz` and
`/metrics` of that process, so an orchestrator can probe a worker as it probes the API.

`/metrics` holds what this worker counted (app.metrics.process: operation and step
durations, step timeouts, webhook deliveries) and, as on the API, needs a token of any
role and shows that token's organization only; the families read from the database are
the API's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.access.auth import Viewer
from app.errors import install_handlers
from app.health.service import Readiness, not_ready
from app.metrics.process import OrgView

if TYPE_CHECKING:
    from app.context import Context

log = logging.getLogger("tandem.health")


def health_app(
    probe: Callable[[], Awaitable[Readiness]], context: Context | None = None
) -> FastAPI:
    """`context`'s sessions check the tokens of `/metrics`."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.context = context
    install_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=None)
    async def readyz() -> Readiness | JSONResponse:
        body = await probe()
        if body.ready:
            return body
        return not_ready(body, "this worker cannot take work: see the failing checks")

    @app.get("/metrics")
    async def metrics(principal: Viewer) -> Response:
        body = generate_latest(OrgView(principal.org_id))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


class _Server(uvicorn.Server):
    # The worker owns SIGTERM/SIGINT (it gives its leases back); the health port must not.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    host: str, port: int, probe: Callable[[], Awaitable[Readiness]], context: Context | None = None
) -> tuple[_Server, asyncio.Task[None]]:
    """Start the health server in this event loop; port 0 takes a free one (logged)."""
    config = uvicorn.Config(
        health_app(probe, context), host=host, port=port, log_level="warning", lifespan="off"
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():  # noqa: ASYNC110  (uvicorn sets a flag)
        await asyncio.sleep(0.01)
    if task.done():
        task.result()  # the port could not be bound: say why
    bound = server.servers[0].sockets[0].getsockname()[1]
    log.info("worker health on http://%s:%d (/healthz, /readyz, /metrics)", host, bound)
    return server, task
