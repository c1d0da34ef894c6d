"""Tokens, the caller's identity, and the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.access import audit as audit_service
from app.access import tokens as service
from app.access.auth import Admin, Viewer
from app.access.models import AuditOutcome
from app.access.schemas import AuditOut, Me, TokenCreate, TokenCreated, TokenOut
from app.common import NO_NUL, Page
from app.deps import PageSize, PageToken, SessionDep, TokenId
from app.problems import problems

router = APIRouter(tags=["access"])


@router.get("/v1/me", response_model=Me, summary="The calling token and its organization")
async def me(session: SessionDep, principal: Viewer) -> Me:
    return await service.me(session, principal)


@router.post(
    "/v1/tokens",
    status_code=201,
    response_model=TokenCreated,
    summary="Create an API token; the response shows it, this once",
    responses={
        **problems(400, 409, 422),
        201: {
            "links": {
                "RevokeToken": {
                    "operationId": "revokeToken",
                    "parameters": {"token_id": "$response.body#/id"},
                }
            }
        },
    },
)
async def create_token(
    body: TokenCreate, session: SessionDep, principal: Admin, response: Response
) -> TokenCreated:
    created = await service.create(session, principal.org_id, body, principal.token_id)
    response.headers["Location"] = f"/v1/tokens/{created.id}"
    return created


@router.get(
    "/v1/tokens",
    response_model=Page[TokenOut],
    summary="The organization's tokens (never the tokens themselves)",
    responses=problems(400, 422),
)
async def list_tokens(
    session: SessionDep, principal: Admin, page_size: PageSize = 50, page_token: PageToken = None
) -> Page[TokenOut]:
    items, token = await service.list_tokens(session, principal.org_id, page_size, page_token)
    return Page[TokenOut](items=items, next_page_token=token)


@router.delete(
    "/v1/tokens/{token_id}",
    status_code=204,
    summary="Revoke a token: refused at once from then on",
    responses=problems(404, 422),
)
async def revoke_token(token_id: TokenId, session: SessionDep, principal: Admin) -> Response:
    await service.revoke(session, principal.org_id, token_id)
    return Response(status_code=204)


@router.get(
    "/v1/audit",
    response_model=Page[AuditOut],
    summary="Who did what: every mutating request, newest first (read-only)",
    responses=problems(400, 422),
)
async def list_audit(
    session: SessionDep,
    principal: Admin,
    action: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    token_id: Annotated[str | None, Query(max_length=40, pattern=NO_NUL)] = None,
    outcome: AuditOutcome | None = None,
    page_size: PageSize = 50,
    page_token: PageToken = None,
) -> Page[AuditOut]:
    items, token = await audit_service.list_records(
        session,
        principal.org_id,
        action=action,
        token_id=token_id,
        outcome=outcome,
        page_size=page_size,
        page_token=page_token,
    )
    return Page[AuditOut](items=items, next_page_token=token)
