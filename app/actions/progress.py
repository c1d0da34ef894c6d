"""What an action remembers between calls of one step (a 202's `Location` being polled):
kept in the database under the call's idempotency key, so a worker that takes over after
a crash continues where the last one was instead of starting the runbook again."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import Field, SQLModel, col

from app.actions.base import Output, StepCall
from app.columns import JSONType, UTCDateTime, utcnow
from app.db import unit_of_work


class ActionProgress(SQLModel, table=True):
    __tablename__ = "action_progress"

    idempotency_key: str = Field(primary_key=True, max_length=160)
    cluster_id: str = Field(max_length=40, index=True)
    data: dict[str, Any] = Field(sa_type=JSONType)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


async def recall(sessions: async_sessionmaker[AsyncSession], key: str) -> dict[str, Any] | None:
    async with unit_of_work(sessions) as session:
        row = await session.get(ActionProgress, key, populate_existing=True)
        return dict(row.data) if row is not None else None


async def remember(
    sessions: async_sessionmaker[AsyncSession], key: str, cluster_id: str, data: dict[str, Any]
) -> None:
    """Committed before the caller goes on: what it remembers survives a crash."""
    async with unit_of_work(sessions) as session:
        row = await session.get(ActionProgress, key, populate_existing=True)
        if row is None:
            session.add(ActionProgress(idempotency_key=key, cluster_id=cluster_id, data=data))
        else:
            row.data, row.updated_at = data, utcnow()


async def done_item(sessions: async_sessionmaker[AsyncSession], call: StepCall) -> Output | None:
    """The output of a parallel item that is already done (None: not done, or not an item)."""
    if call.item is None:
        return None
    remembered = await recall(sessions, call.idempotency_key)
    done = (remembered or {}).get("done")
    return dict(done) if isinstance(done, dict) else None


async def finish_item(
    sessions: async_sessionmaker[AsyncSession], call: StepCall, output: Output
) -> Output:
    """Remember a parallel item's output, so the step's next round does not call it again."""
    if call.item is not None:
        await remember(sessions, call.idempotency_key, call.cluster_id, {"done": output})
    return output


async def forget_pair(session: AsyncSession, cluster_id: str) -> None:
    await session.execute(
        delete(ActionProgress).where(col(ActionProgress.cluster_id) == cluster_id)
    )
