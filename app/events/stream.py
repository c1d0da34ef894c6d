"""The live event stream (Server-Sent Events): where it starts and the frames it sends.

New events come from the process's one reader (app.events.hub), not from a database
read of the stream's own. A stream that resumes from behind the reader first catches up
from the database, batch by batch, each in a short transaction of its own. It says
something every KEEPALIVE_S so proxies keep it open, and ends when it falls too far
behind (its client resumes with Last-Event-ID, as after any dropped connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import finish_even_if_cancelled, unit_of_work
from app.events import service
from app.events.hub import EventHub, sse_frame
from app.events.models import Event

KEEPALIVE_S = 15.0
BATCH = 200


async def start_position(
    sessions: async_sessionmaker[AsyncSession], org_id: str, after: int | None
) -> int:
    """The cursor a stream starts after: `after`, or the newest event's (from now on)."""
    if after is not None:
        return after
    async with unit_of_work(sessions) as session:
        return await service.latest_org_position(session, org_id)


async def frames(
    sessions: async_sessionmaker[AsyncSession],
    hub: EventHub,
    org_id: str,
    position: int,
    cluster_id: str | None = None,
) -> AsyncIterator[str]:
    """The organization's events after its `position`, as SSE frames, until it falls behind.

    Cursors are the organization's positions; the hub counts in global ones. Within one
    organization both orders agree, so the catch-up ends once it reaches the hub's.
    """

    async def read_batch(cursor: int) -> list[Event]:
        async with unit_of_work(sessions) as session:
            return await service.after_position(session, org_id, cursor, BATCH, cluster_id)

    cursor = position
    yield "retry: 1000\n\n"
    # Subscribe first: the hub queues everything after `live`, the database has the rest.
    with hub.subscribe(org_id, cluster_id) as (subscription, live):
        while True:
            batch = await finish_even_if_cancelled(read_batch(cursor))
            for event in batch:
                cursor = event.org_position
                yield sse_frame(event).text
            if len(batch) < BATCH or batch[-1].position >= live:
                break
        queue = subscription.queue
        while True:
            if subscription.closed and queue.empty():
                return
            if queue.empty():
                # A timer per wait is costly with thousands of streams: only when idle.
                try:
                    frame = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
            else:
                frame = queue.get_nowait()
            # Whatever is queued already goes out in one write.
            chunk: list[str] = []
            while frame is not None:
                if frame.cursor > cursor:
                    cursor = frame.cursor
                    chunk.append(frame.text)
                if queue.empty():
                    break
                frame = queue.get_nowait()
            if chunk:
                yield "".join(chunk)
            if frame is None:
                return
