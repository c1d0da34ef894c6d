"""What an operator may ask of a pair now: its state's actions, narrowed mid-switch by what
its operation really allows.

A pair mid-switch (failing over or back) has an operation that is unfinished or failed:
- queued or running, before the point of no return: it can be cancelled;
- past the point of no return, or already cancelling: nothing, it runs to its end;
- failed and needing attention (it left the pair mid-switch): it can be retried;
- anything else: nothing.
A steady pair offers its state's actions (failover or failback).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.domain.plans import OperationStatus
from app.domain.states import ALLOWED_ACTIONS, ClusterState

CANCEL, RETRY = "cancel", "retry"
MID_SWITCH = frozenset({ClusterState.FAILING_OVER, ClusterState.FAILING_BACK})
CANCELLABLE = frozenset({OperationStatus.QUEUED, OperationStatus.RUNNING})


@dataclass(frozen=True)
class OperationView:
    """What of a pair's last operation decides the actions it allows."""

    status: OperationStatus
    past_point_of_no_return: bool
    needs_attention: bool


def pair_actions(state: ClusterState | str, operation: OperationView | None) -> list[str]:
    """The actions a pair in `state`, whose last operation is `operation`, allows now."""
    current = ClusterState(state)
    if current not in MID_SWITCH:
        return list(ALLOWED_ACTIONS[current])
    if operation is None:
        return []
    if operation.status in CANCELLABLE and not operation.past_point_of_no_return:
        return [CANCEL]
    if operation.status == OperationStatus.FAILED and operation.needs_attention:
        return [RETRY]
    return []
