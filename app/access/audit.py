"""The audit log: one row per mutating request, in the transaction of its change.

A refused request has no transaction of its own to join; its row is written in a new
one. No route changes or deletes audit rows.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.access.auth import MUTATING, Principal
from app.access.models import AuditRecord
from app.access.schemas import AuditOut
from app.columns import new_id
from app.db import unit_of_work
from app.pagination import page_by_creation


def _principal(request: Request) -> Principal | None:
    return getattr(request.state, "principal", None)


def audited(request: Request) -> bool:
    return request.method in MUTATING and _principal(request) is not None


def _row(
    request: Request, outcome: str, status_code: int, detail: dict[str, Any] | None
) -> AuditRecord:
    principal = _principal(request)
    assert principal is not None
    route = request.scope.get("route")
    params = request.scope.get("path_params") or {}
    return AuditRecord(
        id=new_id("aud"),
        org_id=principal.org_id,
        token_id=principal.token_id,
        token_name=principal.token_name,
        action=getattr(route, "name", None) or request.method.lower(),
        method=request.method,
        path=request.url.path[:500],
        target=(",".join(str(v) for v in params.values()) or None) if params else None,
        request_id=getattr(request.state, "request_id", None)
        or request.headers.get("x-request-id"),
        outcome=outcome,
        status_code=status_code,
        detail=detail,
    )


def record(
    session: AsyncSession,
    request: Request,
    status_code: int,
    *,
    outcome: str = "succeeded",
    detail: dict[str, Any] | None = None,
) -> None:
    """Add the row to `session`: it commits with the change it describes."""
    if audited(request):
        session.add(_row(request, outcome, status_code, detail))


async def record_refusal(
    sessions: async_sessionmaker[AsyncSession], request: Request, status_code: int, code: str
) -> None:
    if not audited(request):
        return
    async with unit_of_work(sessions) as session:
        session.add(_row(request, "refused", status_code, {"code": code}))


async def list_records(
    session: AsyncSession,
    org_id: str,
    *,
    action: str | None,
    token_id: str | None,
    outcome: str | None,
    page_size: int,
    page_token: str | None,
) -> tuple[list[AuditOut], str | None]:
    query = select(AuditRecord).where(col(AuditRecord.org_id) == org_id)
    if action is not None:
        query = query.where(col(AuditRecord.action) == action)
    if token_id is not None:
        query = query.where(col(AuditRecord.token_id) == token_id)
    if outcome is not None:
        query = query.where(col(AuditRecord.outcome) == outcome)
    rows, token = await page_by_creation(
        session, query, AuditRecord, page_size, page_token, newest_first=True
    )
    items = [AuditOut.model_validate(row.model_dump(exclude={"org_id"})) for row in rows]
    return items, token
