"""The `webhooks` section of the OpenAPI document: what Tandem sends to receivers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header
from pydantic import BaseModel, Field

from app.events.schemas import EVENT_MODELS, EventOut
from app.webhooks.schemas import EVENT_TYPES

SIGNED = (
    "Signed per Standard Webhooks: verify `webhook-signature` (space-separated `v1,<base64>` "
    "signatures, one per active secret) over `{webhook-id}.{webhook-timestamp}.{body}` with "
    "the endpoint's `whsec_` secret. `webhook-id` is the event id, the same on every retry: "
    "drop duplicates by it. Answer 2xx to acknowledge; 410 disables the endpoint; anything "
    "else is retried on a growing schedule, honouring `Retry-After`."
)


class PagerDutyPayload(BaseModel):
    summary: str
    source: str
    severity: str = Field(
        description="warning when an operation starts; critical when it fails or a step "
        "passes its deadline"
    )
    component: str
    group: str
    class_: str = Field(alias="class")
    timestamp: str
    custom_details: dict[str, Any]


class PagerDutyEvent(BaseModel):
    """Events API v2: trigger on start and on failure, resolve on success or cancel."""

    routing_key: str
    event_action: str = Field(description="trigger | resolve")
    dedup_key: str = Field(
        description="the operation id; `<operation id>:rto_breached` or `:rpo_breached` for a "
        "missed objective; `ready:<pair id>` for readiness"
    )
    payload: PagerDutyPayload | None = Field(default=None, description="absent on resolve")


def document(app: FastAPI) -> None:
    for event_type in EVENT_TYPES:
        event = EVENT_MODELS[event_type]

        async def receiver(
            body: EventOut,
            webhook_id: Annotated[str, Header(alias="webhook-id")],
            webhook_timestamp: Annotated[str, Header(alias="webhook-timestamp")],
            webhook_signature: Annotated[str, Header(alias="webhook-signature")],
        ) -> None: ...

        # The body is the one event type this webhook carries.
        receiver.__annotations__["body"] = event
        app.webhooks.post(
            event_type,
            summary=f"{event_type} (standard endpoints)",
            description=SIGNED,
            status_code=204,
            operation_id="on" + event.__name__.removesuffix("Event"),
            tags=["webhooks"],
        )(receiver)

    async def pagerduty(body: PagerDutyEvent) -> None: ...

    app.webhooks.post(
        "pagerduty",
        summary="PagerDuty endpoints: Events API v2 bodies",
        description="Sent to the endpoint's events URL for cluster.readiness_changed, "
        "operation.created, operation.approval_requested, operation.failed, "
        "operation.step_timed_out, operation.rto_breached, operation.rpo_breached, "
        "operation.succeeded and operation.cancelled.",
        status_code=202,
        operation_id="onPagerDutyEvent",
        tags=["webhooks"],
    )(pagerduty)
