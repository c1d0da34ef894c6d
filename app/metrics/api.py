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
    description=(
        "Prometheus text. Per pair, read from the database when scraped: `tandem_pair_info`, "
        "`tandem_pair_state`, `tandem_pair_ready`, `tandem_replication_lag_seconds`, "
        "`tandem_pair_rto_target_seconds`, `tandem_pair_rpo_target_seconds`; then "
        "`tandem_operations_in_progress`, `tandem_operations_needing_attention`, "
        "`tandem_operation_oldest_running_seconds`, `tandem_webhook_oldest_pending_seconds`. "
        "Counted by this process, with an `org` label: operation and step durations, step "
        "timeouts, webhook deliveries, HTTP requests (a worker serves its own on its health "
        "port). Any role; a scrape config uses a viewer token as its bearer token."
    ),
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(session: SessionDep, principal: Viewer) -> Response:
    body = await service.render(session, principal.org_id)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
