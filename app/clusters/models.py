from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.columns import JSONType, NullableJSON, UTCDateTime, utcnow


class Cluster(SQLModel, table=True):
    """A DR pair. `state` is written only by app/services/transitions.py."""

    __tablename__ = "clusters"
    __table_args__ = (sa.UniqueConstraint("org_id", "name", name="uq_clusters_org_name"),)

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40, index=True)
    name: str = Field(max_length=100)
    primary: dict[str, Any] = Field(sa_type=JSONType)
    secondary: dict[str, Any] = Field(sa_type=JSONType)
    driver: dict[str, Any] = Field(sa_type=JSONType)
    # A plan of the pair's own ({"steps": [...], "failback_steps": [...]}), or None: the
    # default plan, every step through `driver`.
    plan: dict[str, Any] | None = Field(default=None, sa_type=NullableJSON)
    # Signs every runbook call (Standard Webhooks); the previous one also signs until
    # `previous_runbook_secret_expires_at`, so a rotation breaks no runbook.
    runbook_secret: str = Field(max_length=100)
    previous_runbook_secret: str | None = Field(default=None, max_length=100)
    previous_runbook_secret_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The last readiness evaluation (app.readiness): {"ready", "checked_at", "checks"}.
    readiness: dict[str, Any] | None = Field(default=None, sa_type=NullableJSON)
    readiness_checked_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    rto_target_s: float | None = None
    rpo_target_s: float | None = None
    # The worker starts a drill when the last one started longer ago than this (or never);
    # None: no schedule.
    drill_every_days: int | None = None
    deployments: list[Any] = Field(sa_type=JSONType)
    # Free-form string labels, for selectors (a region's evacuation picks pairs by them).
    labels: dict[str, str] = Field(default_factory=dict, sa_type=JSONType)
    state: str = Field(max_length=32)
    active_region: str = Field(max_length=64)
    version: int = 1
    # Last event sequence number handed out for this pair (gap-free, per pair).
    event_seq: int = 0
    last_operation_id: str | None = Field(default=None, max_length=40)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    def runbook_secrets(self) -> tuple[str, ...]:
        """The secrets that sign runbook calls now: the current one, and the previous one
        while its overlap lasts."""
        previous, until = self.previous_runbook_secret, self.previous_runbook_secret_expires_at
        if previous and until is not None and until > utcnow():
            return (self.runbook_secret, previous)
        return (self.runbook_secret,)
