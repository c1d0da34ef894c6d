from __future__ import annotations

from fastapi import APIRouter

from app.access.auth import Viewer
from app.clusters import service as cluster_service
from app.common import Page
from app.deps import ClusterId, PageSize, PageToken, SessionDep
from app.events import service as service
from app.events.schemas import EventOut
from app.problems import problems

router = APIRouter(tags=["events"])


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
