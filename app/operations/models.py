from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.columns import JSONType, UTCDateTime, utcnow


class Operation(SQLModel, table=True):
    __tablename__ = "operations"
    __table_args__ = (
        # At most one unfinished operation per pair and lane (a failover or failback; a
        # drill or deployment retry), whatever the number of API processes.
        sa.Index(
            "uq_operations_one_unfinished_per_lane",
            "cluster_id",
            "lane",
            unique=True,
            sqlite_where=sa.text("done = 0"),
            postgresql_where=sa.text("done = false"),
        ),
        sa.Index("ix_operations_cluster_created", "cluster_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    cluster_id: str = Field(foreign_key="clusters.id", max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40, index=True)
    kind: str = Field(max_length=24)
    # planned | forced; None for the kinds that change no state.
    mode: str | None = Field(default=None, max_length=16)
    # switch (failover, failback) or side (drill, retry_deployments): the two never run
    # side by side; a switch asked for cancels the side operation and waits for its end.
    lane: str = Field(default="switch", max_length=8)
    status: str = Field(max_length=16, index=True)
    done: bool = False
    from_state: str = Field(max_length=32)
    target_state: str = Field(max_length=32)
    reason: str | None = Field(default=None, max_length=1000)
    requested_by: str | None = Field(default=None, max_length=200)
    # The batch (a region's evacuation) that started it, if any.
    batch_id: str | None = Field(default=None, max_length=40, index=True)
    accept_data_loss: bool = False
    error: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    # The plan it was started with (a list of app.domain.plans.StepPlan as dicts): a later
    # change of the pair's settings changes only later operations.
    plan: list[Any] | None = Field(default=None, sa_type=JSONType)
    # Why a rollback is under way (a failed step's problem), written before the first
    # undo so that a worker taking over finishes it `failed`, not `cancelled`.
    rollback_cause: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    # A step answered "not yet": run again then (the sweeper leaves it alone until then).
    wake_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Set, under the same conditional UPDATE that cancel uses, when the first
    # irreversible step starts; from then on cancel is refused.
    past_point_of_no_return: bool = False
    # Failed and left its pair mid-switch: an operator must retry it.
    needs_attention: bool = False
    # From creation to the end of the step that switched traffic (DESIGN.md section 8).
    measured_rto_s: float | None = None
    # {"bytes", "seconds"} where an action measured it.
    data_loss: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    lease_owner: str | None = Field(default=None, max_length=100)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_epoch: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class OperationStep(SQLModel, table=True):
    __tablename__ = "operation_steps"

    operation_id: str = Field(foreign_key="operations.id", primary_key=True, max_length=40)
    position: int = Field(primary_key=True)
    name: str = Field(max_length=40)
    status: str = Field(max_length=16)
    reversible: bool
    attempts: int = 0
    undo_attempts: int = 0
    # Set when an attempt starts; a worker that takes over honours the same instant.
    deadline_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    error: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    output: dict[str, Any] | None = Field(default=None, sa_type=JSONType)


class IdempotencyRecord(SQLModel, table=True):
    """A stored response, keyed by the caller's scope and Idempotency-Key."""

    __tablename__ = "idempotency_records"

    scope: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=255)
    fingerprint: str = Field(max_length=64)
    status_code: int
    body: dict[str, Any] = Field(sa_type=JSONType)
    headers: dict[str, str] = Field(sa_type=JSONType)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    # The pair the request was about: deleting the pair forgets its keys, so a replay is
    # answered as the request would be now (404), not with a Location that is gone.
    cluster_id: str | None = Field(default=None, max_length=40, index=True)
