"""Operation kinds, statuses and plans: which steps a failover or failback runs, in order.

A plan is data: an ordered list of steps, each naming the action that carries it out, an
optional undo, whether it is the point of no return, whether a forced operation skips it,
its deadline and how many transient failures it absorbs. A pair registered with a
`driver` runs the default plan of DESIGN.md section 2, every step through that driver's
action.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from app.domain.states import ClusterState, Trigger


class OperationKind(StrEnum):
    FAILOVER = "failover"
    FAILBACK = "failback"
    # Changes no state: the retry of the deployments whose last validation failed.
    RETRY_DEPLOYMENTS = "retry_deployments"
    # Changes no state: a rehearsal of the failover (or failback) the pair allows next.
    DRILL = "drill"


class Lane(StrEnum):
    """A pair has at most one unfinished operation per lane; the two never run side by
    side: a switch asked for cancels the side operation and waits for its end."""

    SWITCH = "switch"
    SIDE = "side"


def lane_of(kind: str) -> Lane:
    return Lane.SWITCH if kind in (OperationKind.FAILOVER, OperationKind.FAILBACK) else Lane.SIDE


class Mode(StrEnum):
    PLANNED = "planned"
    FORCED = "forced"


class OperationStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


UNFINISHED = frozenset(
    {OperationStatus.QUEUED, OperationStatus.RUNNING, OperationStatus.CANCELLING}
)
FINISHED = frozenset(set(OperationStatus) - UNFINISHED)


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    # Waiting for a person's approval, nothing else: a polling step stays `running`.
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    ROLLED_BACK = "rolled_back"


# Transient failures a step absorbs (retried with backoff inside its deadline).
DEFAULT_RETRIES = 3
# Deadline of a step, per action kind, when the plan gives none (DESIGN.md section 8).
DEFAULT_TIMEOUT_S: dict[str, float] = {
    "http": 300,
    "check": 600,
    "approval": 3600,
    "postgres": 600,
    "deployments": 60,
    "simulated": 300,
}
MAX_TIMEOUT_S = 7 * 24 * 3600


@dataclass(frozen=True)
class StepPlan:
    name: str
    action: dict[str, Any]
    # One action, or (in the default plan) several undone together.
    undo: dict[str, Any] | list[dict[str, Any]] | None = None
    point_of_no_return: bool = False
    skip_when_forced: bool = False
    # Its end is when traffic moved: measured_rto_s counts up to it.
    traffic_switched: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S["simulated"]
    retries: int = DEFAULT_RETRIES
    # A step with several actions runs them all at once (`parallel` in a plan).
    parallel: tuple[dict[str, Any], ...] = field(default=())
    # What the step runs in a drill instead of its action (DESIGN.md section 14).
    drill: dict[str, Any] | None = None
    # In a drill's own plan (app.domain.drills): how the drill rehearses the step
    # (`drill`, `probe`, `skipped`); None in every other operation.
    rehearsal: str | None = None
    # One of the plan's `cleanup` steps, run at the end of a drill whatever its outcome.
    cleanup: bool = False

    def actions(self) -> list[dict[str, Any]]:
        return list(self.parallel) if self.parallel else [self.action]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["parallel"] = list(self.parallel)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepPlan:
        return cls(**{**data, "parallel": tuple(data.get("parallel") or ())})


# The default plan of DESIGN.md section 2: (name, skipped when forced). promote_target is
# the point of no return; every step before it is undone by its own action on rollback.
DEFAULT_STEPS: tuple[tuple[str, bool], ...] = (
    ("preflight", False),
    ("pause_schedulers", True),
    ("drain_replication", True),
    ("promote_target", False),
    ("switch_traffic", False),
    ("validate_deployments", False),
    ("resume_schedulers", False),
)
POINT_OF_NO_RETURN = "promote_target"
STEP_NAMES = tuple(name for name, _ in DEFAULT_STEPS)


VALIDATE_DEPLOYMENTS = "validate_deployments"


PAUSE_SCHEDULERS, RESUME_SCHEDULERS = "pause_schedulers", "resume_schedulers"


def default_plan(
    driver: dict[str, Any], validates_deployments: bool = False, pauses_deployments: bool = False
) -> list[StepPlan]:
    """The default plan, every step carried out by the pair's driver (an action kind);
    `validate_deployments` runs the `deployments` action instead when the pair's
    deployments have health checks (checking health changes nothing, whatever the driver)."""
    kind = str(driver.get("kind", "simulated"))
    delay_s = float(driver.get("step_delay_ms", 0)) / 1000
    timeouts: dict[str, float] = dict(driver.get("timeout_s") or {})
    # A simulated step may take its delay twice (the effect, then an undo): never less.
    fallback = max(DEFAULT_TIMEOUT_S.get(kind, 300), 2 * delay_s)
    before = True
    steps = []
    for name, skip_when_forced in DEFAULT_STEPS:
        if name == POINT_OF_NO_RETURN:
            before = False
        if name == VALIDATE_DEPLOYMENTS and validates_deployments:
            steps.append(
                StepPlan(
                    name=name,
                    action={"kind": "deployments"},
                    timeout_s=float(timeouts.get(name, DEFAULT_TIMEOUT_S["deployments"])),
                )
            )
            continue
        if pauses_deployments and name in (PAUSE_SCHEDULERS, RESUME_SCHEDULERS):
            # The deployments that can pause (Airflow) pause and resume beside the driver.
            pause = name == PAUSE_SCHEDULERS
            ours = {"kind": "deployments", "do": "pause" if pause else "resume"}
            steps.append(
                StepPlan(
                    name=name,
                    action=dict(driver),
                    parallel=(dict(driver), ours),
                    undo=[dict(driver), {"kind": "deployments", "do": "unpause"}]
                    if pause
                    else None,
                    skip_when_forced=skip_when_forced,
                    timeout_s=float(timeouts.get(name, fallback)),
                )
            )
            continue
        steps.append(
            StepPlan(
                name=name,
                action=dict(driver),
                undo=dict(driver) if before else None,
                point_of_no_return=name == POINT_OF_NO_RETURN,
                skip_when_forced=skip_when_forced,
                traffic_switched=name == "switch_traffic",
                timeout_s=float(timeouts.get(name, fallback)),
            )
        )
    return steps


def _step(spec: dict[str, Any]) -> StepPlan:
    actions = list(spec.get("parallel") or []) or [spec["action"]]
    kinds = [str(a.get("kind")) for a in actions]
    timeout = spec.get("timeout_s") or max(DEFAULT_TIMEOUT_S.get(k, 300) for k in kinds)
    return StepPlan(
        name=spec["name"],
        action=actions[0],
        undo=spec.get("undo"),
        point_of_no_return=bool(spec.get("point_of_no_return")),
        skip_when_forced=bool(spec.get("skip_when_forced")),
        traffic_switched=bool(spec.get("traffic_switched")),
        timeout_s=float(timeout),
        retries=int(spec["retries"]) if spec.get("retries") is not None else DEFAULT_RETRIES,
        parallel=tuple(spec.get("parallel") or ()),
        drill=spec.get("drill"),
    )


def cleanup_steps(plan: dict[str, Any] | None) -> list[StepPlan]:
    """The plan's `cleanup` steps (run at the end of a drill), as steps marked cleanup."""
    return [replace(_step(spec), cleanup=True) for spec in (plan or {}).get("cleanup") or []]


