"""Drills (DESIGN.md section 14): start one; the worker starts the ones that are due.

A drill is an operation of kind `drill` in the pair's side lane: it changes no state, at
most one is unfinished per pair, and it never runs beside a failover or failback. A switch
asked for while a drill runs cancels the drill and starts once the drill's cleanup has
run (app.operations.service.start, app.operations.executor); a drill asked for while a
switch is unfinished is refused, naming the switch.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.actions import registry
from app.clusters import service as cluster_service
from app.clusters.models import Cluster
from app.clusters.transitions import emit_event
from app.columns import utcnow
from app.db import unit_of_work
from app.domain import drills
from app.domain.plans import (
    OperationKind,
    StepPlan,
    cleanup_steps,
    plan_for,
)
from app.domain.states import ClusterState
from app.errors import InvalidTransition, NotFound, OperationInProgress
from app.operations import service as operations
from app.operations.models import Operation

log = logging.getLogger("tandem.drills")

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
    operation = await operations.start_side(
        session,
        enqueue,
        cluster,
        OperationKind.DRILL,
        plan_of(cluster, state),
        requested_by=requested_by,
        reason=reason,
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
    return operation


# -- the schedule ------------------------------------------------------------------

SCHEDULER = "scheduler"


def is_due(every_days: int | None, last_started: datetime | None, now: datetime) -> bool:
    """A pair with a schedule is due when its last drill (whatever its outcome) started
    `every_days` ago or more, or when it never had one."""
    if every_days is None:
        return False
    return last_started is None or last_started <= now - timedelta(days=every_days)


def _last_drill() -> Any:
    return (
        select(func.max(col(Operation.created_at)))
        .where(
            col(Operation.cluster_id) == col(Cluster.id),
            col(Operation.kind) == OperationKind.DRILL.value,
        )
        .correlate(Cluster)
        .scalar_subquery()
    )


async def start_if_due(
    sessions: async_sessionmaker[AsyncSession], enqueue: operations.Enqueue, cluster_id: str
) -> Operation | None:
    """Start the pair's scheduled drill if it is still due, under the pair's row lock: of
    any number of workers deciding at once, the first starts it and the others, once the
    lock is theirs, find it started. None when not due, or when an operation of the pair is
    unfinished (it is due again at the next round)."""
    try:
        async with unit_of_work(sessions) as session:
            cluster = await session.scalar(
                select(Cluster)
                .where(col(Cluster.id) == cluster_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            if cluster is None or cluster.drill_every_days is None:
                return None
            last = await session.scalar(
                select(func.max(col(Operation.created_at))).where(
                    col(Operation.cluster_id) == cluster_id,
                    col(Operation.kind) == OperationKind.DRILL.value,
                )
            )
            if not is_due(cluster.drill_every_days, last, utcnow()):
                return None
            every = cluster.drill_every_days
            return await start(
                session,
                enqueue,
                cluster.org_id,
                cluster.id,
                f"scheduled: every {every} day{'s' if every != 1 else ''}",
                SCHEDULER,
                scheduled=True,
            )
    except (OperationInProgress, InvalidTransition, NotFound):
        return None


async def start_due(
    sessions: async_sessionmaker[AsyncSession], enqueue: operations.Enqueue, batch: int = 500
) -> list[str]:
    """The worker's round: a drill for each pair that is due and has nothing unfinished;
    the ids of the drills started."""
    now = utcnow()
    busy = (
        select(col(Operation.id))
        .where(col(Operation.cluster_id) == col(Cluster.id), col(Operation.done).is_(False))
        .correlate(Cluster)
        .exists()
    )
    async with unit_of_work(sessions) as session:
        rows = (
            await session.execute(
                select(col(Cluster.id), col(Cluster.drill_every_days), _last_drill())
                .where(
                    col(Cluster.drill_every_days).is_not(None),
                    col(Cluster.state).in_([s.value for s in STEADY]),
                    ~busy,
                )
                .limit(batch)
            )
        ).all()
    started = []
    for cluster_id, every_days, last in rows:
        if is_due(every_days, last, now):
            drill = await start_if_due(sessions, enqueue, str(cluster_id))
            if drill is not None:
                log.info("started scheduled drill %s of pair %s", drill.id, cluster_id)
                started.append(drill.id)
    return started
