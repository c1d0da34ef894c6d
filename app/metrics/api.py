from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.access.auth import Viewer
from app.deps import SessionDep
from app.metrics import service as service

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics of the token's organization",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(session: SessionDep, principal: Viewer) -> Response:
    body = await service.render(session, principal.org_id)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
