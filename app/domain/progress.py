"""What an operation does next, given where it stands: a pure function, no I/O.

The executor (app/operations/executor.py) reads the operation and its steps, asks
`next_move`, carries the move out, writes the outcome, and asks again. Every path —
forward, waiting, timing out, rolling back — is decided here, so it is tested here
without a database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from app.domain.plans import FINISHED, OperationStatus, StepStatus

# A step in any of these has started and not ended.
ACTIVE = frozenset({StepStatus.RUNNING, StepStatus.WAITING})
# Reversible steps in these may have left an effect behind: a rollback undoes them.
UNDOABLE = frozenset({StepStatus.SUCCEEDED, StepStatus.RUNNING, StepStatus.WAITING})


@dataclass(frozen=True)
class StepView:
    status: StepStatus
    reversible: bool
    deadline_at: datetime | None = None
    # A drill's cleanup step: it runs at the end, also after a failure or a cancel.
    cleanup: bool = False


@dataclass(frozen=True)
class OperationView:
    status: OperationStatus
    steps: Sequence[StepView]
    # The current step (or undo) asked to be called again then; None: call it now.
    wake_at: datetime | None = None


@dataclass(frozen=True)
class Idle:
    """The operation is finished: nothing to do."""


@dataclass(frozen=True)
class Wait:
    """Give the worker slot back; run again at `until`."""

    until: datetime


@dataclass(frozen=True)
class Start:
    """Mark the step running (a new attempt, a new deadline), then call its action."""

    index: int


@dataclass(frozen=True)
class Call:
    """The step is running: call its action (again, with the same attempt)."""

    index: int


@dataclass(frozen=True)
class TimeOut:
    """The step's deadline has passed: it fails with `step_timed_out`."""

    index: int


@dataclass(frozen=True)
class Undo:
    """Rolling back: undo this step (newest first)."""

    index: int


@dataclass(frozen=True)
class Succeed:
    """Every step succeeded or was skipped: the pair reaches the target state."""


@dataclass(frozen=True)
class EndRollback:
    """Nothing left to undo: the pair is back at its origin."""


@dataclass(frozen=True)
class SkipRest:
    """A drill stops rehearsing (a step failed, or it is being cancelled): the steps it
    has not finished are skipped, and its cleanup runs."""

    indexes: tuple[int, ...]


@dataclass(frozen=True)
class EndDrill:
    """A drill's cleanup has run: it ends (succeeded, failed or cancelled)."""


Move = Idle | Wait | Start | Call | TimeOut | Undo | Succeed | EndRollback | SkipRest | EndDrill


def next_move(operation: OperationView, now: datetime) -> Move:
    status = operation.status
    steps = operation.steps
    if status in FINISHED:
        return Idle()
    waiting = operation.wake_at is not None and operation.wake_at > now
    if status is OperationStatus.CANCELLING:
        for index in reversed(range(len(steps))):
            step = steps[index]
            if step.reversible and step.status in UNDOABLE:
                return Wait(operation.wake_at) if waiting else Undo(index)  # type: ignore[arg-type]
        return EndRollback()
    for index, step in enumerate(steps):
        if step.status is StepStatus.PENDING:
            return Start(index)
        if step.status in ACTIVE:
            if step.deadline_at is not None and now >= step.deadline_at:
                return TimeOut(index)
            return Wait(operation.wake_at) if waiting else Call(index)  # type: ignore[arg-type]
        if step.status is StepStatus.FAILED:
            # Only a retry (which resets the step to pending) moves past a failed step.
            return Idle()
    return Succeed()


def after_failure(step: StepView) -> OperationStatus:
    """A step failed: before the point of no return the operation rolls back
    (`cancelling`); from it on it stops `failed` and needs a person."""
    return OperationStatus.CANCELLING if step.reversible else OperationStatus.FAILED


def wake_time(asked: datetime, deadline_at: datetime | None) -> datetime:
    """When to run again: as asked, but never after the step's deadline."""
    return asked if deadline_at is None else min(asked, deadline_at)


def next_drill_move(operation: OperationView, now: datetime) -> Move:
    """A drill: its steps in order, never an undo; once a step has failed or a cancel came,
    the steps not yet done are skipped; the cleanup steps run in any case, each whatever
    the one before did; then it ends."""
    status, steps = operation.status, operation.steps
    if status in FINISHED:
        return Idle()
    waiting = operation.wake_at is not None and operation.wake_at > now
    rehearsal = [i for i, step in enumerate(steps) if not step.cleanup]
    if status is OperationStatus.CANCELLING or any(
        steps[i].status is StepStatus.FAILED for i in rehearsal
    ):
        unfinished = ACTIVE | {StepStatus.PENDING}
        left = tuple(i for i in rehearsal if steps[i].status in unfinished)
        if left:
            return SkipRest(left)
    for index, step in enumerate(steps):
        if step.status is StepStatus.PENDING:
            return Start(index)
        if step.status in ACTIVE:
            if step.deadline_at is not None and now >= step.deadline_at:
                return TimeOut(index)
            return Wait(operation.wake_at) if waiting else Call(index)  # type: ignore[arg-type]
    return EndDrill()
