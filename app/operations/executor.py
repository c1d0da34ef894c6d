"""Carrying out an operation, step by step, under a lease.

A worker takes an operation by a conditional UPDATE on its lease and renews it while it
works; every write it makes first checks that it still holds the lease. If the worker
dies, the lease runs out and the sweeper hands the operation to another worker, which
resumes from the database: a step found `running` is called again with the same attempt
number, hence the same idempotency key, so its effect is not applied twice.

What happens next is decided by `app.domain.progress.next_move`; this module only reads,
calls actions and writes. A step whose action answers "not yet" gives the worker slot
back: the operation is parked (`wake_at`) and enqueued again for then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, exists, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.actions import registry
from app.actions.base import ActionDeps, ActionFailed, NotYet, Output, StepCall, call_key
from app.clusters.models import Cluster
from app.clusters.transitions import apply_transition
from app.columns import utcnow
from app.db import after_commit, unit_of_work
from app.domain import drills
from app.domain.plans import (
    RULES,
    Lane,
    OperationKind,
    OperationStatus,
    StepPlan,
    StepStatus,
    measured_data_loss,
    measured_rto_s,
    plan_for,
)
from app.domain.progress import (
    Call,
    EndDrill,
    EndRollback,
    Idle,
    OperationView,
    SkipRest,
    Start,
    StepView,
    Succeed,
    TimeOut,
    Undo,
    Wait,
    after_failure,
    next_drill_move,
    next_move,
    wake_time,
)
from app.domain.states import ClusterState
from app.events.service import emit_events
from app.operations import observe
from app.operations.models import Operation, OperationStep
from app.operations.service import steps_of
from app.readiness import service as readiness

log = logging.getLogger("tandem.executor")

Notify = Callable[[str], Awaitable[None]]
# (operation id, lease epoch, when) -> put the operation back on the queue for then.
EnqueueAt = Callable[[str, int, datetime], Awaitable[None]]
Events = list[tuple[str, dict[str, Any]]]

PROBLEM_TYPE = "https://tandem.dev/problems/"


# The statements of every step, built once (Core: no ORM bookkeeping on the hot path).
# An UPDATE with no values() sets the columns named in its parameters.
_OPERATIONS = Operation.__table__  # type: ignore[attr-defined]
_STEPS = OperationStep.__table__  # type: ignore[attr-defined]
_OURS = and_(
    _OPERATIONS.c.id == bindparam("b_id"),
    _OPERATIONS.c.lease_owner == bindparam("b_owner"),
    _OPERATIONS.c.lease_epoch == bindparam("b_epoch"),
)
_HOLD = (
    update(_OPERATIONS)
    .where(_OURS)
    .values(lease_expires_at=bindparam("b_expires"), updated_at=bindparam("b_now"))
    .returning(_OPERATIONS.c.status, _OPERATIONS.c.wake_at)
)
# On PostgreSQL, the lease's renewal and the write of the step that succeeded since the
# last boundary go in one statement (SQLite has no UPDATE in a WITH: two statements).
_HELD = _HOLD.cte("held")
_HOLD_AND_FINISH = select(_HELD.c.status, _HELD.c.wake_at).add_cte(
    update(_STEPS)
    .where(
        _STEPS.c.operation_id == bindparam("b_id"),
        _STEPS.c.position == bindparam("b_position"),
        exists(select(literal(1)).select_from(_HELD)),
    )
    .values(
        status=bindparam("b_status"),
        output=bindparam("b_output"),
        finished_at=bindparam("b_finished_at"),
    )
    .cte("finished")
)
_OPERATION_AND_PAIR = (
    select(Operation, Cluster)
    .join(Cluster, col(Cluster.id) == col(Operation.cluster_id))
    .where(col(Operation.id) == bindparam("b_id"))
    .execution_options(populate_existing=True)
)
_ACQUIRE = (
    update(_OPERATIONS)
    .where(
        _OPERATIONS.c.id == bindparam("b_id"),
        _OPERATIONS.c.done.is_(False),
        or_(
            _OPERATIONS.c.lease_owner.is_(None),
            _OPERATIONS.c.lease_expires_at < bindparam("b_now"),
        ),
    )
    .values(
        lease_owner=bindparam("b_owner"),
        lease_expires_at=bindparam("b_expires"),
        lease_epoch=_OPERATIONS.c.lease_epoch + 1,
    )
    .returning(_OPERATIONS.c.lease_epoch)
)
_RENEW = (
    update(_OPERATIONS)
    .where(
        _OPERATIONS.c.lease_owner == bindparam("b_owner"),
        _OPERATIONS.c.id.in_(bindparam("b_ids", expanding=True)),
    )
    .values(lease_expires_at=bindparam("b_expires"))
    .returning(_OPERATIONS.c.id, _OPERATIONS.c.lease_epoch)
)
_RELEASE = (
    update(_OPERATIONS)
    .where(_OURS)
    .values(lease_owner=None, lease_expires_at=None)
    .returning(_OPERATIONS.c.lease_epoch)
)
_SIDE_UNFINISHED = (
    select(_OPERATIONS.c.id)
    .where(
        _OPERATIONS.c.cluster_id == bindparam("b_cluster"),
        _OPERATIONS.c.lane == Lane.SIDE.value,
        _OPERATIONS.c.done.is_(False),
    )
    .limit(1)
)
_SET_STEP = update(_STEPS).where(
    _STEPS.c.operation_id == bindparam("b_operation"),
    _STEPS.c.position == bindparam("b_position"),
)
_SET_OPERATION = update(_OPERATIONS).where(_OPERATIONS.c.id == bindparam("b_id"))


class LeaseLost(Exception):
    pass


@dataclass
class Failure:
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


Outcome = Output | NotYet | Failure


@dataclass
class _Run:
    """What the worker holds while it has the lease: it is the only writer of the steps,
    so they are read once; the operation's status is re-read on every write."""

    operation: Operation
    cluster: Cluster
    steps: list[OperationStep]
    plan: list[StepPlan]
    # A step that succeeded, written with the next boundary's transaction.
    finished: tuple[int, Output] | None = None
    # The lease epoch this run acquired: every write checks it, so a run whose lease was
    # taken over (by another worker, or by another job of this same worker) writes nothing.
    epoch: int = 0
    # A drill or deployment retry of the pair is still being cancelled (read on taking a
    # queued switch): the switch waits for it.
    side_busy: bool = False
    # The lease went back with the write that ended the operation (set once committed).
    released: bool = False
    # The lease was found taken over: the run's work was cancelled for it.
    lost: bool = False

    def view(self) -> OperationView:
        return OperationView(
            status=OperationStatus(self.operation.status),
            steps=[
                StepView(StepStatus(s.status), s.reversible, s.deadline_at, spec.cleanup)
                for s, spec in zip(self.steps, self.plan, strict=True)
            ],
            wake_at=self.operation.wake_at,
        )

    @property
    def drill(self) -> bool:
        return self.operation.kind == OperationKind.DRILL.value


