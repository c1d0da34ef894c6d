from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.columns import JSONType, UTCDateTime, utcnow


class Organization(SQLModel, table=True):
    """A tenant: every pair, operation, webhook, event and token belongs to one."""

    __tablename__ = "organizations"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(unique=True, max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The newest event's position in this organization's feed (gap-free, 1, 2, 3, ...).
    event_position: int = Field(default=0, sa_type=sa.BigInteger)


class ApiToken(SQLModel, table=True):
    """A bearer token. Only its SHA-256 is stored; the token is shown once."""

    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40, index=True)
    name: str = Field(max_length=100)
    role: str = Field(max_length=16)  # a Role (app.access.auth)
    token_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=16)
    rate_limit_per_minute: int | None = None
    created_by: str | None = Field(default=None, max_length=40)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class UiSession(SQLModel, table=True):
    """A web page's sign-in: the cookie's SHA-256, the token it acts with (encrypted with
    the pair-secret keys) and the CSRF token of its forms. Signing out deletes the row."""

    __tablename__ = "ui_sessions"

    id: str = Field(primary_key=True, max_length=64)
    token_id: str = Field(foreign_key="api_tokens.id", max_length=40, index=True)
    token_ciphertext: str = Field(sa_type=sa.Text)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


class AuditOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    REFUSED = "refused"  # answered with a problem: no change was made
    REPLAYED = "replayed"  # an Idempotency-Key's stored response, sent again


class AuditRecord(SQLModel, table=True):
    """Who did what, written in the transaction of the change it describes.

    No route changes or deletes these rows.
    """

    __tablename__ = "audit_records"

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40, index=True)
    token_id: str | None = Field(default=None, max_length=40)
    token_name: str | None = Field(default=None, max_length=100)
    action: str = Field(max_length=64)
    method: str = Field(max_length=8)
    path: str = Field(max_length=500)
    target: str | None = Field(default=None, max_length=200)
    request_id: str | None = Field(default=None, max_length=128)
    outcome: str = Field(max_length=16)  # an AuditOutcome
    status_code: int
    detail: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
