"""The next-move function, table-driven: every operation status x every step status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.domain.plans import OperationStatus, StepStatus
from app.domain.progress import (
    Call,
    EndRollback,
    Idle,
    Move,
    OperationView,
    Start,
    StepView,
    Succeed,
    TimeOut,
    Undo,
    Wait,
    after_failure,
    next_move,
    wake_time,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=30)
EARLIER = NOW - timedelta(seconds=1)
Op, St = OperationStatus, StepStatus


def one_step(status: Op, step: St, *, reversible: bool = True) -> OperationView:
    """A reversible step first, then a pending irreversible one."""
    return OperationView(
        status=status,
        steps=[StepView(step, reversible=reversible), StepView(St.PENDING, reversible=False)],
    )


FORWARD = {
    St.PENDING: Start(0),
    St.RUNNING: Call(0),
    St.WAITING: Call(0),
    St.SUCCEEDED: Start(1),
    St.SKIPPED: Start(1),
    St.FAILED: Idle(),
    St.ROLLED_BACK: Start(1),
}
BACKWARD = {
    St.PENDING: EndRollback(),
    St.RUNNING: Undo(0),
    St.WAITING: Undo(0),
    St.SUCCEEDED: Undo(0),
    St.SKIPPED: EndRollback(),
    St.FAILED: EndRollback(),
    St.ROLLED_BACK: EndRollback(),
}
EXPECTED: dict[tuple[Op, St], Move] = {}
for step_status in St:
    EXPECTED[(Op.QUEUED, step_status)] = FORWARD[step_status]
    EXPECTED[(Op.RUNNING, step_status)] = FORWARD[step_status]
    EXPECTED[(Op.CANCELLING, step_status)] = BACKWARD[step_status]
    for finished in (Op.SUCCEEDED, Op.FAILED, Op.CANCELLED):
        EXPECTED[(finished, step_status)] = Idle()


def test_the_table_covers_every_pair() -> None:
    assert len(EXPECTED) == len(Op) * len(St)


@pytest.mark.parametrize(("status", "step"), sorted(EXPECTED), ids=lambda v: str(v))
def test_next_move(status: Op, step: St) -> None:
    assert next_move(one_step(status, step), NOW) == EXPECTED[(status, step)]


@pytest.mark.parametrize("step", [St.RUNNING, St.WAITING])
def test_a_step_past_its_deadline_times_out(step: St) -> None:
    view = OperationView(Op.RUNNING, [StepView(step, True, deadline_at=EARLIER)])
    assert next_move(view, NOW) == TimeOut(0)
    assert next_move(view, EARLIER - timedelta(seconds=1)) == Call(0)


def test_the_deadline_is_reached_at_its_instant() -> None:
    view = OperationView(Op.RUNNING, [StepView(St.RUNNING, False, deadline_at=NOW)])
    assert next_move(view, NOW) == TimeOut(0)


def test_a_parked_step_waits_until_its_wake_time_then_is_called() -> None:
    view = OperationView(Op.RUNNING, [StepView(St.RUNNING, True, LATER)], wake_at=LATER)
    assert next_move(view, NOW) == Wait(LATER)
    assert next_move(view, LATER) == TimeOut(0)
    view = OperationView(Op.RUNNING, [StepView(St.RUNNING, True)], wake_at=EARLIER)
    assert next_move(view, NOW) == Call(0)


def test_a_rollback_undoes_newest_first_and_only_reversible_steps() -> None:
    view = OperationView(
        Op.CANCELLING,
        [
            StepView(St.SUCCEEDED, True),
            StepView(St.SKIPPED, True),
            StepView(St.SUCCEEDED, True),
            StepView(St.FAILED, True),
            StepView(St.PENDING, False),
        ],
    )
    assert next_move(view, NOW) == Undo(2)
    undone = [view.steps[0], view.steps[1], StepView(St.ROLLED_BACK, True), *view.steps[3:]]
    assert next_move(OperationView(Op.CANCELLING, undone), NOW) == Undo(0)


def test_a_parked_undo_waits() -> None:
    view = OperationView(Op.CANCELLING, [StepView(St.SUCCEEDED, True)], wake_at=LATER)
    assert next_move(view, NOW) == Wait(LATER)


def test_irreversible_steps_are_never_undone() -> None:
    view = OperationView(Op.CANCELLING, [StepView(St.SUCCEEDED, False)])
    assert next_move(view, NOW) == EndRollback()


def test_all_steps_done_succeeds() -> None:
    view = OperationView(Op.RUNNING, [StepView(St.SUCCEEDED, True), StepView(St.SKIPPED, False)])
    assert next_move(view, NOW) == Succeed()


def test_after_failure_rolls_back_before_the_point_of_no_return_only() -> None:
    assert after_failure(StepView(St.FAILED, reversible=True)) is Op.CANCELLING
    assert after_failure(StepView(St.FAILED, reversible=False)) is Op.FAILED


def test_wake_time_never_passes_the_deadline() -> None:
    assert wake_time(LATER, NOW) == NOW
    assert wake_time(NOW, LATER) == NOW
    assert wake_time(LATER, None) == LATER