class _Leases:
    """The leases of this worker's runs, renewed every third of their time, all in one
    statement (not a task and a transaction per operation), on sessions that can be of
    their own: a worker so busy that its runs queue for connections still keeps them. A
    run whose lease is found taken over has its work cancelled."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], owner: str, ttl: timedelta
    ) -> None:
        self._sessions = sessions
        self._owner = owner
        self._ttl = ttl
        self._held: dict[str, tuple[_Run, asyncio.Future[Any]]] = {}
        self._beating: asyncio.Task[None] | None = None

    def hold(self, run: _Run, work: asyncio.Future[Any]) -> None:
        self._held[run.operation.id] = (run, work)
        if self._beating is None:
            self._beating = asyncio.ensure_future(self._beat())

    def drop(self, run: _Run) -> None:
        if self._held.get(run.operation.id, (None,))[0] is run:
            del self._held[run.operation.id]

    async def close(self) -> None:
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating

    async def _beat(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._ttl.total_seconds() / 3)
                if not self._held:
                    return  # (no await since the check: a run held now starts a new beat)
                held = list(self._held.values())
                try:
                    renewed = await self._renew([run.operation.id for run, _ in held])
                except Exception:  # a database blip: the next beat tries again
                    log.exception("renewing %d lease(s) failed", len(held))
                    continue
                for run, work in held:
                    if renewed.get(run.operation.id) == run.epoch or run.released or work.done():
                        continue  # renewed, or ended (its last write gave the lease back)
                    log.warning("lost the lease on %s; stopping", run.operation.id)
                    run.lost = True
                    work.cancel()
        finally:
            self._beating = None

    async def _renew(self, ids: list[str]) -> dict[str, int]:
        async with unit_of_work(self._sessions) as session:
            rows = await session.execute(
                _RENEW,
                {"b_owner": self._owner, "b_ids": ids, "b_expires": utcnow() + self._ttl},
            )
            return {str(op_id): int(epoch) for op_id, epoch in rows}


class Executor:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        deps: ActionDeps,
        owner: str,
        lease_ttl_s: float,
        notify: Notify | None = None,
        enqueue_at: EnqueueAt | None = None,
        lease_sessions: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self._sessions = sessions
        self._deps = deps
        self._owner = owner
        self._ttl = timedelta(seconds=lease_ttl_s)
        self._notify = notify
        self._enqueue_at = enqueue_at
        self._leases = _Leases(lease_sessions or sessions, owner, self._ttl)

    async def close(self) -> None:
        await self._leases.close()

    # -- lease ---------------------------------------------------------------

    async def _take(self, operation_id: str) -> _Run | None:
        """Take the lease when it is free or has run out, and read the operation, its pair
        and its steps in the same transaction: the run, or None when another worker holds
        the lease or the operation is done."""
        now = utcnow()
        async with unit_of_work(self._sessions) as session:
            epoch = await session.scalar(
                _ACQUIRE,
                {
                    "b_id": operation_id,
                    "b_now": now,
                    "b_owner": self._owner,
                    "b_expires": now + self._ttl,
                },
            )
            if epoch is None:
                return None
            operation, cluster = (
                await session.execute(_OPERATION_AND_PAIR, {"b_id": operation_id})
            ).one()
            steps = await steps_of(session, operation_id)
            plan = (
                [StepPlan.from_dict(s) for s in operation.plan]
                if operation.plan
                else plan_for(cluster.driver, cluster.plan, operation.kind, cluster.deployments)
            )
            run = _Run(
                operation=operation, cluster=cluster, steps=steps, plan=plan, epoch=int(epoch)
            )
            if (
                operation.status == OperationStatus.QUEUED.value
                and operation.lane == Lane.SWITCH.value
            ):
                run.side_busy = await _side_unfinished(session, operation.cluster_id)
        return run

    def _holding(self, run: _Run) -> dict[str, Any]:
        now = utcnow()
        return {
            "b_id": run.operation.id,
            "b_owner": self._owner,
            "b_epoch": run.epoch,
            "b_expires": now + self._ttl,
            "b_now": now,
        }

    def _held(self, run: _Run, row: Any) -> OperationStatus:
        if row is None:
            raise LeaseLost(run.operation.id)
        run.operation.status, run.operation.wake_at = str(row[0]), row[1]
        return OperationStatus(row[0])

    async def _hold(self, session: AsyncSession, run: _Run) -> OperationStatus:
        """Renew the lease inside `session`'s transaction and lock the operation's row;
        returns its status. Raises LeaseLost when another worker has taken it over."""
        return self._held(run, (await session.execute(_HOLD, self._holding(run))).first())

    def _ours(self, operation_id: str, epoch: int) -> dict[str, Any]:
        return {"b_id": operation_id, "b_owner": self._owner, "b_epoch": epoch}

    async def _release(self, operation_id: str, epoch: int) -> int | None:
        """Give the lease back; the lease epoch, or None when it was not ours any more."""
        async with unit_of_work(self._sessions) as session:
            released = await session.scalar(_RELEASE, self._ours(operation_id, epoch))
        return None if released is None else int(released)

    async def run(self, operation_id: str) -> bool:
        """Carry the operation as far as it goes. False when another worker holds it."""
        run = await self._take(operation_id)
        if run is None:
            return False
        held = run.epoch
        work = asyncio.ensure_future(self._drive(run))
        self._leases.hold(run, work)
        wake_at: datetime | None = None
        try:
            wake_at = await work
        except LeaseLost:
            log.warning("operation %s was taken over by another worker", operation_id)
        except asyncio.CancelledError:
            if not run.lost:  # this job itself was cancelled (worker shutting down)
                raise
            log.warning("lost the lease on %s; another worker resumes it", operation_id)
        finally:
            self._leases.drop(run)
            # An operation that ended gave the lease back with its last write.
            epoch = None if run.released else await self._release(operation_id, held)
        if wake_at is not None and epoch is not None and self._enqueue_at is not None:
            # Parked: the slot is free now; the queue (or the sweeper) brings it back.
            await self._enqueue_at(operation_id, epoch, wake_at)
        return True

    # -- the loop ------------------------------------------------------------

    async def _drive(self, run: _Run) -> datetime | None:
        """Run moves until the operation is finished (None) or parked (when to resume)."""
        if run.side_busy:
            # A drill or deployment retry is being cancelled for this switch: after it.
            return utcnow() + SIDE_WAIT
        decide = next_drill_move if run.drill else next_move
        while True:
            move = decide(run.view(), utcnow())
            match move:
                case Idle():
                    return None
                case Wait(until=until):
                    return until
                case Start(index=index):
                    await self._start(run, index)
                case Call(index=index):
                    await self._record(run, index, await self._call(run, index, "do"))
                case TimeOut(index=index):
                    step = run.steps[index]
                    await self._fail(run, index, _timed_out(step))
                case Undo(index=index):
                    await self._start_undo(run, index)
                    if run.operation.status == OperationStatus.CANCELLING.value:
                        outcome = await self._call(run, index, "undo")
                        await self._record_undo(run, index, outcome)
                case Succeed():
                    await self._succeed(run)
                    return None
                case EndRollback():
                    await self._end_rollback(run)
                    return None
                case SkipRest(indexes=indexes):
                    await self._skip_rest(run, indexes)
                case EndDrill():
                    await self._end_drill(run)
                    return None

    def _call_for(self, run: _Run, index: int, phase: str, item: int | None) -> StepCall:
        operation, cluster, step = run.operation, run.cluster, run.steps[index]
        source, target = _sides(operation, cluster)
        attempt = max(step.attempts, 1) if phase == "do" else max(step.undo_attempts, 1)
        deadline = step.deadline_at if phase == "do" else None
        return StepCall(
            cluster_id=cluster.id,
            cluster_name=cluster.name,
            operation_id=operation.id,
            kind=operation.kind,
            mode=operation.mode or "",
            step=step.name,
            phase=phase,
            attempt=attempt,
            idempotency_key=call_key(operation.id, step.name, phase, attempt, item),
            deadline_at=deadline or utcnow() + timedelta(seconds=run.plan[index].timeout_s),
            source=dict(source),
            target=dict(target),
            deployments=list(cluster.deployments),
            direction=_direction(operation),
            signing_secrets=cluster.runbook_secrets(),
            operation_created_at=operation.created_at,
            item=item,
        )

    async def _call(self, run: _Run, index: int, phase: str) -> Outcome:
        """Call the step's action(s); transient failures are retried with the same key,
        with backoff, inside the deadline."""
        spec = run.plan[index]
        if phase == "undo" and spec.undo is None:
            return {}  # a step that changes nothing (a check, an approval) has nothing to undo
        if spec.rehearsal == drills.PROBE:
            return await self._rehearse(run, index)
        undo = spec.undo or {}
        settings = spec.actions() if phase == "do" else undo if isinstance(undo, list) else [undo]
        items: list[int | None] = [None] if len(settings) == 1 else list(range(len(settings)))
        calls = [self._call_for(run, index, phase, item) for item in items]
        deadline = calls[0].deadline_at
        transient = 0
        while True:
            remaining = (deadline - utcnow()).total_seconds()
            if remaining <= 0:
                return _timed_out(run.steps[index])
            try:
                async with asyncio.timeout(remaining):
                    results = await asyncio.gather(
                        *(self._one(s, c) for s, c in zip(settings, calls, strict=True))
                    )
            except TimeoutError:
                return _timed_out(run.steps[index], deadline)
            failures = [r for r in results if isinstance(r, Failure)]
            if any(not f.details.get("transient") for f in failures):
                return next(f for f in failures if not f.details.get("transient"))
            if failures:
                transient += 1
                if transient > spec.retries:
                    last = failures[0]
                    last.message = f"{last.message} (after {transient} tries)"
                    return last
                await asyncio.sleep(min(0.1 * 2**transient, 5.0, max(remaining - 0.05, 0)))
                continue
            waits = [r for r in results if isinstance(r, NotYet)]
            if waits:
                return min(waits, key=lambda w: w.at)
            outputs = [r for r in results if isinstance(r, dict)]
            return outputs[0] if items == [None] else {"results": outputs}

    async def _rehearse(self, run: _Run, index: int) -> Outcome:
        """A drill's step with no `drill` action: one bounded round of each action's probe
        (the readiness check), within the step's deadline; a check not ok fails the step."""
        spec = run.plan[index]
        actions = spec.actions()
        calls = [
            self._call_for(run, index, "do", None if len(actions) == 1 else i)
            for i in range(len(actions))
        ]
        remaining = (calls[0].deadline_at - utcnow()).total_seconds()
        if remaining <= 0:
            return _timed_out(run.steps[index])
        found = await asyncio.gather(
            *(
                readiness.probe(
                    self._deps,
                    settings,
                    call,
                    str(settings.get("kind")) + (f"[{i}]" if len(actions) > 1 else ""),
                    run.cluster.rpo_target_s,
                    rehearse=True,
                    timeout_s=remaining,
                )
                for i, (settings, call) in enumerate(zip(actions, calls, strict=True))
            )
        )
        checks = [c for c in found if c is not None]
        failing = [c for c in checks if not c["ok"]]
        if failing:
            message = "; ".join(f"{c['name']}: {c['detail']}" for c in failing)
            return Failure("probe_failed", message, {"checks": checks})
        return {"checks": checks}

    async def _one(self, settings: dict[str, Any], call: StepCall) -> Outcome:
        try:
            action = registry.build(settings, self._deps)
            return await (action.do(call) if call.phase == "do" else action.undo(call))
        except ActionFailed as exc:
            return Failure("step_failed", exc.message, {**exc.details, "transient": exc.transient})
        except (asyncio.CancelledError, LeaseLost):
            raise
        except Exception as exc:  # an action bug must not look like a hang
            log.exception("action %s raised in %s", settings.get("kind"), call.idempotency_key)
            return Failure("step_failed", f"action error: {type(exc).__name__}: {exc}")

    # -- writes --------------------------------------------------------------

    async def _set_step(
        self, session: AsyncSession, run: _Run, index: int, events: Events, **values: Any
    ) -> None:
        """Write a step's new values; `run.steps[index]` mirrors the row."""
        step = run.steps[index]
        await session.execute(
            _SET_STEP, {"b_operation": run.operation.id, "b_position": step.position, **values}
        )
        self._mirror_step(session, run, index, events, values)

    def _mirror_step(
        self, session: AsyncSession, run: _Run, index: int, events: Events, values: dict[str, Any]
    ) -> None:
        """`run.steps[index]` takes the values just written; a new status is an event."""
        step = run.steps[index]
        for name, value in values.items():
            setattr(step, name, value)
        if "status" in values:
            events.append(_step_changed(run.operation, step))
            if values["status"] in ENDED_STEP:
                ended = _step_ended(run, index)
                after_commit(session, lambda: observe.step_ended(ended))

    async def _set_operation(self, session: AsyncSession, run: _Run, **values: Any) -> None:
        if values.get("done"):
            # The write that ends the operation gives the lease back too (the caller
            # holds the row: _hold ran first in this transaction).
            values.update(lease_owner=None, lease_expires_at=None)
        await session.execute(_SET_OPERATION, {"b_id": run.operation.id, **values})
        for name, value in values.items():
            setattr(run.operation, name, value)
        if values.get("done"):
            ended = _operation_ended(run)

            async def ended_and_released() -> None:
                run.released = True
                await observe.operation_ended(ended)

            after_commit(session, ended_and_released)

    async def _boundary(self, session: AsyncSession, run: _Run, events: Events) -> None:
        """Open a write: renew the lease, re-read the status, and write the step that
        succeeded since the last write."""
        if run.finished is None:
            await self._hold(session, run)
            return
        index, output = run.finished
        values = {"status": StepStatus.SUCCEEDED.value, "output": output, "finished_at": utcnow()}
        if session.get_bind().dialect.name == "postgresql":
            row = (
                await session.execute(
                    _HOLD_AND_FINISH,
                    {
                        **self._holding(run),
                        "b_position": run.steps[index].position,
                        **{f"b_{name}": value for name, value in values.items()},
                    },
                )
            ).first()
            self._held(run, row)
            run.finished = None
            self._mirror_step(session, run, index, events, values)
        else:
            await self._hold(session, run)
            run.finished = None
            await self._set_step(session, run, index, events, **values)

    async def _emit(self, session: AsyncSession, run: _Run, events: Events) -> None:
        if events:
            await emit_events(session, run.operation.cluster_id, events)

    async def _stop_for_attention(
        self, session: AsyncSession, run: _Run, problem: dict[str, Any], now: datetime
    ) -> None:
        """The operation ends `failed` with the pair mid-switch: a person must retry it."""
        await self._set_operation(
            session,
            run,
            status=OperationStatus.FAILED.value,
            done=True,
            needs_attention=True,
            error=problem,
            wake_at=None,
            finished_at=now,
        )

    async def _start(self, run: _Run, index: int) -> None:
        step, spec = run.steps[index], run.plan[index]
        events: Events = []
        async with unit_of_work(self._sessions) as session:
            await self._boundary(session, run, events)
            status = OperationStatus(run.operation.status)
            if status is not OperationStatus.CANCELLING or spec.cleanup:
                now = utcnow()
                changes: dict[str, Any] = {}
                if status is OperationStatus.QUEUED:
                    changes.update(
                        status=OperationStatus.RUNNING.value,
                        started_at=run.operation.started_at or now,
                    )
                if not step.reversible and not run.operation.past_point_of_no_return:
                    # Under the row lock taken by _hold: a cancel either committed before
                    # (and we saw `cancelling`) or will find this flag and be refused.
                    changes["past_point_of_no_return"] = True
                if changes:
                    await self._set_operation(session, run, **changes)
                await self._set_step(
                    session,
                    run,
                    index,
                    events,
                    status=StepStatus.RUNNING.value,
                    attempts=step.attempts + 1,
                    started_at=now,
                    finished_at=None,
                    deadline_at=now + timedelta(seconds=spec.timeout_s),
                    error=None,
                )
            await self._emit(session, run, events)

    async def _record(self, run: _Run, index: int, outcome: Outcome) -> None:
        if isinstance(outcome, Failure):
            await self._fail(run, index, outcome)
        elif isinstance(outcome, NotYet):
            await self._park(run, index, outcome)
        else:
            # Written with the next boundary; the mirror moves on now.
            run.finished = (index, outcome)
            run.steps[index].status = StepStatus.SUCCEEDED.value

    async def _park(self, run: _Run, index: int, not_yet: NotYet) -> None:
        """The step asked to be called again later: remember when, in the row. A step
        that waits for a person shows `waiting`, and asks for one once."""
        step = run.steps[index]
        events: Events = []
        async with unit_of_work(self._sessions) as session:
            await self._hold(session, run)
            if (
                run.operation.status == OperationStatus.CANCELLING.value
                and not run.plan[index].cleanup
            ):
                return  # a cancel came in meanwhile: roll back now instead of waiting
            if not_yet.waiting and step.status != StepStatus.WAITING.value:
                await self._set_step(session, run, index, events, status=StepStatus.WAITING.value)
                deadline = step.deadline_at.isoformat() if step.deadline_at else None
                events.append(
                    (
                        "operation.approval_requested",
                        {
                            "operation_id": run.operation.id,
                            "kind": run.operation.kind,
                            "step": step.name,
                            "timeout_at": deadline,
                        },
                    )
                )
            await self._set_operation(session, run, wake_at=wake_time(not_yet.at, step.deadline_at))
            await self._emit(session, run, events)

    async def _fail(self, run: _Run, index: int, failure: Failure) -> None:
        step = run.steps[index]
        problem = _problem(step.name, failure, rolled_back=step.reversible)
        events: Events = []
        async with unit_of_work(self._sessions) as session:
            await self._boundary(session, run, events)
            now = utcnow()
            await self._set_step(
                session,
                run,
                index,
                events,
                status=StepStatus.FAILED.value,
                error={"code": failure.code, "message": failure.message, **failure.details},
                finished_at=now,
            )
            if failure.code == "step_timed_out":
                events.append(
                    (
                        "operation.step_timed_out",
                        {
                            "operation_id": run.operation.id,
                            "kind": run.operation.kind,
                            "step": step.name,
                            "deadline_at": failure.details.get("deadline_at"),
                        },
                    )
                )
            view = StepView(StepStatus.FAILED, step.reversible, step.deadline_at)
            if run.drill:
                pass  # a drill skips the rest and runs its cleanup: no rollback, no attention
            elif after_failure(view) is OperationStatus.CANCELLING:
                # The cause is in the row before the first undo: whoever finishes the
                # rollback reports this failure, not a cancel.
                await self._set_operation(
                    session,
                    run,
                    status=OperationStatus.CANCELLING.value,
                    rollback_cause=problem,
                    wake_at=None,
                )
            else:
                await self._stop_for_attention(session, run, problem, now)
                events.append(_failed(run.operation, problem, needs_attention=True))
            await self._emit(session, run, events)
        if run.operation.done:
            await self._changed(run.operation.id)

    async def _start_undo(self, run: _Run, index: int) -> None:
        """Write the undo attempt before calling it: a worker taking over reuses its key."""
        step = run.steps[index]
        events: Events = []
        async with unit_of_work(self._sessions) as session:
            await self._boundary(session, run, events)
            last_undo_failed = (step.error or {}).get("phase") == "undo"
            if run.operation.status == OperationStatus.CANCELLING.value and (
                step.undo_attempts == 0 or last_undo_failed
            ):
                await self._set_step(
                    session, run, index, events, undo_attempts=step.undo_attempts + 1, error=None
                )
            await self._emit(session, run, events)

    async def _record_undo(self, run: _Run, index: int, outcome: Outcome) -> None:
        step = run.steps[index]
        if isinstance(outcome, NotYet):
            async with unit_of_work(self._sessions) as session:
                await self._hold(session, run)
                await self._set_operation(session, run, wake_at=outcome.at)
            return
        events: Events = []
        async with unit_of_work(self._sessions) as session:
            await self._hold(session, run)
            now = utcnow()
            if not isinstance(outcome, Failure):
                await self._set_step(
                    session,
                    run,
                    index,
                    events,
                    status=StepStatus.ROLLED_BACK.value,
                    finished_at=now,
                )
                await self._set_operation(session, run, wake_at=None)
            else:
                # The pair stays mid-switch: a person must look, and retry runs the undo again.
                await self._set_step(
                    session,
                    run,
                    index,
                    events,
                    error={"phase": "undo", "code": "undo_failed", "message": outcome.message},
                )
                problem = {
                    "type": PROBLEM_TYPE + "undo-failed",
                    "title": "Undo failed during the rollback",
                    "status": 500,
                    "code": "undo_failed",
                    "step": step.name,
                    "detail": f"the undo of {step.name} failed: {outcome.message}; "
                    "retry the operation to run the undo again",
                }
                if run.operation.rollback_cause is not None:
                    problem["rollback_cause"] = run.operation.rollback_cause
                await self._stop_for_attention(session, run, problem, now)
                events.append(_step_changed(run.operation, step))
                events.append(_failed(run.operation, problem, needs_attention=True))
            await self._emit(session, run, events)
        if run.operation.done:
            await self._changed(run.operation.id)

    async def _succeed(self, run: _Run) -> None:
        events: Events = []
        async with unit_of_work(self._sessions) as session:
            await self._boundary(session, run, events)
            if run.operation.status == OperationStatus.CANCELLING.value:
                await self._emit(session, run, events)
                return  # the loop asks again and rolls back
            rules = RULES.get(OperationKind(run.operation.kind))
            if rules is not None:
                await apply_transition(
                    session, run.operation.cluster_id, rules.succeeded, run.operation.id, events
                )
            now = utcnow()
            rto_s = measured_rto_s(
                run.operation.created_at,
                [
                    (spec.traffic_switched, step.finished_at)
                    for spec, step in zip(run.plan, run.steps, strict=True)
                ],
                now,
            )
            loss = measured_data_loss([step.output for step in run.steps])
            await self._set_operation(
                session,
                run,
                status=OperationStatus.SUCCEEDED.value,
                done=True,
                wake_at=None,
                finished_at=now,
                measured_rto_s=rto_s,
                data_loss=loss,
            )
            events.append(
                (
                    "operation.succeeded",
                    {
                        "operation_id": run.operation.id,
                        "kind": run.operation.kind,
                        "measured_rto_s": rto_s,
                    },
                )
            )
            if rules is not None:
                events.extend(breaches(run.operation.id, run.cluster, rto_s, loss))
            await self._emit(session, run, events)
        await self._changed(run.operation.id)

    async def _end_rollback(self, run: _Run) -> None:
        events: Events = []
        async with unit_of_work(self._sessions) as session:
            await self._boundary(session, run, events)
            for index, step in enumerate(run.steps):
                if step.status == StepStatus.PENDING.value:
                    await self._set_step(session, run, index, [], status=StepStatus.SKIPPED.value)
            rules = RULES.get(OperationKind(run.operation.kind))
            if rules is not None:
                await apply_transition(
                    session, run.operation.cluster_id, rules.rolled_back, run.operation.id, events
                )
            cause = run.operation.rollback_cause
            await self._set_operation(
                session,
                run,
                status=(OperationStatus.FAILED if cause else OperationStatus.CANCELLED).value,
                done=True,
                error=cause,
                wake_at=None,
                finished_at=utcnow(),
            )
            if cause is not None:
                events.append(_failed(run.operation, cause, needs_attention=False))
            else:
                events.append(
                    (
                        "operation.cancelled",
                        {
                            "operation_id": run.operation.id,
                            "kind": run.operation.kind,
                            "rolled_back": True,
                        },
                    )
                )
            await self._emit(session, run, events)
        await self._changed(run.operation.id)

    async def _skip_rest(self, run: _Run, indexes: tuple[int, ...]) -> None:
        """A drill stops rehearsing: what it has not finished is skipped (a step under way
        is left as it is: a drill never undoes)."""
        events: Events = []
        async with unit_of_work(self._sessions) as session:
            await self._boundary(session, run, events)
            for index in indexes:
                step = run.steps[index]
                if step.status in (StepStatus.SUCCEEDED.value, StepStatus.FAILED.value):
                    continue  # it ended since the move was decided (written by the boundary)
                values: dict[str, Any] = {"status": StepStatus.SKIPPED.value}
                if step.status != StepStatus.PENDING.value:
                    values.update(finished_at=utcnow(), error=None)
                await self._set_step(session, run, index, events, **values)
            await self._set_operation(session, run, wake_at=None)
            await self._emit(session, run, events)

    async def _end_drill(self, run: _Run) -> None:
        """The drill's cleanup has run: it ends, and says so (drill.finished). The pair's
        state is not touched."""
        events: Events = []
        async with unit_of_work(self._sessions) as session:
            await self._boundary(session, run, events)
            await self._emit(session, run, events)
            events = []
            now = utcnow()
            outcome = drills.outcome(run.operation.status, run.steps)
            failed = drills.failed_step(run.steps)
            problem = None
            if outcome is OperationStatus.FAILED and failed is not None:
                problem = _drill_problem(failed)
            await self._set_operation(
                session,
                run,
                status=outcome.value,
                done=True,
                error=problem,
                wake_at=None,
                started_at=run.operation.started_at or now,
                finished_at=now,
            )
            report = drills.report(outcome.value, run.plan, run.steps, done=True)
            ref = {"operation_id": run.operation.id, "kind": run.operation.kind}
            if outcome is OperationStatus.SUCCEEDED:
                events.append(("operation.succeeded", {**ref, "measured_rto_s": None}))
            elif outcome is OperationStatus.CANCELLED:
                events.append(("operation.cancelled", {**ref, "rolled_back": False}))
            else:
                assert problem is not None
                # Nothing to roll back: a drill changed nothing.
                failed_type, failed_data = _failed(run.operation, problem, needs_attention=False)
                events.append((failed_type, {**failed_data, "rolled_back": False}))
            events.append(
                (
                    "drill.finished",
                    {
                        "operation_id": run.operation.id,
                        "outcome": outcome.value,
                        "failed_step": report["failed_step"],
                        "error": problem,
                        "expected_rto_s": report["expected_rto_s"],
                        "replication_lag": report["replication_lag"],
                        "requested_by": run.operation.requested_by,
                    },
                )
            )
            await self._emit(session, run, events)
        await self._changed(run.operation.id)

    async def _changed(self, operation_id: str) -> None:
        if self._notify is not None:
            try:
                await self._notify(operation_id)
            except Exception:  # waiters fall back to polling
                log.debug("notify failed for %s", operation_id, exc_info=True)


