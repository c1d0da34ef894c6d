from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.columns import JSONType, UTCDateTime, utcnow


class Event(SQLModel, table=True):
    """The transition log and the outbox that webhook deliveries are made from."""

    __tablename__ = "events"
    __table_args__ = (
        sa.UniqueConstraint("cluster_id", "sequence", name="uq_events_cluster_seq"),
        sa.UniqueConstraint("position", name="uq_events_position"),
        sa.UniqueConstraint("org_id", "org_position", name="uq_events_org_position"),
    )

    id: str = Field(primary_key=True, max_length=40)
    # Null for events about no pair (a webhook endpoint disabled); their sequence is 0.
    cluster_id: str | None = Field(default=None, max_length=40)
    org_id: str = Field(max_length=40, index=True)
    sequence: int
    # Global, gap-free, in commit order: how each API process's reader keeps up.
    position: int = Field(sa_type=sa.BigInteger)
    # Per organization, gap-free, in commit order: the cursor of its feed and live stream
    # (a global one would tell each organization how many events the others had).
    org_position: int = Field(sa_type=sa.BigInteger)
    type: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    data: dict[str, Any] = Field(sa_type=JSONType)
