"""Dependencies shared by the routers: the context, the request's session, paging."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.access import audit
from app.common import NO_NUL
from app.context import Context
from app.db import unit_of_work


def get_context(request: Request) -> Context:
    return request.app.state.context  # type: ignore[no-any-return]


ContextDep = Annotated[Context, Depends(get_context)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    # Function scope: the commit happens before the response is sent, so a client that
    # sees 201/202 can read what it created from any process at once.
    async with unit_of_work(get_context(request).sessions) as session:
        yield session
        # A mutating request's audit row commits with its change (refusals: errors.py).
        route = request.scope.get("route")
        audit.record(session, request, getattr(route, "status_code", None) or 200)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

PageSize = Annotated[int, Query(ge=1, le=100, description="Items per page (1-100).")]
PageToken = Annotated[
    str | None, Query(max_length=500, description="next_page_token of the previous page.")
]
TokenId = Annotated[str, Path(pattern=NO_NUL, description="The token's id.")]
ClusterId = Annotated[str, Path(pattern=NO_NUL, description="The DR pair's id.")]
OperationId = Annotated[str, Path(pattern=NO_NUL, description="The operation's id.")]
WebhookId = Annotated[str, Path(pattern=NO_NUL, description="The webhook's id.")]
DeliveryId = Annotated[str, Path(pattern=NO_NUL, description="The delivery's id.")]
