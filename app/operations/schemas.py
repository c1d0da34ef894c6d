from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from typing_extensions import TypeAliasType

from app.common import JSON_NUMBER, NO_NUL, Strict
from app.domain.plans import Mode, OperationKind, OperationStatus, StepStatus
from app.domain.states import ClusterState
from app.readiness.schemas import ReadinessCheck, ReadinessOut, ReplicationLag

# Free-form JSON objects, named so that a generated client has one class for each, not an
# anonymous one per field; the values stay plain dicts.
StepError = TypeAliasType(
    "StepError",
    Annotated[
        dict[str, Any],
        WithJsonSchema(
            {
                "type": "object",
                "description": "Why the step failed: `code`, `message` and the action's details",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                "additionalProperties": True,
            }
        ),
    ],
)
StepOutput = TypeAliasType("StepOutput", dict[str, Any])
# A problem object (app.operations.executor builds it with every field ProblemDetails names).
OperationError = Annotated[
    dict[str, Any], WithJsonSchema({"$ref": "#/components/schemas/ProblemDetails"})
]
DataLoss = TypeAliasType(
    "DataLoss",
    Annotated[
        dict[str, Any],
        WithJsonSchema(
            {
                "type": "object",
                "description": "What an action measured as lost",
                "properties": {"bytes": {"type": "number"}, "seconds": {"type": "number"}},
                "additionalProperties": True,
            }
        ),
    ],
)


class OperationRequest(Strict):
    # What _forced_needs_consent checks, said in the document too.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"mode": {"const": "forced"}}, "required": ["mode"]},
            "then": {
                "properties": {"accept_data_loss": {"const": True}},
                "required": ["accept_data_loss"],
            },
        }
    )

    mode: Mode = Mode.PLANNED
    reason: Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)] | None = None
    # Consent to lose data is the JSON `true`, not 1 or "yes" (and so the flags below).
    accept_data_loss: StrictBool = False
    # A planned operation of a pair that is not ready is refused (409 not_ready) unless set.
    ignore_readiness: StrictBool = False
    # 200 with the plan as it would run; nothing else happens (no Idempotency-Key needed).
    dry_run: StrictBool = False
    # A forced operation only: refused (409 data_loss_exceeds) when the pair's last measured
    # replication lag is larger, or (409 data_loss_unknown) when none was ever measured.
    max_data_loss_s: Annotated[float, Field(ge=0), JSON_NUMBER] | None = None

    @model_validator(mode="after")
    def _forced_needs_consent(self) -> OperationRequest:
        if self.mode is Mode.FORCED and not self.accept_data_loss:
            raise ValueError('a forced operation requires "accept_data_loss": true')
        if self.max_data_loss_s is not None and self.mode is not Mode.FORCED:
            raise ValueError("max_data_loss_s applies to a forced operation only")
        return self


class StepOut(Strict):
    name: str
    status: StepStatus
    reversible: bool
    attempts: int
    # When the current attempt must be done by; past it the step fails `step_timed_out`.
    deadline_at: datetime | None = None
    started_at: datetime | None
    finished_at: datetime | None
    error: StepError | None
    output: StepOutput | None


class AwaitingApproval(Strict):
    step: str
    since: datetime | None
    timeout_at: datetime | None


class Decision(Strict):
    comment: Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)] | None = None


class Progress(Strict):
    completed_steps: int
    total_steps: int


class DrillOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DrillStepReport(Strict):
    name: str
    # How the drill ran it: its `drill` action, its readiness `probe`, `skipped` (no drill
    # action, and no probe or past the point of no return), or `cleanup` (plan.cleanup).
    rehearsal: Literal["drill", "probe", "skipped", "cleanup"]
    status: StepStatus
    # From its start to its end; null for a step that did not run.
    duration_s: float | None
    error: StepError | None


class DrillReport(Strict):
    """What a drill found (DESIGN.md section 14); on every operation of kind `drill`."""

    # succeeded, failed or cancelled once the drill is done (its cleanup has run); null before.
    outcome: DrillOutcome | None
    # The first step that failed (a rehearsed step, or a cleanup step).
    failed_step: str | None
    # The sum of the plan's step durations as the drill measured them (drill actions and
    # probes); the steps it skipped count for nothing and are listed in unmeasured_steps.
    # Null unless the drill is done and every step it rehearsed succeeded.
    expected_rto_s: float | None
    unmeasured_steps: list[str]
    # The plan's steps, in order, then the cleanup steps.
    steps: list[DrillStepReport]
    cleanup: list[DrillStepReport]
    # The readiness checks the drill's probes ran.
    readiness: list[ReadinessCheck]
    # The largest replication lag a postgres check measured in the drill, with its `step`;
    # null: none measured.
    replication_lag: ReplicationLag | None


class DrillRequest(Strict):
    reason: Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)] | None = None


class OperationOut(Strict):
    id: str
    cluster_id: str
    kind: OperationKind
    # Null for the kinds that change no state (retry_deployments).
    mode: Mode | None
    status: OperationStatus
    done: bool
    from_state: ClusterState
    target_state: ClusterState
    steps: list[StepOut]
    progress: Progress
    error: OperationError | None
    reason: str | None
    requested_by: str | None
    # The batch (a region's evacuation) that started it, if any.
    batch_id: str | None = None
    needs_attention: bool
    # What went wrong without failing the operation (a non-critical deployment unhealthy).
    warnings: list[str] = Field(default_factory=list)
    # Set while a step waits for a person: POST .../approve or .../reject.
    awaiting_approval: AwaitingApproval | None = None
    # From creation to the end of the step that switched traffic.
    measured_rto_s: float | None = None
    # {"bytes", "seconds"} where an action measured it.
    data_loss: DataLoss | None = None
    # A drill's report; null for the other kinds.
    report: DrillReport | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: dict[str, str] = Field(default_factory=dict)


class DryRunStep(Strict):
    name: str
    actions: list[str]
    point_of_no_return: bool
    reversible: bool
    # A forced operation skips it.
    skipped: bool
    timeout_s: float
    # The median of its last 20 successful runs on this pair; null: no history.
    expected_duration_s: float | None


class DryRunOut(Strict):
    dry_run: bool = True
    cluster_id: str
    kind: OperationKind
    mode: Mode
    steps: list[DryRunStep]
    # The sum of the steps' expected durations; null when one of them has no history.
    expected_duration_s: float | None
    # The pair's last readiness evaluation for this operation (null: none yet; a dry run
    # calls nothing, so it does not evaluate: GET .../readiness?fresh=true does).
    readiness: ReadinessOut | None
    # Where a step can measure it (the postgres action); null otherwise.
    replication_lag: ReplicationLag | None = None
