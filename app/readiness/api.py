from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.access.auth import Viewer
from app.actions.base import ActionDeps
from app.clusters import service as clusters
from app.context import Context
from app.db import unit_of_work
from app.deps import ClusterId, ContextDep
from app.problems import problems
from app.readiness import service
from app.readiness.schemas import ReadinessOut

router = APIRouter(prefix="/v1/clusters", tags=["clusters"])


def action_deps(context: Context) -> ActionDeps:
    """What actions use when the API process probes them (readiness, dry runs)."""
    return ActionDeps(
        sessions=context.sessions,
        http=context.http,
        secrets=context.secrets,
        networks=context.settings.action_networks,
    )


@router.get(
    "/{cluster_id}/readiness",
    response_model=ReadinessOut,
    summary="Could the operation this pair allows next run now? (the last evaluation)",
    responses=problems(404, 422),
)
async def get_readiness(
    cluster_id: ClusterId,
    context: ContextDep,
    principal: Viewer,
    fresh: Annotated[bool, Query(description="Evaluate now instead")] = False,
) -> ReadinessOut:
    # No request session: probes take seconds and must not hold a transaction open.
    async with unit_of_work(context.sessions) as session:
        cluster = await clusters.get(session, principal.org_id, cluster_id)
    deps = action_deps(context)
    readiness = await (service.refresh(deps, cluster) if fresh else service.current(deps, cluster))
    return ReadinessOut.model_validate(readiness)
