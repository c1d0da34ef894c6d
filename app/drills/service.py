"""Drills (DESIGN.md section 14): start one; the worker starts the ones that are due.

A drill is an operation of kind `drill` in the pair's side lane: it changes no state, at
most one is unfinished per pair, and it never runs beside a failover or failback. A switch
asked for while a drill runs cancels the drill and starts once the drill's cleanup has
run (app.operations.service.start, app.operations.executor); a drill asked for while a
switch is unfinished is refused, naming the switch.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.actions import registry
from app.clusters import service as cluster_service
from app.clusters.models import Cluster
from app.clusters.transitions import emit_event
from app.columns import new_id
from app.db import after_commit
from app.domain import drills
from app.domain.plans import (
    Lane,
    OperationKind,
    OperationStatus,
    StepPlan,
    cleanup_steps,
    plan_for,
)
from app.domain.states import ClusterState
from app.errors import OperationInProgress
from app.operations import service as operations
from app.operations.models import Operation

STEADY = (ClusterState.PRIMARY_ACTIVE, ClusterState.SECONDARY_ACTIVE)


def rehearsed_kind(state: ClusterState) -> OperationKind:
    """The switch a drill rehearses: the one the pair's state allows next."""
    if state is ClusterState.PRIMARY_ACTIVE:
        return OperationKind.FAILOVER
    return OperationKind.FAILBACK


def plan_of(cluster: Cluster, state: ClusterState) -> list[StepPlan]:
    steps = plan_for(cluster.driver, cluster.plan, rehearsed_kind(state), cluster.deployments)
    return drills.drill_plan(steps, cleanup_steps(cluster.plan), registry.rehearses)


async def _unfinished(session: AsyncSession, cluster_id: str) -> Operation | None:
    """An unfinished operation of the pair, a switch first."""
    return await session.scalar(
        select(Operation)
        .where(col(Operation.cluster_id) == cluster_id, col(Operation.done).is_(False))
        .order_by(col(Operation.lane).desc(), col(Operation.created_at))
        .limit(1)
    )


async def start(
    session: AsyncSession,
    enqueue: operations.Enqueue,
    org_id: str,
    cluster_id: str,
    reason: str | None,
    requested_by: str,
    scheduled: bool = False,
) -> Operation:
    # The pair's row stays locked until commit: a switch asked for meanwhile waits, then
    # finds the drill and cancels it.
    cluster = await cluster_service.locked(session, org_id, cluster_id)
    running = await _unfinished(session, cluster.id)
    if running is not None:
        raise OperationInProgress(
            f"{running.kind} {running.id} is {running.status} on this pair: "
            "a drill starts once it has ended",
            current_state=cluster.state,
            operation_id=running.id,
            operation_kind=running.kind,
            operation_status=running.status,
        )
    state = ClusterState(cluster.state)
    if state not in STEADY:
        raise operations.refused(
            state.value,
            OperationKind.DRILL.value,
            f"cluster is {state.value} (its last operation left it mid-switch): "
            "retry that operation first",
        )
    plan = plan_of(cluster, state)
    operation = await operations.insert(
        session,
        cluster,
        Operation(
            id=new_id("op"),
            cluster_id=cluster.id,
            org_id=cluster.org_id,
            kind=OperationKind.DRILL.value,
            mode=None,
            lane=Lane.SIDE.value,
            status=OperationStatus.QUEUED.value,
            from_state=state.value,
            target_state=state.value,
            reason=reason,
            requested_by=requested_by,
            plan=[step.to_dict() for step in plan],
        ),
        plan,
        None,
    )
    await emit_event(
        session,
        cluster.id,
        "operation.created",
        {"operation_id": operation.id, "kind": operation.kind, "mode": None, "batch_id": None},
    )
    await emit_event(
        session,
        cluster.id,
        "drill.started",
        {
            "operation_id": operation.id,
            "rehearses": rehearsed_kind(state).value,
            "requested_by": requested_by,
            "reason": reason,
            "scheduled": scheduled,
        },
    )
    op_id, epoch = operation.id, operation.lease_epoch
    after_commit(session, lambda: enqueue(op_id, epoch))
    return operation
