from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from app.access.auth import Admin, Viewer
from app.clusters import service as service
from app.clusters.schemas import (
    ClusterCreate,
    ClusterCreated,
    ClusterOut,
    ClusterPatch,
    RunbookSecret,
)
from app.common import Page
from app.deps import ClusterId, ContextDep, PageSize, PageToken, SessionDep
from app.problems import problems

router = APIRouter(prefix="/v1/clusters", tags=["clusters"])

IfMatch = Annotated[str | None, Header(max_length=200, description="ETag of the version you read")]


def _etag(response: Response, cluster: ClusterOut) -> ClusterOut:
    response.headers["ETag"] = f'"{cluster.version}"'
    return cluster


@router.post(
    "",
    status_code=201,
    response_model=ClusterCreated,
    summary="Register a DR pair (the body shows its runbook secret this once)",
    responses=problems(400, 409, 422),
)
async def create_cluster(
    body: ClusterCreate, session: SessionDep, response: Response, principal: Admin
) -> ClusterCreated:
    cluster = await service.create(session, principal.org_id, body)
    response.headers["Location"] = f"/v1/clusters/{cluster.id}"
    out = _etag(response, await service.render(session, cluster))
    return ClusterCreated(**out.model_dump(), runbook_secret=cluster.runbook_secret)


@router.get(
    "", response_model=Page[ClusterOut], summary="List DR pairs", responses=problems(400, 422)
)
async def list_clusters(
    session: SessionDep, principal: Viewer, page_size: PageSize = 50, page_token: PageToken = None
) -> Page[ClusterOut]:
    items, token = await service.list_clusters(session, principal.org_id, page_size, page_token)
    return Page[ClusterOut](items=items, next_page_token=token)


@router.get(
    "/{cluster_id}",
    response_model=ClusterOut,
    summary="Get a DR pair",
    responses=problems(404, 422),
)
async def get_cluster(
    cluster_id: ClusterId, session: SessionDep, response: Response, principal: Viewer
) -> ClusterOut:
    cluster = await service.get(session, principal.org_id, cluster_id)
    return _etag(response, await service.render(session, cluster))


@router.patch(
    "/{cluster_id}",
    response_model=ClusterOut,
    summary="Change a DR pair's settings",
    responses=problems(400, 404, 409, 412, 422),
)
async def patch_cluster(
    cluster_id: ClusterId,
    body: ClusterPatch,
    session: SessionDep,
    principal: Admin,
    response: Response,
    if_match: IfMatch = None,
) -> ClusterOut:
    cluster = await service.update(session, principal.org_id, cluster_id, body, if_match)
    return _etag(response, await service.render(session, cluster))


@router.delete(
    "/{cluster_id}",
    status_code=204,
    summary="Delete a DR pair (refused mid-switch)",
    responses=problems(404, 409, 412, 422),
)
async def delete_cluster(
    cluster_id: ClusterId, session: SessionDep, principal: Admin, if_match: IfMatch = None
) -> Response:
    await service.remove(session, principal.org_id, cluster_id, if_match)
    return Response(status_code=204)


@router.post(
    "/{cluster_id}/rotate-runbook-secret",
    response_model=RunbookSecret,
    summary="New runbook secret (shown this once); the old one keeps signing for 24 h",
    responses=problems(404, 422),
)
async def rotate_runbook_secret(
    cluster_id: ClusterId, session: SessionDep, principal: Admin, context: ContextDep
) -> RunbookSecret:
    return await service.rotate_runbook_secret(
        session, principal.org_id, cluster_id, context.settings.webhook_secret_overlap_s
    )
