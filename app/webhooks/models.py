from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.columns import JSONType, UTCDateTime, utcnow


class EndpointKind(StrEnum):
    STANDARD = "standard"  # Standard Webhooks: the event, signed
    PAGERDUTY = "pagerduty"  # PagerDuty Events API v2 bodies


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # given up, or its endpoint was disabled or deleted


# Limits of the text columns that hold what a receiver answered, or why an attempt failed.
EXCERPT_MAX = 500
ERROR_MAX = 1000


class WebhookEndpoint(SQLModel, table=True):
    __tablename__ = "webhook_endpoints"

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40, index=True)
    url: str = Field(max_length=2000)
    kind: str = Field(max_length=16)  # an EndpointKind
    # Empty: every event type.
    event_types: list[Any] = Field(sa_type=JSONType)
    routing_key: str | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, max_length=500)
    secret: str = Field(max_length=100)
    # After a rotation the old secret signs too, until it expires.
    previous_secret: str | None = Field(default=None, max_length=100)
    previous_secret_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    enabled: bool = True
    disabled_reason: str | None = Field(default=None, max_length=500)
    # Start of the current run of failed attempts; cleared by any success.
    failing_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class WebhookDelivery(SQLModel, table=True):
    """One event to one endpoint; `attempts` rows record each try."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.Index("ix_webhook_deliveries_ready", "status", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    endpoint_id: str = Field(foreign_key="webhook_endpoints.id", max_length=40)
    event_id: str = Field(max_length=40)
    cluster_id: str | None = Field(default=None, max_length=40)
    # The event's global position (64-bit): deliveries go out in this order.
    position: int = Field(sa_type=sa.BigInteger)
    status: str = Field(max_length=16)  # a DeliveryStatus
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=ERROR_MAX)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WebhookAttempt(SQLModel, table=True):
    __tablename__ = "webhook_attempts"

    id: str = Field(primary_key=True, max_length=40)
    delivery_id: str = Field(foreign_key="webhook_deliveries.id", max_length=40, index=True)
    attempt: int
    status_code: int | None = None
    duration_ms: int
    error: str | None = Field(default=None, max_length=ERROR_MAX)
    response_excerpt: str | None = Field(default=None, max_length=EXCERPT_MAX)
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