def _timed_out(step: OperationStep, deadline: datetime | None = None) -> Failure:
    at = deadline or step.deadline_at
    return Failure(
        "step_timed_out",
        f"{step.name} did not finish before its deadline",
        {"deadline_at": at.isoformat() if at else None},
    )


def _problem(step: str, failure: Failure, *, rolled_back: bool) -> dict[str, Any]:
    timed_out = failure.code == "step_timed_out"
    if rolled_back:
        title = "Step failed; the operation was rolled back"
        detail = f"{step} failed: {failure.message}; rolled back"
    else:
        title = "Step failed past the point of no return"
        detail = f"{step} failed: {failure.message}; retry the operation"
    return {
        "type": PROBLEM_TYPE + ("step-timed-out" if timed_out else "step-failed"),
        "title": "Step timed out" if timed_out else title,
        "status": 504 if timed_out else 500,
        "code": failure.code,
        "detail": detail,
        "step": step,
    }


async def _side_unfinished(session: AsyncSession, cluster_id: str) -> bool:
    return await session.scalar(_SIDE_UNFINISHED, {"b_cluster": cluster_id}) is not None


# How soon a switch waiting for a side operation to end looks again.
SIDE_WAIT = timedelta(seconds=0.5)

ENDED_STEP = frozenset(
    {
        StepStatus.SUCCEEDED.value,
        StepStatus.FAILED.value,
        StepStatus.ROLLED_BACK.value,
    }
)


