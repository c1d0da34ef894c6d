from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.deps import SessionDep
from app.metrics import service as service

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(session: SessionDep) -> Response:
    return Response(await service.render(session), media_type=CONTENT_TYPE_LATEST)
