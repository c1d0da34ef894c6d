from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.deps import ContextDep
from app.errors import PROBLEM_JSON, TYPE_BASE
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
async def readyz(context: ContextDep) -> Readiness | JSONResponse:
    body = await service.readiness(context.engine, context.redis)
    if not body.ready:
        problem = {
            "type": TYPE_BASE + "not-ready",
            "title": "Not ready",
            "status": 503,
            "detail": "a dependency is unreachable or the schema is not at the latest revision",
            "code": "not_ready",
            **body.model_dump(exclude={"status"}),
        }
        return JSONResponse(problem, status_code=503, media_type=PROBLEM_JSON)
    return body
