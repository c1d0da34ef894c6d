from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from app.deps import ContextDep
from app.errors import PROBLEM_JSON, TYPE_BASE
from app.migrations import current_revision, head_revision
from app.problems import problems

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    redis: str
    schema_revision: str | None
    expected_revision: str


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
    database = redis = "ok"
    revision = None
    try:
        async with context.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        revision = await current_revision(context.engine)
    except Exception as exc:
        database = f"unreachable: {type(exc).__name__}"
    try:
        await context.redis.ping()
    except Exception as exc:
        redis = f"unreachable: {type(exc).__name__}"
    expected = head_revision()
    body = Readiness(
        status="ok",
        database=database,
        redis=redis,
        schema_revision=revision,
        expected_revision=expected,
    )
    if database != "ok" or redis != "ok" or revision != expected:
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
