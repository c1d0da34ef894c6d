from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)
from typing_extensions import TypeAliasType

from app.common import NO_NUL, Strict
from app.webhooks.models import DeliveryStatus, EndpointKind

URL_MAX = 2000


def _fits_column(value: AnyHttpUrl) -> AnyHttpUrl:
    # Checked as it will be stored: normalising (percent-encoding) can lengthen what was sent.
    if len(str(value)) > URL_MAX:
        raise ValueError(f"the url is longer than {URL_MAX} characters")
    return value


EventType = TypeAliasType(
    "EventType",
    Literal[
        "cluster.state_changed",
        "cluster.readiness_changed",
        "operation.created",
        "operation.approval_requested",
        "operation.step_changed",
        "operation.step_timed_out",
        "operation.succeeded",
        "operation.failed",
        "operation.cancelled",
        "operation.cancelling",
        "operation.retried",
        "operation.rto_breached",
        "operation.rpo_breached",
        "webhook.endpoint_disabled",
        "batch.created",
        "batch.finished",
        "drill.started",
        "drill.finished",
    ],
)
EVENT_TYPES: tuple[str, ...] = EventType.__value__.__args__
Url = Annotated[
    AnyHttpUrl,
    AfterValidator(_fits_column),
    Field(description="http or https, at most 2,000 characters; internal addresses refused"),
]
RoutingKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL)]
Description = Annotated[str, StringConstraints(max_length=500, pattern=NO_NUL)]


class WebhookCreate(Strict):
    # What _kind_fields checks, said in the document too: a body it refuses is not valid there.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"kind": {"const": "pagerduty"}}, "required": ["kind"]},
            "then": {
                "properties": {"routing_key": {"type": "string"}},
                "required": ["routing_key"],
            },
            "else": {"properties": {"url": {"type": "string"}}, "required": ["url"]},
        }
    )

    url: Url | None = Field(
        default=None, description="Required for `standard`; PagerDuty's events URL by default"
    )
    kind: EndpointKind = EndpointKind.STANDARD
    event_types: list[EventType] = Field(
        default_factory=list, max_length=20, description="Empty: every event type"
    )
    routing_key: RoutingKey | None = Field(default=None, description="PagerDuty integration key")
    description: Description | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> WebhookCreate:
        if self.kind == EndpointKind.STANDARD and self.url is None:
            raise ValueError("a standard webhook needs a url")
        if self.kind == EndpointKind.PAGERDUTY and not self.routing_key:
            raise ValueError("a pagerduty webhook needs a routing_key")
        return self


class WebhookPatch(Strict):
    url: Url | None = None
    event_types: list[EventType] | None = Field(default=None, max_length=20)
    routing_key: RoutingKey | None = None
    description: Description | None = None
    enabled: StrictBool | None = None


class WebhookOut(Strict):
    id: str
    url: str = Field(description="Whole for admins; others see user info and query masked")
    kind: EndpointKind
    event_types: list[EventType]
    routing_key: str | None = Field(description="Masked: its last 4 characters at most")
    description: str | None
    secret: str = Field(description="Shown whole once, at creation or rotation; masked after")
    previous_secret_expires_at: datetime | None
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


class AttemptOut(Strict):
    attempt: int
    status_code: int | None
    duration_ms: int
    error: str | None
    response_excerpt: str | None
    next_attempt_at: datetime | None
    created_at: datetime


class DeliveryOut(Strict):
    id: str
    endpoint_id: str
    event_id: str
    cluster_id: str | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    attempt_log: list[AttemptOut]


class PingResult(Strict):
    ok: bool
    status_code: int | None
    duration_ms: int
    error: str | None
