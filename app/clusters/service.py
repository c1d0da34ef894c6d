"""DR pair use cases: register, read, list, change settings, delete."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.actions import registry as actions
from app.clusters.models import Cluster
from app.clusters.schemas import (
    ClusterCreate,
    ClusterOut,
    ClusterPatch,
    Plan,
    RunbookSecret,
    SimulatedDriver,
)
from app.columns import new_id, utcnow
from app.domain.actions_allowed import OperationView, pair_actions
from app.domain.plans import UNFINISHED, OperationStatus
from app.domain.states import ClusterState, allowed_actions
from app.errors import Conflict, NotFound, OperationInProgress, PreconditionFailed
from app.operations.models import IdempotencyRecord, Operation, OperationStep
from app.pagination import page_by_creation
from app.secrets.models import PairSecret
from app.webhooks import fanout as webhook_outbox
from app.webhooks import signing


async def get(session: AsyncSession, org_id: str, cluster_id: str) -> Cluster:
    """The pair, if it belongs to `org_id`: another organization's pair is not found."""
    cluster = await session.get(Cluster, cluster_id, populate_existing=True)
    if cluster is None or cluster.org_id != org_id:
        raise NotFound(f"cluster {cluster_id} does not exist")
    return cluster


async def locked(session: AsyncSession, org_id: str, cluster_id: str) -> Cluster:
    """The pair with its row locked until the transaction ends (writers queue behind it);
    a pair deleted meanwhile is not found, never an error."""
    cluster = await session.scalar(
        select(Cluster)
        .where(col(Cluster.id) == cluster_id, col(Cluster.org_id) == org_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if cluster is None:
        raise NotFound(f"cluster {cluster_id} does not exist")
    return cluster


def _driver(driver: SimulatedDriver | None, plan: Plan | None) -> dict[str, Any]:
    """The stored driver: `{}` when the pair has a plan of its own."""
    if plan is not None:
        return {}
    return (driver or SimulatedDriver()).model_dump(mode="json")


async def create(session: AsyncSession, org_id: str, body: ClusterCreate) -> Cluster:
    cluster = Cluster(
        id=new_id("cl"),
        org_id=org_id,
        name=body.name,
        primary=body.primary.model_dump(),
        secondary=body.secondary.model_dump(),
        driver=_driver(body.driver, body.plan),
        plan=body.plan.model_dump(mode="json", exclude_none=True) if body.plan else None,
        rto_target_s=body.rto_target_s,
        rpo_target_s=body.rpo_target_s,
        drill_every_days=body.drill_every_days,
        labels=dict(body.labels),
        deployments=[d.model_dump(exclude_none=True) for d in body.deployments],
        state=ClusterState.PRIMARY_ACTIVE.value,
        active_region=body.primary.region,
        runbook_secret=signing.new_secret(),
    )
    session.add(cluster)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"a cluster named {body.name!r} already exists", name=body.name) from None
    return cluster


async def _last_operations(
    session: AsyncSession, operation_ids: list[str]
) -> dict[str, OperationView]:
    """What the pairs' last operations allow, by operation id."""
    if not operation_ids:
        return {}
    rows = await session.execute(
        select(
            col(Operation.id),
            col(Operation.status),
            col(Operation.past_point_of_no_return),
            col(Operation.needs_attention),
        ).where(col(Operation.id).in_(operation_ids))
    )
    return {
        op_id: OperationView(OperationStatus(status), bool(past), bool(attention))
        for op_id, status, past, attention in rows
    }


def _render(cluster: Cluster, operation: OperationView | None) -> ClusterOut:
    return ClusterOut.model_validate(
        {
            **cluster.model_dump(
                exclude={
                    "event_seq",
                    "org_id",
                    "runbook_secret",
                    "previous_runbook_secret",
                    "previous_runbook_secret_expires_at",
                    "driver",
                    "readiness",
                    "readiness_checked_at",
                }
            ),
            "ready": (cluster.readiness or {}).get("ready"),
            "driver": cluster.driver if cluster.plan is None else None,
            "needs_attention": operation is not None and operation.needs_attention,
            "allowed_actions": pair_actions(cluster.state, operation),
        }
    )


async def render(session: AsyncSession, cluster: Cluster) -> ClusterOut:
    last = cluster.last_operation_id
    operations = await _last_operations(session, [last] if last else [])
    return _render(cluster, operations.get(last or ""))


async def list_clusters(
    session: AsyncSession, org_id: str, page_size: int, page_token: str | None
) -> tuple[list[ClusterOut], str | None]:
    query = select(Cluster).where(col(Cluster.org_id) == org_id)
    rows, token = await page_by_creation(session, query, Cluster, page_size, page_token)
    operations = await _last_operations(
        session, [c.last_operation_id for c in rows if c.last_operation_id]
    )
    return [_render(c, operations.get(c.last_operation_id or "")) for c in rows], token


async def _unfinished_operation(session: AsyncSession, cluster_id: str) -> str | None:
    return await session.scalar(
        select(col(Operation.id)).where(
            Operation.cluster_id == cluster_id,  # type: ignore[arg-type]
            Operation.status.in_([s.value for s in UNFINISHED]),  # type: ignore[attr-defined]
        )
    )


def check_version(cluster: Cluster, if_match: str | None) -> None:
    if if_match is None or if_match.strip() == "*":
        return
    wanted = {tag.strip().removeprefix("W/").strip('"') for tag in if_match.split(",")}
    if str(cluster.version) not in wanted:
        raise PreconditionFailed(
            f"cluster is at version {cluster.version}, not {if_match}",
            current_version=cluster.version,
        )


async def update(
    session: AsyncSession, org_id: str, cluster_id: str, body: ClusterPatch, if_match: str | None
) -> Cluster:
    # Locked, so that a failover cannot start between this check and the write.
    cluster = await locked(session, org_id, cluster_id)
    check_version(cluster, if_match)
    running = await _unfinished_operation(session, cluster.id)
    if running is not None:
        raise OperationInProgress(
            f"operation {running} is unfinished; change settings once it is done",
            operation_id=running,
            current_state=cluster.state,
        )
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    if changes.get("name") is None:
        changes.pop("name", None)
    if body.driver is not None:
        cluster.driver, cluster.plan = _driver(body.driver, None), None
    if body.plan is not None:
        cluster.driver = {}
        cluster.plan = body.plan.model_dump(mode="json", exclude_none=True)
    # Explicit nulls clear an objective.
    if "rto_target_s" in changes:
        cluster.rto_target_s = body.rto_target_s
    if "rpo_target_s" in changes:
        cluster.rpo_target_s = body.rpo_target_s
    # An explicit null ends the schedule.
    if "drill_every_days" in changes:
        cluster.drill_every_days = body.drill_every_days
    if "deployments" in changes and body.deployments is not None:
        cluster.deployments = [d.model_dump(exclude_none=True) for d in body.deployments]
    if "name" in changes:
        cluster.name = changes["name"]
    if body.labels is not None:
        cluster.labels = dict(body.labels)
    cluster.version += 1
    cluster.updated_at = utcnow()
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"a cluster named {changes.get('name')!r} already exists") from None
    return cluster


