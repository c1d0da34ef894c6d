"""Operation use cases: start a failover or failback, cancel, retry, read, list."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.access.auth import Principal
from app.actions.approval import Decision
from app.actions.base import call_key
from app.clusters import service as cluster_service
from app.clusters.models import Cluster
from app.clusters.transitions import apply_transition, emit_event
from app.columns import new_id, utcnow
from app.db import after_commit
from app.deployments import service as deployment_service
from app.domain import drills
from app.domain.plans import (
    RULES,
    UNFINISHED,
    Lane,
    Mode,
    OperationKind,
    OperationStatus,
    StepPlan,
    StepStatus,
    initial_status,
    plan_for,
    retry_plan,
    reversible,
)
from app.domain.states import ClusterState, TransitionRefused, allowed_actions, next_state
from app.errors import (
    Conflict,
    DataLossExceeds,
    DataLossUnknown,
    InvalidTransition,
    NotFound,
    OperationInProgress,
    PointOfNoReturn,
    SecondPersonRequired,
)
from app.events.service import emit_events
from app.operations.models import Operation, OperationStep
from app.operations.schemas import (
    AwaitingApproval,
    DrillReport,
    OperationOut,
    OperationRequest,
    Progress,
    StepOut,
)
from app.pagination import page_by_creation

Enqueue = Callable[[str, int], Awaitable[None]]


def refused(state: str, action: str, detail: str | None = None) -> InvalidTransition:
    return InvalidTransition(
        detail or f"cannot {action} a cluster in state {state}",
        current_state=state,
        allowed_actions=allowed_actions(state),
    )


async def start(
    session: AsyncSession,
    enqueue: Enqueue,
    org_id: str,
    cluster_id: str,
    kind: OperationKind,
    request: OperationRequest,
    requested_by: str | None,
    batch_id: str | None = None,
) -> Operation:
    rules = RULES[kind]
    # The pair's row stays locked until commit: a DELETE or PATCH racing this waits.
    cluster = await cluster_service.locked(session, org_id, cluster_id)
    state = ClusterState(cluster.state)
    try:
        next_state(state, rules.accepted)
    except TransitionRefused:
        raise refused(state.value, kind.value) from None
    if request.max_data_loss_s is not None:
        consent_to_loss(cluster.readiness, kind, request.max_data_loss_s)

    plan = plan_for(cluster.driver, cluster.plan, kind, cluster.deployments)
    operation = await insert(
        session,
        cluster,
        Operation(
            id=new_id("op"),
            cluster_id=cluster.id,
            org_id=cluster.org_id,
            kind=kind.value,
            mode=request.mode.value,
            lane=Lane.SWITCH.value,
            status=OperationStatus.QUEUED.value,
            from_state=rules.origin.value,
            target_state=rules.target.value,
            reason=request.reason,
            requested_by=requested_by,
            batch_id=batch_id,
            accept_data_loss=request.accept_data_loss,
            plan=[step.to_dict() for step in plan],
        ),
        plan,
        Mode(request.mode),
    )
    # A drill or deployment retry under way gives way: cancelled now, the switch starts
    # once it has ended (the executor waits for it).
    await _cancel_side(session, enqueue, cluster.id)
    created = {
        "operation_id": operation.id,
        "kind": kind.value,
        "mode": request.mode.value,
        # DESIGN section 5: always there, null when no batch started it.
        "batch_id": batch_id,
    }
    events: list[tuple[str, dict[str, Any]]] = [("operation.created", created)]
    await apply_transition(
        session,
        cluster.id,
        rules.accepted,
        operation.id,
        events,
        locked=cluster,
        last_operation=True,
    )
    await emit_events(session, cluster.id, events)
    op_id, epoch = operation.id, operation.lease_epoch
    after_commit(session, lambda: enqueue(op_id, epoch))
    return operation


def consent_to_loss(readiness: dict[str, Any] | None, kind: OperationKind, most_s: float) -> None:
    """A forced operation with max_data_loss_s: the caller consented to at most that many
    seconds, so the pair's last measured lag must be known and no larger."""
    last = (readiness or {}).get("replication_lag")
    if not isinstance(last, dict) or last.get("operation") != kind.value:
        last = None
    seconds = None if last is None else last.get("seconds")
    if seconds is None:
        raise DataLossUnknown(
            f"no replication lag was ever measured for a {kind.value} of this pair: "
            "max_data_loss_s cannot be checked (send it without, to accept any loss)",
            max_data_loss_s=most_s,
        )
    if seconds > most_s:
        assert last is not None
        raise DataLossExceeds(
            f"the last measured replication lag, {seconds:g} s at {last['measured_at']}, "
            f"is over max_data_loss_s ({most_s:g} s)",
            max_data_loss_s=most_s,
            replication_lag={k: last.get(k) for k in ("bytes", "seconds", "measured_at")},
        )