def _step_ended(run: _Run, index: int) -> observe.StepEnded:
    operation, step, spec = run.operation, run.steps[index], run.plan[index]
    return observe.StepEnded(
        org_id=operation.org_id,
        cluster_id=operation.cluster_id,
        operation_id=operation.id,
        kind=operation.kind,
        mode=operation.mode,
        step=step.name,
        actions=tuple(str(a.get("kind")) for a in spec.actions()),
        outcome=step.status,
        error_code=(step.error or {}).get("code")
        if step.status == StepStatus.FAILED.value
        else None,
        attempt=step.attempts,
        started_at=step.started_at,
        finished_at=step.finished_at,
    )


def _direction(operation: Operation) -> str | None:
    """A drill rehearses the switch its pair allowed when it was asked for."""
    if operation.kind != OperationKind.DRILL.value:
        return None
    if operation.from_state == ClusterState.PRIMARY_ACTIVE.value:
        return OperationKind.FAILOVER.value
    return OperationKind.FAILBACK.value


def _drill_problem(step: Any) -> dict[str, Any]:
    error = step.error or {}
    timed_out = error.get("code") == "step_timed_out"
    return {
        "type": PROBLEM_TYPE + ("step-timed-out" if timed_out else "drill-step-failed"),
        "title": "Drill step timed out" if timed_out else "Drill step failed",
        "status": 504 if timed_out else 500,
        "code": error.get("code") or "step_failed",
        "detail": f"{step.name} failed in the drill: {error.get('message')}; nothing was "
        "switched, the cleanup ran",
        "step": step.name,
    }


