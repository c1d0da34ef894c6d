"""The audit log: one row per mutating request by a known caller.

A request that succeeds gets its row in the transaction of its change (`record`, called
by the request's session, app.deps). A refused one has no transaction to join:
RefusalAuditMiddleware writes its row in a new one, committed before the refusal reaches
the caller, from the problem app.errors' handler left in the request's state. No route
changes or deletes audit rows.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.access.auth import MUTATING, Principal
from app.access.models import AuditOutcome, AuditRecord
from app.access.schemas import AuditOut
from app.columns import new_id
from app.db import unit_of_work
from app.errors import problem_of
from app.pagination import page_by_creation

log = logging.getLogger("tandem.audit")


def _principal(request: Request) -> Principal | None:
    return getattr(request.state, "principal", None)


def audited(request: Request) -> bool:
    return request.method in MUTATING and _principal(request) is not None


def _row(
    request: Request, outcome: AuditOutcome, status_code: int, detail: dict[str, Any] | None
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
        outcome=outcome.value,
        status_code=status_code,
        detail=detail,
    )


def record(
    session: AsyncSession,
    request: Request,
    status_code: int,
    *,
    outcome: str = AuditOutcome.SUCCEEDED,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add the row to `session`: it commits with the change it describes.

    `outcome` is an AuditOutcome (its value as a string is accepted too)."""
    if audited(request):
        session.add(_row(request, AuditOutcome(outcome), status_code, detail))


async def record_refusal(
    sessions: async_sessionmaker[AsyncSession], request: Request, status_code: int, code: str
) -> None:
    """The row of a refused request, in a transaction of its own."""
    if not audited(request):
        return
    async with unit_of_work(sessions) as session:
        session.add(_row(request, AuditOutcome.REFUSED, status_code, {"code": code}))


class RefusalAuditMiddleware:
    """Audits a mutating request that a handler answered with a problem (403, 404, 409, 422,
    429, ...), before the response starts: a caller that sees the refusal can read its row.

    A 401 is not audited: there is no known caller to name.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})  # shared with the handlers below, which fill it

        async def send_after_audit(message: Message) -> None:
            if message["type"] == "http.response.start":
                refusal = problem_of(scope)
                if refusal is not None:
                    await _audit_refusal(scope, *refusal)
            await send(message)

        await self.app(scope, receive, send_after_audit)


async def _audit_refusal(scope: Scope, status_code: int, code: str) -> None:
    context = getattr(scope["app"].state, "context", None)
    if context is None:
        return
    try:
        await record_refusal(context.sessions, Request(scope), status_code, code)
    except Exception:  # the refusal itself must still reach the caller
        log.exception("could not audit a refused request")


async def list_records(
    session: AsyncSession,
    org_id: str,
    *,
    action: str | None,
    token_id: str | None,
    outcome: AuditOutcome | None,
    page_size: int,
    page_token: str | None,
) -> tuple[list[AuditOut], str | None]:
    query = select(AuditRecord).where(col(AuditRecord.org_id) == org_id)
    if action is not None:
        query = query.where(col(AuditRecord.action) == action)
    if token_id is not None:
        query = query.where(col(AuditRecord.token_id) == token_id)
    if outcome is not None:
        query = query.where(col(AuditRecord.outcome) == outcome.value)
    rows, token = await page_by_creation(
        session, query, AuditRecord, page_size, page_token, newest_first=True
    )
    items = [AuditOut.model_validate(row.model_dump(exclude={"org_id"})) for row in rows]
    return items, token
