"""The default plan as data: steps, the point of no return, skips, deadlines."""

from __future__ import annotations

import pytest

from app.domain.plans import (
    DEFAULT_TIMEOUT_S,
    RULES,
    STEP_NAMES,
    Mode,
    OperationKind,
    StepPlan,
    StepStatus,
    default_plan,
    initial_status,
    reversible,
)
from app.domain.states import ClusterState, Trigger, next_state

SIMULATED = {"kind": "simulated", "step_delay_ms": 0}


def test_default_plan_has_the_seven_design_steps_in_order() -> None:
    assert [s.name for s in default_plan(SIMULATED)] == [
        "preflight",
        "pause_schedulers",
        "drain_replication",
        "promote_target",
        "switch_traffic",
        "validate_deployments",
        "resume_schedulers",
    ]
    assert tuple(s.name for s in default_plan(SIMULATED)) == STEP_NAMES


def test_promote_target_is_the_one_point_of_no_return() -> None:
    plan = default_plan(SIMULATED)
    assert [s.name for s in plan if s.point_of_no_return] == ["promote_target"]
    assert reversible(plan) == [True, True, True, False, False, False, False]


def test_steps_before_the_point_of_no_return_undo_with_the_driver() -> None:
    plan = default_plan(SIMULATED)
    assert [s.undo is not None for s in plan] == reversible(plan)
    assert all(s.action == SIMULATED for s in plan)


def test_forced_skips_only_the_source_side_steps() -> None:
    plan = default_plan(SIMULATED)
    skipped = [s.name for s in plan if initial_status(s, Mode.FORCED) is StepStatus.SKIPPED]
    assert skipped == ["pause_schedulers", "drain_replication"]
    assert all(initial_status(s, Mode.PLANNED) is StepStatus.PENDING for s in plan)


def test_every_step_has_a_deadline_and_the_driver_may_set_one() -> None:
    plan = default_plan({**SIMULATED, "timeout_s": {"switch_traffic": 1.5}})
    deadlines = {s.name: s.timeout_s for s in plan}
    assert deadlines["switch_traffic"] == 1.5
    assert deadlines["preflight"] == DEFAULT_TIMEOUT_S["simulated"]


def test_a_slow_simulated_step_gets_twice_its_delay() -> None:
    plan = default_plan({**SIMULATED, "step_delay_ms": 400_000})
    assert {s.timeout_s for s in plan} == {800.0}


def test_a_step_plan_survives_its_json_form() -> None:
    step = StepPlan(
        name="validate",
        action={"kind": "check"},
        parallel=({"kind": "check", "urls": ["a"]}, {"kind": "check", "urls": ["b"]}),
        timeout_s=12,
    )
    assert StepPlan.from_dict(step.to_dict()) == step
    assert step.actions() == [{"kind": "check", "urls": ["a"]}, {"kind": "check", "urls": ["b"]}]


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
