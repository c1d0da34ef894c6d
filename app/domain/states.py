"""The cluster state machine: one table of (from, trigger) -> to, and nothing else.

`apply_transition` in app/services/transitions.py is the one place that writes a
cluster's state; it asks `next_state` here first.
"""

from __future__ import annotations

from enum import StrEnum


class ClusterState(StrEnum):
    PRIMARY_ACTIVE = "primary-active"
    FAILING_OVER = "failing-over"
    SECONDARY_ACTIVE = "secondary-active"
    FAILING_BACK = "failing-back"


class Trigger(StrEnum):
    FAILOVER_ACCEPTED = "failover_accepted"
    FAILOVER_SUCCEEDED = "failover_succeeded"
    FAILOVER_ROLLED_BACK = "failover_rolled_back"
    FAILBACK_ACCEPTED = "failback_accepted"
    FAILBACK_SUCCEEDED = "failback_succeeded"
    FAILBACK_ROLLED_BACK = "failback_rolled_back"


S, T = ClusterState, Trigger

TRANSITIONS: dict[tuple[ClusterState, Trigger], ClusterState] = {
    (S.PRIMARY_ACTIVE, T.FAILOVER_ACCEPTED): S.FAILING_OVER,
    (S.FAILING_OVER, T.FAILOVER_SUCCEEDED): S.SECONDARY_ACTIVE,
    (S.FAILING_OVER, T.FAILOVER_ROLLED_BACK): S.PRIMARY_ACTIVE,
    (S.SECONDARY_ACTIVE, T.FAILBACK_ACCEPTED): S.FAILING_BACK,
    (S.FAILING_BACK, T.FAILBACK_SUCCEEDED): S.PRIMARY_ACTIVE,
    (S.FAILING_BACK, T.FAILBACK_ROLLED_BACK): S.SECONDARY_ACTIVE,
}

# What an operator may ask for in each state, for 409 bodies and the web page.
ALLOWED_ACTIONS: dict[ClusterState, tuple[str, ...]] = {
    S.PRIMARY_ACTIVE: ("failover",),
    S.FAILING_OVER: ("cancel", "retry"),
    S.SECONDARY_ACTIVE: ("failback",),
    S.FAILING_BACK: ("cancel", "retry"),
}

# Steady states where the primary's region serves traffic; the others serve from the
# secondary's. active_region switches only when an operation commits.
PRIMARY_SERVES = frozenset({S.PRIMARY_ACTIVE, S.FAILING_OVER})


class TransitionRefused(Exception):
    def __init__(self, state: ClusterState, trigger: Trigger) -> None:
        super().__init__(f"{trigger.value} is not allowed in state {state.value}")
        self.state = state
        self.trigger = trigger


def next_state(state: ClusterState | str, trigger: Trigger) -> ClusterState:
    current = ClusterState(state)
    try:
        return TRANSITIONS[(current, trigger)]
    except KeyError:
        raise TransitionRefused(current, trigger) from None


def allowed_actions(state: ClusterState | str) -> list[str]:
    return list(ALLOWED_ACTIONS[ClusterState(state)])


def serves_from_primary(state: ClusterState | str) -> bool:
    return ClusterState(state) in PRIMARY_SERVES
