from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Field, SQLModel

from app.columns import NullableJSON, UTCDateTime, utcnow


class DeploymentResult(SQLModel, table=True):
    """A deployment's last validation: healthy or not, in which region, after what."""

    __tablename__ = "deployment_results"

    cluster_id: str = Field(primary_key=True, max_length=40)
    name: str = Field(primary_key=True, max_length=100)
    region: str = Field(max_length=64)
    healthy: bool
    critical: bool
    detail: str = Field(max_length=2000)
    # The operation whose step checked it.
    operation_id: str | None = Field(default=None, max_length=40)
    # Airflow: the task instances that failed or went up-for-retry in the operation's window.
    failed_tasks: list[Any] | None = Field(default=None, sa_type=NullableJSON)
    checked_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    @property
    def needs_retry(self) -> bool:
        return not self.healthy or bool(self.failed_tasks)