async def insert(
    session: AsyncSession,
    cluster: Cluster,
    operation: Operation,
    plan: list[StepPlan],
    mode: Mode | None,
) -> Operation:
    """The operation and its steps; 409 when its lane of the pair is taken. A drill's steps
    are all reversible (it passes no point of no return) and those it skips start skipped."""
    session.add(operation)
    drill = operation.kind == OperationKind.DRILL.value
    flags = [True] * len(plan) if drill else reversible(plan)
    for position, (step, can_undo) in enumerate(zip(plan, flags, strict=True)):
        status = initial_status(step, mode) if mode else StepStatus.PENDING
        if step.rehearsal == drills.SKIPPED:
            status = StepStatus.SKIPPED
        session.add(
            OperationStep(
                operation_id=operation.id,
                position=position,
                name=step.name,
                status=status.value,
                reversible=can_undo,
            )
        )
    try:
        await session.flush()
    except IntegrityError:
        # The unique partial index: another unfinished operation owns this pair's lane.
        raise OperationInProgress(
            "another operation is unfinished on this cluster", current_state=cluster.state
        ) from None
    return operation


async def _cancel_side(session: AsyncSession, enqueue: Enqueue, cluster_id: str) -> None:
    side = (
        await session.execute(
            update(Operation)
            .where(
                col(Operation.cluster_id) == cluster_id,
                col(Operation.lane) == Lane.SIDE.value,
                col(Operation.status).in_(
                    [OperationStatus.QUEUED.value, OperationStatus.RUNNING.value]
                ),
            )
            .values(status=OperationStatus.CANCELLING.value, wake_at=None, updated_at=utcnow())
            .returning(col(Operation.id), col(Operation.lease_epoch))
            .execution_options(synchronize_session=False)
        )
    ).first()
    if side is None:
        return
    side_id, epoch = str(side[0]), int(side[1])
    await emit_event(session, cluster_id, "operation.cancelling", {"operation_id": side_id})
    after_commit(session, lambda: enqueue(side_id, epoch))


async def start_retry(
    session: AsyncSession, enqueue: Enqueue, org_id: str, cluster_id: str, requested_by: str
) -> Operation:
    """retry_deployments: in a steady state only, for the deployments whose last result
    failed (unhealthy, or Airflow task instances that failed in the operation's window)."""
    cluster = await cluster_service.locked(session, org_id, cluster_id)
    state = ClusterState(cluster.state)
    if state not in (ClusterState.PRIMARY_ACTIVE, ClusterState.SECONDARY_ACTIVE):
        raise refused(
            state.value,
            OperationKind.RETRY_DEPLOYMENTS.value,
            f"cluster is {state.value}: retry its failover or failback instead",
        )
    results = await deployment_service.results_of(session, cluster.id)
    names = [
        str(d["name"])
        for d in cluster.deployments
        if (row := results.get(str(d["name"]))) is not None and row.needs_retry
    ]
    if not names:
        raise InvalidTransition(
            "no deployment's last validation failed: nothing to retry",
            operation_status=None,
        )
    return await start_side(
        session,
        enqueue,
        cluster,
        OperationKind.RETRY_DEPLOYMENTS,
        retry_plan(names),
        requested_by=requested_by,
        created={"deployments": names},
    )


