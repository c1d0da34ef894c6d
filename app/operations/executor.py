"""Carrying out an operation, step by step, under a lease.

A worker takes an operation by a conditional UPDATE on its lease and renews it while it
works; every write it makes first checks that it still holds the lease. If the worker
dies, the lease runs out and the sweeper hands the operation to another worker, which
resumes from the database: a step found `running` is called again with the same
attempt number, hence the same idempotency key, so its effect is not applied twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.actions.base import Driver, StepContext, StepFailed
from app.clusters.models import Cluster
from app.clusters.transitions import apply_transition
from app.columns import utcnow
from app.db import unit_of_work
from app.domain.plans import RULES, OperationKind, OperationStatus, StepStatus
from app.events.service import emit_event, emit_events
from app.operations.models import Operation, OperationStep
from app.operations.service import steps_of

log = logging.getLogger("tandem.executor")

DriverFactory = Callable[[dict[str, Any]], Driver]
Notify = Callable[[str], Awaitable[None]]


class LeaseLost(Exception):
    pass


class Executor:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        driver_factory: DriverFactory,
        owner: str,
        lease_ttl_s: float,
        notify: Notify | None = None,
    ) -> None:
        self._sessions = sessions
        self._driver_factory = driver_factory
        self._owner = owner
        self._ttl = timedelta(seconds=lease_ttl_s)
        self._notify = notify

    # -- lease ---------------------------------------------------------------

    async def acquire(self, operation_id: str) -> bool:
        now = utcnow()
        async with unit_of_work(self._sessions) as session:
            result = await session.execute(
                update(Operation)
                .where(
                    Operation.id == operation_id,  # type: ignore[arg-type]
                    Operation.done == False,  # type: ignore[arg-type]  # noqa: E712
                    or_(
                        Operation.lease_owner == None,  # type: ignore[arg-type]  # noqa: E711
                        Operation.lease_expires_at < now,  # type: ignore[arg-type,operator]
                    ),
                )
                .values(
                    lease_owner=self._owner,
                    lease_expires_at=now + self._ttl,
                    lease_epoch=Operation.lease_epoch + 1,
                )
                .execution_options(synchronize_session=False)
            )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def _hold(self, session: AsyncSession, operation_id: str) -> str:
        """Renew the lease inside `session`'s transaction and lock the operation's row;
        returns its status. Raises LeaseLost when another worker has taken it over."""
        status = await session.scalar(
            update(Operation)
            .where(col(Operation.id) == operation_id, col(Operation.lease_owner) == self._owner)
            .values(lease_expires_at=utcnow() + self._ttl, updated_at=utcnow())
            .returning(col(Operation.status))
            .execution_options(synchronize_session=False)
        )
        if status is None:
            raise LeaseLost(operation_id)
        return str(status)

    async def _release(self, operation_id: str) -> None:
        async with unit_of_work(self._sessions) as session:
            await session.execute(
                update(Operation)
                .where(Operation.id == operation_id, Operation.lease_owner == self._owner)  # type: ignore[arg-type]
                .values(lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )

    async def _heartbeat(self, operation_id: str, work: asyncio.Task[None]) -> None:
        interval = self._ttl.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with unit_of_work(self._sessions) as session:
                    await self._hold(session, operation_id)
            except LeaseLost:
                log.warning("lost the lease on %s; stopping", operation_id)
                work.cancel()
                return
            except Exception:  # a database blip: the next beat tries again
                log.exception("heartbeat for %s failed", operation_id)

    async def run(self, operation_id: str) -> bool:
        """Carry the operation as far as it goes. False when another worker holds it."""
        if not await self.acquire(operation_id):
            return False
        work = asyncio.ensure_future(self._drive(operation_id))
        beat = asyncio.ensure_future(self._heartbeat(operation_id, work))
        try:
            await work
        except LeaseLost:
            log.warning("operation %s was taken over by another worker", operation_id)
        except asyncio.CancelledError:
            if not beat.done():  # this job itself was cancelled (worker shutting down)
                raise
            log.warning("lost the lease on %s; another worker resumes it", operation_id)
        finally:
            beat.cancel()
            await self._release(operation_id)
        return True

    # -- the plan ------------------------------------------------------------

    async def _changed(self, operation_id: str) -> None:
        if self._notify is not None:
            try:
                await self._notify(operation_id)
            except Exception:  # waiters fall back to polling
                log.debug("notify failed for %s", operation_id, exc_info=True)

    def _context(self, cluster: Cluster, operation: Operation, step: OperationStep) -> StepContext:
        failover = operation.kind == OperationKind.FAILOVER.value
        source, target = (
            (cluster.primary, cluster.secondary)
            if failover
            else (cluster.secondary, cluster.primary)
        )
        return StepContext(
            cluster_id=cluster.id,
            cluster_name=cluster.name,
            operation_id=operation.id,
            kind=operation.kind,
            mode=operation.mode,
            step=step.name,
            attempt=max(step.attempts, 1),
            source=dict(source),
            target=dict(target),
            deployments=list(cluster.deployments),
            settings=dict(cluster.driver),
        )

    async def _drive(self, operation_id: str) -> None:
        # The lease makes this worker the only writer of the steps while it runs, so they
        # are read once and kept here; the operation's status is re-read on every write
        # (a cancel may arrive at any time).
        async with unit_of_work(self._sessions) as session:
            status = await self._hold(session, operation_id)
            operation = await session.get(Operation, operation_id, populate_existing=True)
            assert operation is not None
            if operation.done:
                return
            cluster = await session.get(Cluster, operation.cluster_id, populate_existing=True)
            assert cluster is not None
            steps = await steps_of(session, operation_id)
            past_point_of_no_return = operation.past_point_of_no_return
        driver = self._driver_factory(cluster.driver)
        finished: tuple[OperationStep, dict[str, Any]] | None = None
        rollback_reason: dict[str, Any] | None = None

        while True:
            step: OperationStep | None = None
            async with unit_of_work(self._sessions) as session:
                status = await self._hold(session, operation_id)
                now = utcnow()
                # The step events of one boundary are appended together, in order.
                events: list[tuple[str, dict[str, Any]]] = []
                if finished is not None:
                    done_step, output = finished
                    events.append(
                        await self._set_step(
                            session,
                            operation,
                            done_step,
                            status=StepStatus.SUCCEEDED.value,
                            output=output,
                            finished_at=now,
                        )
                    )
                if status == OperationStatus.CANCELLING.value:
                    await emit_events(session, operation.cluster_id, events)
                    break
                step = next(
                    (s for s in steps if s.status in (StepStatus.PENDING, StepStatus.RUNNING)),
                    None,
                )
                changes: dict[str, Any] = {}
                if status == OperationStatus.QUEUED.value:
                    changes.update(
                        status=OperationStatus.RUNNING.value,
                        started_at=operation.started_at or now,
                    )
                if step is not None and not step.reversible and not past_point_of_no_return:
                    # Under the row lock taken by _hold: a cancel either committed before
                    # (and we saw `cancelling`) or will find this flag and be refused.
                    changes["past_point_of_no_return"] = past_point_of_no_return = True
                if changes:
                    await session.execute(
                        update(Operation)
                        .where(col(Operation.id) == operation_id)
                        .values(**changes)
                        .execution_options(synchronize_session=False)
                    )
                if step is not None and step.status == StepStatus.PENDING.value:
                    events.append(
                        await self._set_step(
                            session,
                            operation,
                            step,
                            status=StepStatus.RUNNING.value,
                            attempts=step.attempts + 1,
                            started_at=now,
                            error=None,
                        )
                    )
                if events:
                    await emit_events(session, operation.cluster_id, events)
                if step is None:
                    await self._succeed(session, operation)
            if step is None:
                await self._changed(operation_id)
                return

            ctx = self._context(cluster, operation, step)
            try:
                finished = (step, await driver.run(ctx))
                continue
            except StepFailed as exc:
                message = exc.message
                failure = {"message": message, "retryable": exc.retryable, **exc.details}
            except (asyncio.CancelledError, LeaseLost):
                raise
            except Exception as exc:  # a driver bug must not look like a hang
                log.exception("driver raised in %s of %s", ctx.step, operation_id)
                message = f"driver error: {type(exc).__name__}: {exc}"
                failure = {"message": message}
            if not await self._step_failed(operation_id, ctx, failure):
                return
            rollback_reason = {
                "code": "step_failed",
                "step": ctx.step,
                "detail": f"{ctx.step} failed: {message}; rolled back",
            }
            break

        await self._roll_back(operation_id, rollback_reason)

    async def _set_step(
        self,
        session: AsyncSession,
        operation: Operation,
        step: OperationStep,
        **values: Any,
    ) -> tuple[str, dict[str, Any]]:
        """Write a step's new status; `step` mirrors the row. Returns the event to append."""
        await session.execute(
            update(OperationStep)
            .where(
                col(OperationStep.operation_id) == operation.id,
                col(OperationStep.position) == step.position,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        for name, value in values.items():
            setattr(step, name, value)
        return _step_changed(operation, step)

    async def _step_event(
        self, session: AsyncSession, operation: Operation, step: OperationStep
    ) -> None:
        """Append the event saying what `step` (written, or pending in `session`) is now."""
        await session.flush()
        type_, data = _step_changed(operation, step)
        await emit_event(session, operation.cluster_id, type_, data)

    async def _succeed(self, session: AsyncSession, operation: Operation) -> None:
        rules = RULES[OperationKind(operation.kind)]
        await apply_transition(session, operation.cluster_id, rules.succeeded, operation.id)
        now = utcnow()
        await session.execute(
            update(Operation)
            .where(col(Operation.id) == operation.id)
            .values(
                status=OperationStatus.SUCCEEDED.value,
                done=True,
                finished_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        await emit_event(
            session,
            operation.cluster_id,
            "operation.succeeded",
            {"operation_id": operation.id, "kind": operation.kind},
        )

    async def _step_failed(
        self, operation_id: str, ctx: StepContext, failure: dict[str, Any]
    ) -> bool:
        """Record the failure. True when the step was reversible and a rollback follows."""
        async with unit_of_work(self._sessions) as session:
            await self._hold(session, operation_id)
            operation = await session.get(Operation, operation_id, populate_existing=True)
            step = await session.get(
                OperationStep, (operation_id, _position(ctx.step)), populate_existing=True
            )
            assert operation is not None and step is not None
            step.status = StepStatus.FAILED.value
            step.error = failure
            step.finished_at = utcnow()
            await self._step_event(session, operation, step)
            if step.reversible:
                return True
            operation.status = OperationStatus.FAILED.value
            operation.done = True
            operation.needs_attention = True
            operation.finished_at = utcnow()
            operation.updated_at = operation.finished_at
            operation.error = {
                "type": "https://tandem.dev/problems/step-failed",
                "title": "Step failed past the point of no return",
                "status": 500,
                "code": "step_failed",
                "detail": f"{ctx.step} failed: {failure['message']}; retry the operation",
                "step": ctx.step,
            }
            await session.flush()
            await emit_event(
                session,
                operation.cluster_id,
                "operation.failed",
                {
                    "operation_id": operation.id,
                    "kind": operation.kind,
                    "step": ctx.step,
                    "needs_attention": True,
                },
            )
        await self._changed(operation_id)
        return False

    async def _roll_back(self, operation_id: str, reason: dict[str, Any] | None) -> None:
        """Undo the reversible steps done so far, newest first, and restore the origin."""
        async with unit_of_work(self._sessions) as session:
            await self._hold(session, operation_id)
            operation = await session.get(Operation, operation_id, populate_existing=True)
            assert operation is not None
            if operation.status != OperationStatus.CANCELLING.value:
                operation.status = OperationStatus.CANCELLING.value
                operation.updated_at = utcnow()
            cluster = await session.get(Cluster, operation.cluster_id, populate_existing=True)
            assert cluster is not None
            steps = await steps_of(session, operation_id)
            driver = self._driver_factory(cluster.driver)
            todo = [
                (s.name, self._context(cluster, operation, s))
                for s in reversed(steps)
                if s.reversible and s.status in (StepStatus.SUCCEEDED, StepStatus.RUNNING)
            ]
        for name, ctx in todo:
            await driver.undo(ctx)
            async with unit_of_work(self._sessions) as session:
                await self._hold(session, operation_id)
                operation = await session.get(Operation, operation_id)
                step = await session.get(
                    OperationStep, (operation_id, _position(name)), populate_existing=True
                )
                assert operation is not None and step is not None
                step.status = StepStatus.ROLLED_BACK.value
                step.finished_at = utcnow()
                await self._step_event(session, operation, step)

        async with unit_of_work(self._sessions) as session:
            await self._hold(session, operation_id)
            operation = await session.get(Operation, operation_id, populate_existing=True)
            assert operation is not None
            for step in await steps_of(session, operation_id):
                if step.status == StepStatus.PENDING.value:
                    step.status = StepStatus.SKIPPED.value
            rules = RULES[OperationKind(operation.kind)]
            await apply_transition(session, operation.cluster_id, rules.rolled_back, operation.id)
            failed = reason is not None
            operation.status = (
                OperationStatus.FAILED.value if failed else OperationStatus.CANCELLED.value
            )
            operation.done = True
            operation.finished_at = utcnow()
            operation.updated_at = operation.finished_at
            if reason is not None:
                operation.error = {
                    "type": "https://tandem.dev/problems/step-failed",
                    "title": "Step failed; the operation was rolled back",
                    "status": 500,
                    **reason,
                }
            await session.flush()
            await emit_event(
                session,
                operation.cluster_id,
                "operation.failed" if failed else "operation.cancelled",
                {"operation_id": operation.id, "kind": operation.kind, "rolled_back": True},
            )
        await self._changed(operation_id)


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


def _position(step_name: str) -> int:
    from app.domain.plans import STEP_NAMES

    return STEP_NAMES.index(step_name)
