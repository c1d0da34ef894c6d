from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Field, SQLModel

from app.models.base import JSONType, UTCDateTime, utcnow


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
