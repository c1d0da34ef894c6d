"""The evidence report of a pair (DESIGN.md section 14), as the API and the PDF show it."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from app.common import Strict
from app.domain.plans import Mode, OperationKind, OperationStatus, StepStatus
from app.operations.schemas import DataLoss, DrillReport
from app.readiness.schemas import ReadinessCheck


class ReportSite(Strict):
    name: str
    region: str
    cloud: str


class ReportPair(Strict):
    id: str
    name: str
    primary: ReportSite
    secondary: ReportSite
    rto_target_s: float | None
    rpo_target_s: float | None


class ReportPeriod(Strict):
    """Operations created at or after `from` and before `to` (and the readiness changes
    of the same span)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: datetime = Field(alias="from")
    to: datetime


class ReportStep(Strict):
    name: str
    status: StepStatus
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    # From its start to its end; null for a step that did not both start and end.
    duration_s: float | None


class ReportDecision(Strict):
    """A person's decision on an approval step."""

    step: str
    approved: bool
    decided_by: str
    comment: str | None
    decided_at: datetime


class ObjectiveBreach(Strict):
    """An `operation.rto_breached` / `operation.rpo_breached` event: the target then."""

    at: datetime
    target_s: float
    measured_s: float


class Objective(Strict):
    """A recovery objective against what the operation measured.

    `met` is true when measured <= target, false when over it, null when either is
    unknown (no target set on the pair, or nothing measured)."""

    target_s: float | None
    measured_s: float | None
    met: bool | None
    # The breach events the operation emitted when it ended (against the target of then).
    breaches: list[ObjectiveBreach] = Field(default_factory=list)


class ReportOperation(Strict):
    id: str
    kind: OperationKind
    # planned | forced; null for the kinds that change no state.
    mode: Mode | None
    status: OperationStatus
    reason: str | None
    # Who asked: `token:<name> (<token id>)`, or who started the batch or schedule.
    requested_by: str | None
    # Who approved an approval step (those who rejected one are in `decisions` only).
    approved_by: list[str]
    decisions: list[ReportDecision]
    batch_id: str | None
    needs_attention: bool
    # The problem's title and detail, when the operation failed.
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # From creation to the end; null while it runs.
    duration_s: float | None
    steps: list[ReportStep]
    # Failover and failback: from creation to the end of the step that switched traffic,
    # against the pair's rto_target_s. The other kinds measure none (measured_s null).
    rto: Objective
    # What an action measured as lost (the postgres action's `promote`); null: none.
    data_loss: DataLoss | None
    # data_loss's seconds against the pair's rpo_target_s.
    rpo: Objective
    # A drill's own report (as on the operation): how each step was rehearsed, the
    # expected RTO, the readiness findings and the replication lag seen; null for the
    # other kinds.
    drill: DrillReport | None = None
    # A drill's expected RTO against the pair's rto_target_s; null for the other kinds.
    expected_rto: Objective | None = None


class ReadinessChange(Strict):
    """A `cluster.readiness_changed` event."""

    at: datetime
    ready: bool
    failing: list[ReadinessCheck]


class ReportSummary(Strict):
    operations: int
    # Operations per kind and per status (only those that occur).
    by_kind: dict[str, int]
    by_status: dict[str, int]
    rto_met: int
    rto_missed: int
    rpo_met: int
    rpo_missed: int
    readiness_changes: int


class EvidenceReport(Strict):
    """What an auditor asks for about one pair over a period (DESIGN.md section 14)."""

    pair: ReportPair
    period: ReportPeriod
    generated_at: datetime
    summary: ReportSummary
    # Every failover, failback, drill and retry_deployments created in the period, oldest
    # first.
    operations: list[ReportOperation]
    # The pair's readiness when the period began (its last change before `from`); null
    # when it had none.
    readiness_at_start: ReadinessChange | None
    # Every change of readiness in the period, oldest first.
    readiness: list[ReadinessChange]
