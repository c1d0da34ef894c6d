"""Readiness: the database and Redis answer, and the schema is at the latest migration."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import PROBLEM_JSON, TYPE_BASE
from app.migrations import current_revision, head_revision, schema_usable


class Readiness(BaseModel):
    status: str
    database: str
    redis: str
    schema_revision: str | None
    expected_revision: str
    # The worker of this process (a `tandem worker`, or the one `tandem serve` runs on the
    # embedded default): "ok", or what is wrong with it; absent where there is none.
    worker: str | None = None

    @property
    def ready(self) -> bool:
        return (
            self.database == "ok"
            and self.redis == "ok"
            and schema_usable(self.schema_revision, self.expected_revision)
            and self.worker in (None, "ok")
        )


async def readiness(
    engine: AsyncEngine, redis: Redis, worker: Callable[[], str] | None = None
) -> Readiness:
    database = redis_state = "ok"
    revision = None
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        revision = await current_revision(engine)
    except Exception as exc:
        database = f"unreachable: {type(exc).__name__}"
    try:
        await redis.ping()
    except Exception as exc:
        redis_state = f"unreachable: {type(exc).__name__}"
    return Readiness(
        status="ok",
        database=database,
        redis=redis_state,
        schema_revision=revision,
        expected_revision=head_revision(),
        worker=None if worker is None else worker(),
    )


def not_ready(body: Readiness, detail: str) -> JSONResponse:
    """The 503 problem of a /readyz that is not ready, with every check's state."""
    problem = {
        "type": TYPE_BASE + "not-ready",
        "title": "Not ready",
        "status": 503,
        "detail": detail,
        "code": "not_ready",
        **body.model_dump(exclude={"status"}),
    }
    return JSONResponse(problem, status_code=503, media_type=PROBLEM_JSON)
