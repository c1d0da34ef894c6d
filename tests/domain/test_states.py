"""The state machine table, checked against DESIGN.md section 1 written out independently."""

from __future__ import annotations

import itertools

import pytest

from app.domain.states import (
    ClusterState,
    TransitionRefused,
    Trigger,
    allowed_actions,
    next_state,
    serves_from_primary,
)

# DESIGN.md section 1, by value, so that a change to the table in app/domain/states.py
# (or to the state and trigger strings) fails here.
DESIGN_TABLE: dict[tuple[str, str], str] = {
    ("primary-active", "failover_accepted"): "failing-over",
    ("failing-over", "failover_succeeded"): "secondary-active",
    ("failing-over", "failover_rolled_back"): "primary-active",
    ("secondary-active", "failback_accepted"): "failing-back",
    ("failing-back", "failback_succeeded"): "primary-active",
    ("failing-back", "failback_rolled_back"): "secondary-active",
}
DESIGN_STATES = ("primary-active", "failing-over", "secondary-active", "failing-back")
DESIGN_TRIGGERS = (
    "failover_accepted",
    "failover_succeeded",
    "failover_rolled_back",
    "failback_accepted",
    "failback_succeeded",
    "failback_rolled_back",
)
REFUSED = [
    pair for pair in itertools.product(DESIGN_STATES, DESIGN_TRIGGERS) if pair not in DESIGN_TABLE
]


def test_states_are_exactly_the_design_strings() -> None:
    assert sorted(s.value for s in ClusterState) == sorted(DESIGN_STATES)


def test_triggers_are_exactly_the_design_triggers() -> None:
    assert sorted(t.value for t in Trigger) == sorted(DESIGN_TRIGGERS)


def test_refused_pairs_cover_the_rest_of_the_cross_product() -> None:
    assert len(REFUSED) == len(DESIGN_STATES) * len(DESIGN_TRIGGERS) - len(DESIGN_TABLE) == 18


@pytest.mark.parametrize(("edge", "to"), list(DESIGN_TABLE.items()), ids=lambda v: str(v))
def test_allowed_transition(edge: tuple[str, str], to: str) -> None:
    state, trigger = edge
    result = next_state(ClusterState(state), Trigger(trigger))
    assert result is ClusterState(to)
    # The plain string form of the state (as stored in the database) works too.
    assert next_state(state, Trigger(trigger)) is ClusterState(to)


@pytest.mark.parametrize(("state", "trigger"), REFUSED)
def test_refused_transition(state: str, trigger: str) -> None:
    with pytest.raises(TransitionRefused) as refused:
        next_state(state, Trigger(trigger))
    assert refused.value.state is ClusterState(state)
    assert refused.value.trigger is Trigger(trigger)
    assert state in str(refused.value) and trigger in str(refused.value)


def test_unknown_state_is_not_a_state() -> None:
    with pytest.raises(ValueError):
        next_state("half-active", Trigger.FAILOVER_ACCEPTED)


@pytest.mark.parametrize(
    ("state", "actions"),
    [
        ("primary-active", ["failover"]),
        ("failing-over", ["cancel", "retry"]),
        ("secondary-active", ["failback"]),
        ("failing-back", ["cancel", "retry"]),
    ],
)
def test_allowed_actions(state: str, actions: list[str]) -> None:
    assert allowed_actions(state) == actions
    assert allowed_actions(ClusterState(state)) == actions


def test_allowed_actions_returns_a_fresh_list() -> None:
    allowed_actions("primary-active").append("failback")
    assert allowed_actions("primary-active") == ["failover"]


@pytest.mark.parametrize(
    ("state", "primary"),
    [
        ("primary-active", True),
        ("failing-over", True),
        ("secondary-active", False),
        ("failing-back", False),
    ],
)
def test_serves_from_primary(state: str, primary: bool) -> None:
    assert serves_from_primary(state) is primary
    assert serves_from_primary(ClusterState(state)) is primary
