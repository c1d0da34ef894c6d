from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.columns import UTCDateTime


class Counter(SQLModel, table=True):
    """Named gap-free counters; `events` gives every event its global position."""

    __tablename__ = "counters"

    name: str = Field(primary_key=True, max_length=40)
    value: int = Field(default=0, sa_type=sa.BigInteger)


class Lease(SQLModel, table=True):
    """A named lease: the worker holding `webhook-dispatcher` sends the webhooks."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True, max_length=40)
    owner: str | None = Field(default=None, max_length=100)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
