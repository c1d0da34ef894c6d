"""Plans and per-kind rules, against DESIGN.md section 2."""

from __future__ import annotations

import pytest

from app.domain.plans import (
    POINT_OF_NO_RETURN,
    RULES,
    STEP_NAMES,
    Mode,
    OperationKind,
    StepStatus,
    is_reversible,
    plan,
)
from app.domain.states import ClusterState, Trigger, next_state

DESIGN_STEPS = [
    "preflight",
    "pause_schedulers",
    "drain_replication",
    "promote_target",
    "switch_traffic",
    "validate_deployments",
    "resume_schedulers",
]


def test_planned_plan_has_the_seven_design_steps_in_order() -> None:
    steps = plan(Mode.PLANNED)
    assert [s.name for s in steps] == DESIGN_STEPS
    assert list(STEP_NAMES) == DESIGN_STEPS
    assert all(s.status is StepStatus.PENDING for s in steps)


@pytest.mark.parametrize("mode", list(Mode))
def test_promote_target_is_the_point_of_no_return(mode: Mode) -> None:
    steps = plan(mode)
    assert POINT_OF_NO_RETURN == "promote_target"
    first_irreversible = next(i for i, s in enumerate(steps) if not s.reversible)
    assert steps[first_irreversible].name == "promote_target"
    assert all(s.reversible for s in steps[:first_irreversible])
    assert not any(s.reversible for s in steps[first_irreversible:])


@pytest.mark.parametrize("name", DESIGN_STEPS)
def test_is_reversible_matches_the_plan(name: str) -> None:
    expected = DESIGN_STEPS.index(name) < DESIGN_STEPS.index("promote_target")
    assert is_reversible(name) is expected
    assert next(s for s in plan(Mode.PLANNED) if s.name == name).reversible is expected


def test_forced_plan_skips_only_the_source_side_steps() -> None:
    steps = plan(Mode.FORCED)
    assert [s.name for s in steps] == DESIGN_STEPS
    skipped = [s.name for s in steps if s.status is StepStatus.SKIPPED]
    assert skipped == ["pause_schedulers", "drain_replication"]
    assert all(
        s.status is StepStatus.PENDING
        for s in steps
        if s.name not in ("pause_schedulers", "drain_replication")
    )


def test_forced_plan_keeps_reversibility() -> None:
    assert [s.reversible for s in plan(Mode.FORCED)] == [s.reversible for s in plan(Mode.PLANNED)]


def test_plan_returns_a_new_list_each_time() -> None:
    first = plan(Mode.PLANNED)
    first.clear()
    assert len(plan(Mode.PLANNED)) == 7


def test_rules_cover_both_kinds() -> None:
    assert set(RULES) == {OperationKind.FAILOVER, OperationKind.FAILBACK}


def test_failover_rules() -> None:
    rules = RULES[OperationKind.FAILOVER]
    assert rules.origin is ClusterState.PRIMARY_ACTIVE
    assert rules.target is ClusterState.SECONDARY_ACTIVE
    assert rules.accepted is Trigger.FAILOVER_ACCEPTED
    assert rules.succeeded is Trigger.FAILOVER_SUCCEEDED
    assert rules.rolled_back is Trigger.FAILOVER_ROLLED_BACK


def test_failback_rules() -> None:
    rules = RULES[OperationKind.FAILBACK]
    assert rules.origin is ClusterState.SECONDARY_ACTIVE
    assert rules.target is ClusterState.PRIMARY_ACTIVE
    assert rules.accepted is Trigger.FAILBACK_ACCEPTED
    assert rules.succeeded is Trigger.FAILBACK_SUCCEEDED
    assert rules.rolled_back is Trigger.FAILBACK_ROLLED_BACK


@pytest.mark.parametrize(
    ("kind", "switching"),
    [(OperationKind.FAILOVER, "failing-over"), (OperationKind.FAILBACK, "failing-back")],
)
def test_rules_walk_the_state_machine(kind: OperationKind, switching: str) -> None:
    rules = RULES[kind]
    during = next_state(rules.origin, rules.accepted)
    assert during is ClusterState(switching)
    assert next_state(during, rules.succeeded) is rules.target
    assert next_state(during, rules.rolled_back) is rules.origin
