from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Field, SQLModel

from app.columns import JSONType, UTCDateTime, utcnow


class DriverEffect(SQLModel, table=True):
    """The simulated driver's record of side effects, one row per idempotency key.

    A real driver passes the same key to the system it calls; the simulated one keeps
    this table so tests can see that no step's effect was applied twice.
    """

    __tablename__ = "driver_effects"

    idempotency_key: str = Field(primary_key=True, max_length=120)
    cluster_id: str = Field(max_length=40, index=True)
    operation_id: str = Field(max_length=40, index=True)
    step: str = Field(max_length=40)
    action: str = Field(max_length=8)
    attempt: int
    output: dict[str, Any] = Field(sa_type=JSONType)
    applied_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
