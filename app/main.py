"""create_app(): the FastAPI application and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import clusters, events, feed, health, metrics, operations, webhook_docs, webhooks
from app.config import Settings, get_settings
from app.context import build_context
from app.errors import install_handlers
from app.schemas.problems import ProblemDetails

log = logging.getLogger("tandem")

DESCRIPTION = """\
Tandem fails a DR pair (a primary cluster in one region, a secondary in another) over
to its secondary and back. Failover and failback are long-running *operations*: POST
returns 202 and a Location to poll; `GET /v1/operations/{id}?wait=N` holds until done.
Errors are RFC 9457 problem details.
"""


def create_app(settings: Settings | None = None, *, run_worker: bool = False) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.webhook_allow_private:
            log.warning(
                "TANDEM_WEBHOOK_ALLOW_PRIVATE is set: webhooks may target loopback and private "
                "addresses. Do not set it where untrusted users can register webhooks."
            )
        context = await build_context(settings)
        context.notifier.start()
        app.state.context = context
        worker_task = None
        if run_worker:
            from app.worker.main import build_worker

            worker = build_worker(settings, handle_signals=False)
            worker_task = asyncio.create_task(worker.async_run())
        try:
            yield
        finally:
            if worker_task is not None:
                worker_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await worker_task
                await worker.close()
            await context.close()

    app = FastAPI(
        title="Tandem",
        version="1.0.0",
        summary="Disaster-recovery control plane",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_handlers(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(clusters.router)
    app.include_router(operations.router)
    app.include_router(events.router)
    app.include_router(feed.router)
    app.include_router(webhooks.router)
    webhook_docs.document(app)
    _register_problem_schema(app)
    return app


def _register_problem_schema(app: FastAPI) -> None:
    """Put ProblemDetails in components even though no route returns it on success."""
    original = app.openapi

    def openapi():  # type: ignore[no-untyped-def]
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ProblemDetails", ProblemDetails.model_json_schema())
        # Validation errors are problem details here, not FastAPI's default shape.
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        # The webhooks section describes requests Tandem sends: FastAPI's automatic 422 there
        # (a receiver's validation error, in the shape just removed) would be a dangling $ref.
        for item in schema.get("webhooks", {}).values():
            for operation in item.values():
                operation.get("responses", {}).pop("422", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
