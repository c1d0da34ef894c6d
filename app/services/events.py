"""Reading the transition log."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Event
from app.schemas.events import EventOut
from app.services.pagination import decode_int_key, encode_token


def render(event: Event) -> EventOut:
    return EventOut.model_validate(event.model_dump())


async def list_for_cluster(
    session: AsyncSession, cluster_id: str, page_size: int, page_token: str | None
) -> tuple[list[EventOut], str | None]:
    after = decode_int_key(page_token)
    query = select(Event).where(Event.cluster_id == cluster_id)  # type: ignore[arg-type]
    if after is not None:
        query = query.where(Event.sequence > after)  # type: ignore[arg-type]
    rows = list(
        await session.scalars(query.order_by(Event.sequence).limit(page_size + 1))  # type: ignore[arg-type]
    )
    more = len(rows) > page_size
    rows = rows[:page_size]
    token = encode_token([rows[-1].sequence]) if more else None
    return [render(e) for e in rows], token
