"""The live event stream (Server-Sent Events): where it starts and the frames it sends.

Each batch is read in a short transaction of its own, never one held for the stream's life;
between batches the stream sleeps until new events are committed (or a second passes, in
case a wake-up was lost), and says something every KEEPALIVE_S so proxies keep it open.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import finish_even_if_cancelled, unit_of_work
from app.events import service
from app.events.models import Event
from app.events.notify import EVENTS, Notifier, wait

KEEPALIVE_S = 15.0
BATCH = 200


async def start_position(sessions: async_sessionmaker[AsyncSession], after: int | None) -> int:
    """The cursor a stream starts after: `after`, or the newest event's (from now on)."""
    if after is not None:
        return after
    async with unit_of_work(sessions) as session:
        return await service.latest_position(session)


async def frames(
    sessions: async_sessionmaker[AsyncSession],
    notifier: Notifier,
    org_id: str,
    position: int,
    cluster_id: str | None = None,
) -> AsyncIterator[str]:
    """The organization's events after `position`, as SSE frames, without end."""

    async def read_batch(cursor: int) -> list[Event]:
        async with unit_of_work(sessions) as session:
            return await service.after_position(session, org_id, cursor, BATCH, cluster_id)

    cursor = position
    yield "retry: 1000\n\n"
    with notifier.watch(EVENTS) as woken:
        idle = 0.0
        while True:
            batch = await finish_even_if_cancelled(read_batch(cursor))
            for event in batch:
                cursor = event.position
                body = json.dumps(service.render(event).model_dump(mode="json"))
                yield f"id: {event.position}\nevent: {event.type}\ndata: {body}\n\n"
            if batch:
                idle = 0.0
                continue
            await wait(woken, 1.0)
            idle += 1.0
            if idle >= KEEPALIVE_S:
                idle = 0.0
                yield ": keepalive\n\n"
