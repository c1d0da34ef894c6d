from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from app.columns import UTCDateTime, utcnow


class PairSecret(SQLModel, table=True):
    """A value an action needs and nobody may read back; stored Fernet-encrypted."""

    __tablename__ = "pair_secrets"

    cluster_id: str = Field(primary_key=True, max_length=40)
    name: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=40, index=True)
    ciphertext: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