async def start_side(
    session: AsyncSession,
    enqueue: Enqueue,
    cluster: Cluster,
    kind: OperationKind,
    plan: list[StepPlan],
    *,
    requested_by: str | None,
    reason: str | None = None,
    created: dict[str, Any] | None = None,
) -> Operation:
    """An operation of the side lane (a drill, a deployment retry) on a locked pair in a
    steady state: it keeps the pair's state, so from and target are that state and it has
    no mode. Written with its `operation.created` (plus `created`), queued after commit."""
    state = cluster.state
    operation = await insert(
        session,
        cluster,
        Operation(
            id=new_id("op"),
            cluster_id=cluster.id,
            org_id=cluster.org_id,
            kind=kind.value,
            mode=None,
            lane=Lane.SIDE.value,
            status=OperationStatus.QUEUED.value,
            from_state=state,
            target_state=state,
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
        {
            "operation_id": operation.id,
            "kind": operation.kind,
            "mode": None,
            "batch_id": None,
            **(created or {}),
        },
    )
    op_id, epoch = operation.id, operation.lease_epoch
    after_commit(session, lambda: enqueue(op_id, epoch))
    return operation


async def get(session: AsyncSession, org_id: str, operation_id: str) -> Operation:
    operation = await session.get(Operation, operation_id, populate_existing=True)
    if operation is None or operation.org_id != org_id:
        raise NotFound(f"operation {operation_id} does not exist")
    return operation


async def cancel(
    session: AsyncSession, enqueue: Enqueue, org_id: str, operation_id: str
) -> Operation:
    operation = await get(session, org_id, operation_id)
    if operation.status == OperationStatus.CANCELLING.value:
        return operation
    # The same row the worker locks before it starts the first irreversible step:
    # whichever commits first decides, and the other sees the outcome.
    result = await session.execute(
        update(Operation)
        .where(
            Operation.id == operation_id,  # type: ignore[arg-type]
            Operation.status.in_([OperationStatus.QUEUED.value, OperationStatus.RUNNING.value]),  # type: ignore[attr-defined]
            Operation.past_point_of_no_return == False,  # type: ignore[arg-type]  # noqa: E712
        )
        .values(status=OperationStatus.CANCELLING.value, wake_at=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    operation = await get(session, org_id, operation_id)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        if operation.past_point_of_no_return:
            raise PointOfNoReturn(
                "the operation has started promote_target and can no longer be rolled back; "
                "retry it if it failed",
                operation_status=operation.status,
            )
        raise InvalidTransition(
            f"operation is {operation.status}; only queued or running operations can be cancelled",
            operation_status=operation.status,
            allowed_actions=[],
        )
    await emit_event(
        session,
        operation.cluster_id,
        "operation.cancelling",
        {"operation_id": operation.id},
    )
    op_id, epoch = operation.id, operation.lease_epoch
    after_commit(session, lambda: enqueue(op_id, epoch))
    return operation


async def retry(
    session: AsyncSession, enqueue: Enqueue, org_id: str, operation_id: str
) -> Operation:
    """Resume a failed operation that left its pair mid-switch: from its failed step, or
    (when a rollback failed) by rolling back again."""
    operation = await get(session, org_id, operation_id)
    if not operation.needs_attention:
        raise InvalidTransition(
            f"operation is {operation.status}; only a failed operation that left the cluster "
            "mid-switch can be retried",
            operation_status=operation.status,
            allowed_actions=[],
        )
    resume = (
        OperationStatus.QUEUED if operation.past_point_of_no_return else OperationStatus.CANCELLING
    )
    try:
        result = await session.execute(
            update(Operation)
            .where(
                Operation.id == operation_id,  # type: ignore[arg-type]
                Operation.status == OperationStatus.FAILED.value,  # type: ignore[arg-type]
                Operation.needs_attention == True,  # type: ignore[arg-type]  # noqa: E712
            )
            .values(
                status=resume.value,
                done=False,
                needs_attention=False,
                error=None,
                wake_at=None,
                finished_at=None,
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        await session.flush()
    except IntegrityError:
        raise OperationInProgress("another operation is unfinished on this cluster") from None
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise OperationInProgress("the operation is already being retried")
    if resume is OperationStatus.QUEUED:
        # Forward from the failed step; a failed undo is retried by the rollback itself.
        await session.execute(
            update(OperationStep)
            .where(
                col(OperationStep.operation_id) == operation_id,
                col(OperationStep.status) == StepStatus.FAILED.value,
            )
            .values(status=StepStatus.PENDING.value, error=None, finished_at=None)
            .execution_options(synchronize_session=False)
        )
    operation = await get(session, org_id, operation_id)
    await emit_event(
        session, operation.cluster_id, "operation.retried", {"operation_id": operation.id}
    )
    op_id, epoch = operation.id, operation.lease_epoch
    after_commit(session, lambda: enqueue(op_id, epoch))
    return operation


async def steps_of(session: AsyncSession, operation_id: str) -> list[OperationStep]:
    result = await session.scalars(
        select(OperationStep)
        .where(OperationStep.operation_id == operation_id)  # type: ignore[arg-type]
        .order_by(OperationStep.position)  # type: ignore[arg-type]
        .execution_options(populate_existing=True)
    )
    return list(result)


def render(operation: Operation, steps: list[OperationStep]) -> OperationOut:
    finished = {StepStatus.SUCCEEDED.value, StepStatus.SKIPPED.value}
    return OperationOut(
        id=operation.id,
        cluster_id=operation.cluster_id,
        kind=operation.kind,  # type: ignore[arg-type]
        mode=operation.mode,  # type: ignore[arg-type]
        status=operation.status,  # type: ignore[arg-type]
        done=operation.done,
        from_state=operation.from_state,
        target_state=operation.target_state,
        steps=[
            StepOut(
                name=s.name,
                status=s.status,  # type: ignore[arg-type]
                reversible=s.reversible,
                attempts=s.attempts,
                deadline_at=s.deadline_at,
                started_at=s.started_at,
                finished_at=s.finished_at,
                error=s.error,
                output=s.output,
            )
            for s in steps
        ],
        progress=Progress(
            completed_steps=sum(1 for s in steps if s.status in finished),
            total_steps=len(steps),
        ),
        error=operation.error,
        reason=operation.reason,
        requested_by=operation.requested_by,
        batch_id=operation.batch_id,
        needs_attention=operation.needs_attention,
        awaiting_approval=next(
            (
                AwaitingApproval(step=s.name, since=s.started_at, timeout_at=s.deadline_at)
                for s in steps
                if s.status == StepStatus.WAITING.value
            ),
            None,
        ),
        warnings=[
            str(w) for s in steps for w in ((s.output or {}).get("warnings") or []) if s.output
        ],
        measured_rto_s=operation.measured_rto_s,
        data_loss=operation.data_loss,
        report=_report(operation, steps),
        created_at=operation.created_at,
        started_at=operation.started_at,
        finished_at=operation.finished_at,
        links={
            "self": f"/v1/operations/{operation.id}",
            "cluster": f"/v1/clusters/{operation.cluster_id}",
        },
    )


def _report(operation: Operation, steps: list[OperationStep]) -> DrillReport | None:
    if operation.kind != OperationKind.DRILL.value or not operation.plan:
        return None
    plan = [StepPlan.from_dict(p) for p in operation.plan]
    return DrillReport.model_validate(drills.report(operation.status, plan, steps, operation.done))


async def load(session: AsyncSession, org_id: str, operation_id: str) -> OperationOut:
    """The read path of every poll: plain rows, without the ORM's identity map."""
    operations, steps = Operation.__table__, OperationStep.__table__  # type: ignore[attr-defined]
    row = (
        (await session.execute(select(operations).where(operations.c.id == operation_id)))
        .mappings()
        .first()
    )
    if row is None or row["org_id"] != org_id:
        raise NotFound(f"operation {operation_id} does not exist")
    step_rows = (
        await session.execute(
            select(steps).where(steps.c.operation_id == operation_id).order_by(steps.c.position)
        )
    ).mappings()
    return render(
        SimpleNamespace(**row),  # type: ignore[arg-type]
        [SimpleNamespace(**step) for step in step_rows],  # type: ignore[misc]
    )


async def list_operations(
    session: AsyncSession,
    *,
    org_id: str,
    cluster_id: str | None,
    status: str | None,
    kind: str | None,
    page_size: int,
    page_token: str | None,
) -> tuple[list[OperationOut], str | None]:
    query = select(Operation).where(col(Operation.org_id) == org_id)
    if cluster_id is not None:
        query = query.where(Operation.cluster_id == cluster_id)  # type: ignore[arg-type]
    if status is not None:
        query = query.where(Operation.status == str(status))  # type: ignore[arg-type]
    if kind is not None:
        query = query.where(Operation.kind == str(kind))  # type: ignore[arg-type]
    rows, token = await page_by_creation(
        session, query, Operation, page_size, page_token, newest_first=True
    )
    return [render(op, await steps_of(session, op.id)) for op in rows], token


def is_unfinished(status: str) -> bool:
    return OperationStatus(status) in UNFINISHED


async def decide(
    session: AsyncSession,
    enqueue: Enqueue,
    principal: Principal,
    operation_id: str,
    approved: bool,
    comment: str | None,
) -> Operation:
    """Approve or reject the step that waits for a person, and wake the operation.

    A rejection before the point of no return cancels the operation (it rolls back and
    ends `cancelled`); past it, the step fails and the operation needs attention."""
    operation = await get(session, principal.org_id, operation_id)
    # Locked, so that two decisions, or a decision and a cancel, take turns.
    await session.execute(
        select(col(Operation.id)).where(col(Operation.id) == operation_id).with_for_update()
    )
    operation = await get(session, principal.org_id, operation_id)
    steps = await steps_of(session, operation_id)
    waiting = next((s for s in steps if s.status == StepStatus.WAITING.value), None)
    if operation.done or operation.status != OperationStatus.RUNNING.value or waiting is None:
        raise InvalidTransition(
            f"operation is {operation.status} and no step waits for an approval",
            operation_status=operation.status,
        )
    spec = next(
        (StepPlan.from_dict(p) for p in operation.plan or [] if p["name"] == waiting.name), None
    )
    two_person = bool(spec and spec.action.get("two_person"))
    if two_person and (operation.requested_by or "").endswith(f"({principal.token_id})"):
        raise SecondPersonRequired(
            "this step needs a second person: the token that started the operation "
            "cannot approve or reject it"
        )
    key = call_key(operation.id, waiting.name, "do", max(waiting.attempts, 1), None)
    session.add(
        Decision(
            idempotency_key=key,
            cluster_id=operation.cluster_id,
            operation_id=operation.id,
            step=waiting.name,
            approved=approved,
            decided_by=principal.actor,
            comment=comment,
        )
    )
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("this step has already been decided") from None
    values: dict[str, Any] = {"wake_at": None, "updated_at": utcnow()}
    if not approved and not operation.past_point_of_no_return:
        values["status"] = OperationStatus.CANCELLING.value
    await session.execute(
        update(Operation)
        .where(col(Operation.id) == operation.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if "status" in values:
        await emit_event(
            session, operation.cluster_id, "operation.cancelling", {"operation_id": operation.id}
        )
    operation = await get(session, principal.org_id, operation_id)
    op_id, epoch = operation.id, operation.lease_epoch
    after_commit(session, lambda: enqueue(op_id, epoch))
    return operation
