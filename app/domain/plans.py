"""Operation kinds, modes and plans: which steps a failover or failback runs, in order."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.domain.states import ClusterState, Trigger


class OperationKind(StrEnum):
    FAILOVER = "failover"
    FAILBACK = "failback"


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


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class StepSpec:
    name: str
    reversible: bool
    # Source-side steps that cannot run when the source is unreachable.
    skipped_when_forced: bool = False


# promote_target is the point of no return: every step from it on is irreversible.
STEPS: tuple[StepSpec, ...] = (
    StepSpec("preflight", reversible=True),
    StepSpec("pause_schedulers", reversible=True, skipped_when_forced=True),
    StepSpec("drain_replication", reversible=True, skipped_when_forced=True),
    StepSpec("promote_target", reversible=False),
    StepSpec("switch_traffic", reversible=False),
    StepSpec("validate_deployments", reversible=False),
    StepSpec("resume_schedulers", reversible=False),
)
POINT_OF_NO_RETURN = "promote_target"
STEP_NAMES = tuple(step.name for step in STEPS)


@dataclass(frozen=True)
class PlannedStep:
    name: str
    reversible: bool
    status: StepStatus


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


def plan(mode: Mode) -> list[PlannedStep]:
    """The steps of an operation. Failback runs the same steps toward the primary."""
    return [
        PlannedStep(
            name=spec.name,
            reversible=spec.reversible,
            status=(
                StepStatus.SKIPPED
                if mode is Mode.FORCED and spec.skipped_when_forced
                else StepStatus.PENDING
            ),
        )
        for spec in STEPS
    ]


def is_reversible(step_name: str) -> bool:
    return next(spec.reversible for spec in STEPS if spec.name == step_name)