def _sides(operation: Operation, cluster: Cluster) -> tuple[dict[str, Any], dict[str, Any]]:
    """(source, target): a failover moves to the secondary, a failback to the primary; a
    drill as the switch it rehearses; the other kinds that change no state act on the
    active side."""
    direction = _direction(operation) or operation.kind
    if direction == OperationKind.FAILOVER.value:
        return cluster.primary, cluster.secondary
    if direction == OperationKind.FAILBACK.value:
        return cluster.secondary, cluster.primary
    if cluster.secondary.get("region") == cluster.active_region:
        return cluster.primary, cluster.secondary
    return cluster.secondary, cluster.primary


def _operation_ended(run: _Run) -> observe.OperationEnded:
    operation, cluster = run.operation, run.cluster
    source, target = _sides(operation, cluster)
    return observe.OperationEnded(
        org_id=operation.org_id,
        cluster_id=operation.cluster_id,
        operation_id=operation.id,
        kind=operation.kind,
        mode=operation.mode,
        outcome=operation.status,
        needs_attention=operation.needs_attention,
        created_at=operation.created_at,
        started_at=operation.started_at,
        finished_at=operation.finished_at,
        steps=tuple(
            {
                "name": step.name,
                "actions": [str(a.get("kind")) for a in spec.actions()],
                "status": step.status,
                "started_at": step.started_at,
                "finished_at": step.finished_at,
                "error_code": (step.error or {}).get("code"),
            }
            for step, spec in zip(run.steps, run.plan, strict=True)
        ),
        source_region=str(source.get("region")),
        target_region=str(target.get("region")),
        batch_id=operation.batch_id,
    )