def plan_for(
    driver: dict[str, Any],
    plan: dict[str, Any] | None,
    kind: str,
    deployments: list[dict[str, Any]] | None = None,
) -> list[StepPlan]:
    """The steps an operation of `kind` runs on a pair: its own plan (failback runs
    `failback_steps` if given, else `steps` with source and target swapped) or the
    default plan through its driver."""
    if not plan:
        checked = any(d.get("health") or d.get("kind") == "airflow" for d in deployments or [])
        pauses = any(d.get("kind") == "airflow" for d in deployments or [])
        return default_plan(driver, checked, pauses)
    specs = plan.get("failback_steps") if kind == OperationKind.FAILBACK else None
    return [_step(spec) for spec in specs or plan["steps"]]


def measured_rto_s(
    created_at: datetime, steps: list[tuple[bool, datetime | None]], finished_at: datetime
) -> float:
    """From creation to the end of the step that switched traffic (`traffic_switched`),
    or to the end of the operation when no such step ran."""
    switched = next((end for marked, end in steps if marked and end is not None), None)
    return round(((switched or finished_at) - created_at).total_seconds(), 3)


def measured_data_loss(outputs: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The data loss an action measured (its output's `data_loss`: bytes, seconds)."""
    for output in outputs:
        loss = (output or {}).get("data_loss")
        if isinstance(loss, dict):
            return {"bytes": loss.get("bytes"), "seconds": loss.get("seconds")}
    return None


def retry_plan(names: list[str]) -> list[StepPlan]:
    """retry_deployments: each named deployment's retry action, then its health again.
    Nothing to undo, and no point of no return: a failover asked for meanwhile cancels it."""
    return [
        StepPlan(
            name="retry",
            action={"kind": "deployments", "do": "retry", "names": names},
            timeout_s=DEFAULT_TIMEOUT_S["http"],
        ),
        StepPlan(
            name="validate",
            action={"kind": "deployments", "do": "revalidate", "names": names},
            timeout_s=DEFAULT_TIMEOUT_S["deployments"],
        ),
    ]


def reversible(plan: list[StepPlan]) -> list[bool]:
    """Steps before the point of no return can be rolled back; it and those after cannot."""
    flags, before = [], True
    for step in plan:
        before = before and not step.point_of_no_return
        flags.append(before)
    return flags


def initial_status(step: StepPlan, mode: Mode) -> StepStatus:
    return (
        StepStatus.SKIPPED if mode is Mode.FORCED and step.skip_when_forced else StepStatus.PENDING
    )


@dataclass(frozen=True)
class KindRules:
    origin: ClusterState
    target: ClusterState
    accepted: Trigger
    succeeded: Trigger
    rolled_back: Trigger


RULES: dict[OperationKind, KindRules] = {
    OperationKind.FAILOVER: KindRules(
        origin=ClusterState.PRIMARY_ACTIVE,
        target=ClusterState.SECONDARY_ACTIVE,
        accepted=Trigger.FAILOVER_ACCEPTED,
        succeeded=Trigger.FAILOVER_SUCCEEDED,
        rolled_back=Trigger.FAILOVER_ROLLED_BACK,
    ),
    OperationKind.FAILBACK: KindRules(
        origin=ClusterState.SECONDARY_ACTIVE,
        target=ClusterState.PRIMARY_ACTIVE,
        accepted=Trigger.FAILBACK_ACCEPTED,
        succeeded=Trigger.FAILBACK_SUCCEEDED,
        rolled_back=Trigger.FAILBACK_ROLLED_BACK,
    ),
}
