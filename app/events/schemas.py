"""An event as the API shows it, and, for the OpenAPI document, one schema per event type.

The per-type models document what each type's `data` holds (DESIGN.md section 5); the routes
keep answering with EventOut. Each `data` allows more fields than it lists: a receiver must
ignore what it does not know, and new fields are added without a new version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.common import Strict
from app.domain.plans import Mode, OperationKind, StepStatus
from app.domain.states import ClusterState
from app.operations.schemas import DrillOutcome, StepError
from app.problems import ProblemDetails
from app.readiness.schemas import ReadinessCheck, ReplicationLag


class EventOut(Strict):
    """One shape everywhere: the event list, the live stream and a webhook body."""

    id: str
    type: str
    created_at: datetime
    cluster_id: str | None
    sequence: int
    data: dict[str, Any]


class _Data(BaseModel):
    model_config = ConfigDict(extra="allow")


class _OperationData(_Data):
    operation_id: str


class _OfKind(_OperationData):
    kind: OperationKind


class StateChangedData(_Data):
    from_: ClusterState = Field(alias="from")
    to: ClusterState
    operation_id: str | None
    active_region: str


class ReadinessChangedData(_Data):
    ready: bool
    failing: list[ReadinessCheck] = Field(description="The checks that failed")


class OperationCreatedData(_OfKind):
    batch_id: str | None = Field(default=None, description="The batch that started it, if any")
    mode: Mode | None = Field(description="Null for the kinds that change no state")
    deployments: list[str] | None = Field(
        default=None, description="retry_deployments: the deployments it retries"
    )


class ApprovalRequestedData(_OperationData):
    step: str
    timeout_at: datetime | None


class StepChangedData(_OperationData):
    step: str
    status: StepStatus
    attempt: int
    error: StepError | None = Field(description="What went wrong, when the step failed")


class StepTimedOutData(_OfKind):
    step: str
    deadline_at: str | None


class OperationData(_OperationData):
    """operation.cancelling and operation.retried"""


class SucceededData(_OfKind):
    measured_rto_s: float | None


class FailedData(_OfKind):
    step: str | None = Field(description="The step that failed")
    error: ProblemDetails
    needs_attention: bool
    rolled_back: bool


class CancelledData(_OfKind):
    rolled_back: bool


class ObjectiveBreachedData(_OperationData):
    target_s: float
    measured_s: float


class DrillStartedData(_OperationData):
    rehearses: OperationKind = Field(description="The switch it rehearses: failover or failback")
    requested_by: str | None = Field(description="Who asked; `scheduler` for a scheduled drill")
    reason: str | None
    scheduled: bool = Field(description="Started by the pair's drill_every_days")


class DrillFinishedData(_OperationData):
    outcome: DrillOutcome
    failed_step: str | None = Field(description="The first step that failed, if any")
    error: ProblemDetails | None = Field(description="Why it failed; null otherwise")
    expected_rto_s: float | None = Field(
        description="The sum of the step durations the drill measured (the operation's "
        "`report` says how); null unless every rehearsed step succeeded"
    )
    replication_lag: ReplicationLag | None = Field(
        description="The largest replication lag a postgres check measured, if any"
    )
    requested_by: str | None


class EndpointDisabledData(_Data):
    endpoint_id: str
    url: str
    reason: str


class BatchCreatedData(_Data):
    batch_id: str
    kind: str
    region: str
    total: int
    to_start: int
    skipped: int


class BatchFinishedData(_Data):
    batch_id: str
    kind: str
    region: str
    status: str
    counts: dict[str, int]


class _Event(BaseModel):
    id: str = Field(description="Opaque (`evt_...`); a webhook's `webhook-id`")
    created_at: datetime
    cluster_id: str | None = Field(description="Null for events of no pair")
    sequence: int = Field(description="Per pair, gap-free")


def _event(event_type: str, data: type[BaseModel]) -> type[_Event]:
    name = "".join(part.title() for part in event_type.replace("_", ".").split(".")) + "Event"
    model: type[_Event] = type(
        name,
        (_Event,),
        {
            "__annotations__": {"type": Literal[event_type], "data": data},  # type: ignore[valid-type]
            "__module__": __name__,
            "__doc__": f"The `{event_type}` event.",
        },
    )
    return model


# Every event type Tandem emits, and its data (app.webhooks.schemas.EventType lists the same).
EVENT_DATA: dict[str, type[BaseModel]] = {
    "cluster.state_changed": StateChangedData,
    "cluster.readiness_changed": ReadinessChangedData,
    "operation.created": OperationCreatedData,
    "operation.approval_requested": ApprovalRequestedData,
    "operation.step_changed": StepChangedData,
    "operation.step_timed_out": StepTimedOutData,
    "operation.succeeded": SucceededData,
    "operation.failed": FailedData,
    "operation.cancelled": CancelledData,
    "operation.cancelling": OperationData,
    "operation.retried": OperationData,
    "operation.rto_breached": ObjectiveBreachedData,
    "operation.rpo_breached": ObjectiveBreachedData,
    "webhook.endpoint_disabled": EndpointDisabledData,
    "batch.created": BatchCreatedData,
    "batch.finished": BatchFinishedData,
    "drill.started": DrillStartedData,
    "drill.finished": DrillFinishedData,
}
EVENT_MODELS: dict[str, type[_Event]] = {
    event_type: _event(event_type, data) for event_type, data in EVENT_DATA.items()
}

# One frame of GET /v1/events/stream, as an SSE client parses it. Frames without data
# (`retry:`) and comments are no events.
SSE_EVENT = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "The resume cursor: send it back as Last-Event-ID",
        },
        "event": {"type": "string", "description": "The event's type"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/Event"},
            "description": "The event, in the shape of the event list",
        },
        "retry": {"type": "integer", "description": "Milliseconds to wait before reconnecting"},
    },
}