def breaches(
    operation_id: str, cluster: Cluster, rto_s: float, loss: dict[str, Any] | None
) -> Events:
    """operation.rto_breached / operation.rpo_breached when a target was crossed."""
    found: Events = []
    if cluster.rto_target_s is not None and rto_s > cluster.rto_target_s:
        found.append(
            (
                "operation.rto_breached",
                {
                    "operation_id": operation_id,
                    "target_s": cluster.rto_target_s,
                    "measured_s": rto_s,
                },
            )
        )
    lost_s = (loss or {}).get("seconds")
    if cluster.rpo_target_s is not None and lost_s is not None and lost_s > cluster.rpo_target_s:
        found.append(
            (
                "operation.rpo_breached",
                {
                    "operation_id": operation_id,
                    "target_s": cluster.rpo_target_s,
                    "measured_s": lost_s,
                },
            )
        )
    return found


def _failed(
    operation: Operation, problem: dict[str, Any], *, needs_attention: bool
) -> tuple[str, dict[str, Any]]:
    return (
        "operation.failed",
        {
            "operation_id": operation.id,
            "kind": operation.kind,
            "step": problem.get("step"),
            "error": problem,
            "needs_attention": needs_attention,
            "rolled_back": not needs_attention,
        },
    )


def _step_changed(operation: Operation, step: OperationStep) -> tuple[str, dict[str, Any]]:
    return (
        "operation.step_changed",
        {
            "operation_id": operation.id,
            "step": step.name,
            "status": step.status,
            "attempt": step.attempts,
            "error": step.error,
        },
    )
