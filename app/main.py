"""create_app(): the FastAPI application and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import IntegrityError

from app import apidoc as openapi_doc
from app.access import api as access
from app.access import tokens
from app.access.audit import RefusalAuditMiddleware
from app.access.auth import MUTATING
from app.batches import api as batches
from app.clusters import api as clusters
from app.config import Settings, get_settings
from app.context import Context, build_context
from app.db import unit_of_work
from app.deployments import api as deployments
from app.drills import api as drills
from app.errors import install_handlers
from app.events import api as events
from app.health import api as health
from app.metrics import api as metrics
from app.metrics.http import HttpMetricsMiddleware
from app.middleware import BodyLimitMiddleware, RequestIdMiddleware
from app.operations import api as operations
from app.problems import ProblemDetails, problems
from app.readiness import api as readiness
from app.reports import api as reports
from app.secrets import api as secrets
from app.ui import pages as ui
from app.webhooks import api as webhooks
from app.webhooks import docs as webhook_docs

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
        # One reader of new events for all of this process's live streams.
        await context.hub.start()
        app.state.context = context
        await _bootstrap(context)
        worker_task = None
        if run_worker:
            from app.worker import build_worker

            worker = build_worker(settings, handle_signals=False)
            worker_task = asyncio.create_task(worker.async_run())
            app.state.worker_state = worker.state
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
        servers=openapi_doc.SERVERS,
        openapi_tags=openapi_doc.TAGS,
        license_info=openapi_doc.LICENSE,
        generate_unique_id_function=openapi_doc.operation_id,
    )
    install_handlers(app)
    # The last added is outermost: the request id is set first and is on every response,
    # the 413 included. Innermost, a refusal is audited before it is sent.
    app.add_middleware(RefusalAuditMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=1024 * 1024)
    app.add_middleware(RequestIdMiddleware)
    # Outermost: counts and times every answer, the middlewares' own included.
    app.add_middleware(HttpMetricsMiddleware)
    app.include_router(health.router)
    app.include_router(access.router)
    app.include_router(metrics.router)
    app.include_router(clusters.router)
    app.include_router(readiness.router)
    app.include_router(deployments.router)
    app.include_router(secrets.router)
    app.include_router(operations.router)
    app.include_router(drills.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(batches.router)
    app.include_router(reports.router)
    # The web page: templates on the public API, and its scripts (no build step).
    app.include_router(ui.router)
    app.mount("/ui/static", StaticFiles(directory=ui.STATIC), name="ui-static")
    webhook_docs.document(app)
    _register_problem_schema(app)
    return app


def required_role(route: APIRoute) -> str | None:
    """The role a route's dependencies demand (see app.access.auth.require), or None: public."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        role = getattr(dependant.call, "required_role", None)
        if role is not None:
            return str(role.value)
        pending.extend(dependant.dependencies)
    return None


async def _bootstrap(context: Context) -> None:
    """First start on an empty database: an organization and an admin token."""
    settings = context.settings
    try:
        async with unit_of_work(context.sessions) as session:
            created = await tokens.bootstrap(session, settings.bootstrap_token)
    except IntegrityError:  # another API process bootstrapped at the same moment
        return
    if created is None:
        return
    org, secret = created
    if settings.bootstrap_token is not None:
        log.warning("bootstrap: TANDEM_BOOTSTRAP_TOKEN is an admin token of %s", org.name)
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "admin-token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    os.chmod(path, 0o600)
    log.warning(
        "bootstrap: organization %r created; its admin token is in %s (mode 0600)",
        org.name,
        path.resolve(),
    )


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
        _parameters_are_never_null(schema)
        # A body that is not JSON is a 400 (app.errors), whatever the route.
        for item in schema["paths"].values():
            for operation in item.values():
                if "requestBody" in operation:
                    operation["responses"].setdefault("400", problems(400)[400])
        # Each route names the role it needs; public ones say they need no token.
        for context in iter_route_contexts(app.routes):
            route = context.original_route
            path = str(context.path_format)
            if not isinstance(route, APIRoute) or path not in schema["paths"]:
                continue
            role = required_role(route)
            for method in context.methods or ():
                operation = schema["paths"][path].get(method.lower())
                if operation is None:
                    continue
                if role is None:
                    operation["security"] = []
                else:
                    operation["x-required-role"] = role
                    codes = [401] + ([403] if role != "viewer" else [])
                    codes += [413, 429] if method in MUTATING else []
                    responses = operation.setdefault("responses", {})
                    responses.update({str(code): doc for code, doc in problems(*codes).items()})
        openapi_doc.refine(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _parameters_are_never_null(schema: dict[str, Any]) -> None:
    """An optional parameter (`X | None`) is absent or text, never JSON null: drop the null
    branch FastAPI documents for it (a client following it sends the text "null")."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                described = parameter.get("schema", {})
                branches = described.get("anyOf", [])
                kept = [branch for branch in branches if branch != {"type": "null"}]
                if len(kept) == len(branches):
                    continue
                del described["anyOf"]
                if len(kept) == 1:
                    # The branch's constraints, and the outer keywords (description, title) kept.
                    parameter["schema"] = {**kept[0], **described}
                else:
                    described["anyOf"] = kept
