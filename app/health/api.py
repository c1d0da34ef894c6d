from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.deps import ContextDep
from app.health import service
from app.health.service import Readiness
from app.problems import problems

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health, summary="Liveness (touches nothing)")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Database and Redis reachable, schema at the latest migration",
    responses=problems(503),
)
async def readyz(request: Request, context: ContextDep) -> Readiness | JSONResponse:
    # `tandem serve` on the embedded default runs a worker in this process: it counts too.
    worker_state = getattr(request.app.state, "worker_state", None)
    body = await service.readiness(context.engine, context.redis, worker_state)
    if not body.ready:
        return service.not_ready(
            body,
            "a dependency is unreachable, the schema is not at the latest revision, "
            "or this process's worker is not running",
        )
    return body
