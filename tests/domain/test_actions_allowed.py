"""allowed_actions of a pair: its state's actions, narrowed by what its operation allows."""

from __future__ import annotations

import pytest

from app.domain.actions_allowed import OperationView, pair_actions
from app.domain.plans import OperationStatus as S
from app.domain.states import ClusterState


def op(status: S, *, past: bool = False, attention: bool = False) -> OperationView:
    return OperationView(status, past_point_of_no_return=past, needs_attention=attention)


@pytest.mark.parametrize("state", [ClusterState.FAILING_OVER, ClusterState.FAILING_BACK])
@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        (op(S.QUEUED), ["cancel"]),
        (op(S.RUNNING), ["cancel"]),
        (op(S.RUNNING, past=True), []),
        (op(S.QUEUED, past=True), []),  # a retried operation resuming past the point
        (op(S.CANCELLING), []),
        (op(S.FAILED, attention=True), ["retry"]),
        (op(S.FAILED, past=True, attention=True), ["retry"]),
        (op(S.FAILED), []),
        (None, []),
    ],
)
def test_a_pair_mid_switch_allows_what_its_operation_allows(
    state: ClusterState, operation: OperationView | None, expected: list[str]
) -> None:
    assert pair_actions(state, operation) == expected


@pytest.mark.parametrize(
    ("state", "expected"),
    [(ClusterState.PRIMARY_ACTIVE, ["failover"]), (ClusterState.SECONDARY_ACTIVE, ["failback"])],
)
@pytest.mark.parametrize(
    "operation", [None, op(S.SUCCEEDED), op(S.CANCELLED), op(S.FAILED), op(S.SUCCEEDED, past=True)]
)
def test_a_steady_pair_allows_its_states_action(
    state: ClusterState, expected: list[str], operation: OperationView | None
) -> None:
    assert pair_actions(state.value, operation) == expected