async def remove(session: AsyncSession, org_id: str, cluster_id: str, if_match: str | None) -> None:
    cluster = await locked(session, org_id, cluster_id)
    check_version(cluster, if_match)
    if cluster.state not in (
        ClusterState.PRIMARY_ACTIVE.value,
        ClusterState.SECONDARY_ACTIVE.value,
    ):
        raise OperationInProgress(
            f"cluster is {cluster.state}; finish, cancel or retry its operation first",
            current_state=cluster.state,
            allowed_actions=allowed_actions(cluster.state),
        )
    running = await _unfinished_operation(session, cluster.id)
    if running is not None:
        raise OperationInProgress(
            f"operation {running} is unfinished; delete the pair once it is done",
            operation_id=running,
            current_state=cluster.state,
        )
    op_ids = select(col(Operation.id)).where(Operation.cluster_id == cluster_id)  # type: ignore[arg-type]
    await session.execute(delete(OperationStep).where(OperationStep.operation_id.in_(op_ids)))  # type: ignore[attr-defined]
    await actions.forget_pair(session, cluster_id)
    await session.execute(delete(PairSecret).where(col(PairSecret.cluster_id) == cluster_id))
    await webhook_outbox.stop_pending(session, cluster_id)
    await session.execute(delete(Operation).where(Operation.cluster_id == cluster_id))  # type: ignore[arg-type]
    await session.execute(
        delete(IdempotencyRecord).where(col(IdempotencyRecord.cluster_id) == cluster_id)
    )
    await session.delete(cluster)
    await session.flush()


async def rotate_runbook_secret(
    session: AsyncSession, org_id: str, cluster_id: str, overlap_s: float
) -> RunbookSecret:
    """A new secret signs runbook calls from now on; the old one too, for `overlap_s`."""
    cluster = await locked(session, org_id, cluster_id)
    now = utcnow()
    cluster.previous_runbook_secret = cluster.runbook_secret
    cluster.previous_runbook_secret_expires_at = now + timedelta(seconds=overlap_s)
    cluster.runbook_secret = signing.new_secret()
    cluster.updated_at = now
    await session.flush()
    return RunbookSecret(
        runbook_secret=cluster.runbook_secret,
        previous_expires_at=cluster.previous_runbook_secret_expires_at,
    )
