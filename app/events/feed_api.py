"""The global event feed and its live stream (Server-Sent Events)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from app.access.auth import Viewer
from app.common import NO_NUL, Page
from app.db import finish_even_if_cancelled, unit_of_work
from app.deps import ContextDep, PageSize, PageToken, SessionDep
from app.errors import BadRequest
from app.events import service as service
from app.events.models import Event
from app.events.notify import EVENTS, wait
from app.events.schemas import EventOut
from app.problems import problems

router = APIRouter(prefix="/v1/events", tags=["events"])

KEEPALIVE_S = 15.0
ClusterFilter = Annotated[
    str | None, Query(max_length=40, pattern=NO_NUL, description="Only this pair")
]


@router.get(
    "",
    response_model=Page[EventOut],
    summary="Every event in commit order; next_page_token is always a cursor to poll with",
    responses=problems(400, 422),
)
async def list_events(
    session: SessionDep,
    principal: Viewer,
    cluster_id: ClusterFilter = None,
    page_size: PageSize = 50,
    page_token: PageToken = None,
) -> Page[EventOut]:
    rows, token = await service.list_global(
        session, principal.org_id, cluster_id, page_size, page_token
    )
    return Page[EventOut](items=[event for _, event in rows], next_page_token=token)


def _start_position(last_event_id: str | None, after: int | None) -> int:
    if last_event_id:
        try:
            return max(int(last_event_id), 0)
        except ValueError:
            raise BadRequest("Last-Event-ID must be an id this stream sent") from None
    return after if after is not None else -1


@router.get(
    "/stream",
    summary="Live events (text/event-stream); resumes after Last-Event-ID",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "An endless stream: `id:` (the resume cursor), `event:` (the type), "
            "`data:` (the event, in the shape of the event list)",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problems(400, 422),
    },
)
async def stream_events(
    context: ContextDep,
    principal: Viewer,
    cluster_id: ClusterFilter = None,
    after: Annotated[
        int | None, Query(ge=0, description="Start after this cursor (default: from now on)")
    ] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)] = None,
) -> StreamingResponse:
    position = _start_position(last_event_id, after)
    if position < 0:  # from now on: start at the newest event
        async with unit_of_work(context.sessions) as session:
            position = await service.latest_position(session)

    async def read_batch(cursor: int) -> list[Event]:
        async with unit_of_work(context.sessions) as session:
            return await service.after_position(session, principal.org_id, cursor, 200, cluster_id)

    async def frames() -> AsyncIterator[str]:
        cursor = position
        yield "retry: 1000\n\n"
        with context.notifier.watch(EVENTS) as woken:
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

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
