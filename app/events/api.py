"""A pair's transition log, the organization's event feed and its live stream (SSE)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.access.auth import StreamViewer, Viewer
from app.clusters import service as cluster_service
from app.common import NO_NUL, Page
from app.deps import ClusterId, ContextDep, PageSize, PageToken, SessionDep
from app.errors import BadRequest
from app.events import service, stream
from app.events.capacity import Slot
from app.events.schemas import SSE_EVENT, EventOut
from app.pagination import INT64_MAX
from app.problems import problems

router = APIRouter(tags=["events"])

ClusterFilter = Annotated[
    str | None, Query(max_length=40, pattern=NO_NUL, description="Only this pair")
]


@router.get(
    "/v1/clusters/{cluster_id}/events",
    response_model=Page[EventOut],
    summary="The pair's transition log, oldest first",
    responses=problems(400, 404, 422),
)
async def list_cluster_events(
    cluster_id: ClusterId,
    session: SessionDep,
    principal: Viewer,
    page_size: PageSize = 50,
    page_token: PageToken = None,
) -> Page[EventOut]:
    await cluster_service.get(session, principal.org_id, cluster_id)
    items, token = await service.list_for_cluster(session, cluster_id, page_size, page_token)
    return Page[EventOut](items=items, next_page_token=token)


@router.get(
    "/v1/events",
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


def _resume_after(last_event_id: str | None, after: int | None) -> int | None:
    """The cursor the client asks to resume after; None: from now on."""
    if last_event_id:
        try:
            resume = int(last_event_id)
        except ValueError:
            resume = -1
        if not 0 <= resume <= INT64_MAX:  # positions are 64-bit
            raise BadRequest("Last-Event-ID must be an id this stream sent")
        return resume
    return after


class _SlotStreamingResponse(StreamingResponse):
    """Gives the stream's slot back when the response ends, however it ends."""

    def __init__(self, *args: Any, slot: Slot, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


@router.get(
    "/v1/events/stream",
    summary="Live events (text/event-stream); resumes after Last-Event-ID",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "An endless stream of Server-Sent Events, one `Event` a frame: read "
            "it with an SSE client (EventSource, httpx-sse), frame by frame",
            # No `schema`: a generator would read the endless body as one string or object.
            # One frame's shape is in `x-itemSchema` (OpenAPI 3.2's `itemSchema`).
            "content": {"text/event-stream": {"x-itemSchema": SSE_EVENT}},
        },
        **problems(400, 422),
        429: {
            **problems(429)[429],
            "description": "This token or this API process holds its limit of open event "
            "streams and long polls; see Retry-After",
        },
    },
)
async def stream_events(
    context: ContextDep,
    principal: StreamViewer,
    cluster_id: ClusterFilter = None,
    after: Annotated[
        int | None,
        Query(ge=0, le=INT64_MAX, description="Start after this cursor (default: from now on)"),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=40,
            description="An `id:` this stream sent (anything else is a 400); empty: none",
            # Documented, not validated here: _resume_after refuses the rest with a 400.
            json_schema_extra={"pattern": "^[0-9]{0,19}$"},
        ),
    ] = None,
) -> StreamingResponse:
    resume = _resume_after(last_event_id, after)
    slot = context.slots.take(principal.token_id)
    try:
        # Read before the response starts: "from now on" is from this request, not later.
        position = await stream.start_position(context.sessions, principal.org_id, resume)
        return _SlotStreamingResponse(
            stream.frames(context.sessions, context.hub, principal.org_id, position, cluster_id),
            slot=slot,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    except BaseException:
        slot.release()
        raise
