"""A pair's secrets: put (admin), list and read their names and times (viewer), delete
(admin). No route returns a value."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse

from app.access import audit
from app.access.auth import Admin, Viewer
from app.common import Page
from app.db import unit_of_work
from app.deps import ClusterId, ContextDep, PageSize, PageToken, SessionDep
from app.problems import problems
from app.secrets import service as service
from app.secrets.schemas import NAME_PATTERN, SecretOut, SecretPut

router = APIRouter(prefix="/v1/clusters/{cluster_id}/secrets", tags=["secrets"])

SecretName = Annotated[
    str,
    Path(
        pattern=NAME_PATTERN,
        description="1-64 characters: letters, digits, `_`, `.`, `-`; a letter or digit first",
    ),
]


@router.put(
    "/{name}",
    status_code=201,
    response_model=SecretOut,
    summary="Set a secret of the pair: 201 when new, 200 when it replaced one; never shown back",
    responses={
        200: {"model": SecretOut, "description": "The secret's value was replaced"},
        **problems(400, 404, 422),
    },
)
async def put_secret(
    cluster_id: ClusterId,
    name: SecretName,
    body: SecretPut,
    request: Request,
    principal: Admin,
    context: ContextDep,
) -> JSONResponse:
    # A session of its own rather than SessionDep: the audit row must carry the status
    # this request ends with, 201 or 200.
    async with unit_of_work(context.sessions) as session:
        out, created = await service.put(
            session, context.secrets.keys, principal.org_id, cluster_id, name, body.value
        )
        status = 201 if created else 200
        audit.record(session, request, status, detail={"created": created})
    location = {"Location": f"/v1/clusters/{cluster_id}/secrets/{name}"} if created else None
    return JSONResponse(out.model_dump(mode="json"), status_code=status, headers=location)


@router.get(
    "",
    response_model=Page[SecretOut],
    summary="The pair's secrets by name, with their times (never their values)",
    responses=problems(400, 404, 422),
)
async def list_secrets(
    cluster_id: ClusterId,
    session: SessionDep,
    principal: Viewer,
    page_size: PageSize = 50,
    page_token: PageToken = None,
) -> Page[SecretOut]:
    items, token = await service.list_secrets(
        session, principal.org_id, cluster_id, page_size, page_token
    )
    return Page[SecretOut](items=items, next_page_token=token)


@router.get(
    "/{name}",
    response_model=SecretOut,
    summary="Whether a secret is set, and when (never its value)",
    responses=problems(404, 422),
)
async def get_secret(
    cluster_id: ClusterId, name: SecretName, session: SessionDep, principal: Viewer
) -> SecretOut:
    return await service.get(session, principal.org_id, cluster_id, name)


@router.delete(
    "/{name}",
    status_code=204,
    summary="Delete a secret of the pair",
    responses=problems(404, 422),
)
async def delete_secret(
    cluster_id: ClusterId, name: SecretName, session: SessionDep, principal: Admin
) -> Response:
    await service.remove(session, principal.org_id, cluster_id, name)
    return Response(status_code=204)
