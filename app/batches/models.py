"""Batches: many operations started as one request (a region's evacuation)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.columns import JSONType, UTCDateTime, utcnow


class BatchStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ItemStatus(StrEnum):
    PENDING = "pending"  # not started yet (at most max_parallel run at once)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # its operation was cancelled, or the batch before it started
    SKIPPED = "skipped"  # not started: not ready, mid-switch, or refused (see `detail`)


class Batch(SQLModel, table=True):
    __tablename__ = "batches"

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40, index=True)
    # What it does: "evacuate" a region.
    kind: str = Field(max_length=16)
    region: str = Field(max_length=64)
    status: str = Field(max_length=16, index=True)
    done: bool = False
    mode: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=1000)
    accept_data_loss: bool = False
    ignore_readiness: bool = False
    max_parallel: int
    labels: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    requested_by: str | None = Field(default=None, max_length=200)
    cancel_requested: bool = False
    # Bumped by every pass that starts or settles operations: the UPDATE that bumps it
    # locks the row, so that two passes never start more than max_parallel between them.
    passes: int = Field(default=0, sa_type=sa.BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class BatchItem(SQLModel, table=True):
    """One pair of a batch: what it is to do and how it went."""

    __tablename__ = "batch_items"

    batch_id: str = Field(foreign_key="batches.id", primary_key=True, max_length=40)
    position: int = Field(primary_key=True)
    cluster_id: str = Field(max_length=40, index=True)
    cluster_name: str = Field(max_length=100)
    # failover or failback: away from the region either way.
    kind: str = Field(max_length=16)
    status: str = Field(max_length=16)
    operation_id: str | None = Field(default=None, max_length=40)
    detail: str | None = Field(default=None, max_length=1000)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
