from __future__ import annotations

from fastapi import APIRouter

from app.access.auth import Viewer
from app.clusters import service as clusters
from app.deployments import service
from app.deployments.schemas import DeploymentOut, DeploymentResultOut, DeploymentsOut
from app.deps import ClusterId, SessionDep
from app.problems import problems

router = APIRouter(prefix="/v1/clusters", tags=["deployments"])


@router.get(
    "/{cluster_id}/deployments",
    response_model=DeploymentsOut,
    summary="The pair's deployments, each with its last validation",
    responses=problems(404, 422),
)
async def list_deployments(
    cluster_id: ClusterId, session: SessionDep, principal: Viewer
) -> DeploymentsOut:
    cluster = await clusters.get(session, principal.org_id, cluster_id)
    results = await service.results_of(session, cluster.id)
    items = []
    for deployment in cluster.deployments:
        row = results.get(str(deployment["name"]))
        items.append(
            DeploymentOut(
                name=deployment["name"],
                critical=bool(deployment.get("critical")),
                kind=deployment.get("kind"),
                has_health_check=bool(service.checked([deployment])),
                last_result=None
                if row is None
                else DeploymentResultOut(
                    region=row.region,
                    healthy=row.healthy,
                    detail=row.detail,
                    operation_id=row.operation_id,
                    failed_tasks=row.failed_tasks,
                    needs_retry=row.needs_retry,
                    checked_at=row.checked_at,
                ),
            )
        )
    return DeploymentsOut(items=items)
