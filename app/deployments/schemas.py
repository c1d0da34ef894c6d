from __future__ import annotations

from datetime import datetime
from typing import Any

from app.common import Strict


class DeploymentResultOut(Strict):
    region: str
    healthy: bool
    detail: str
    operation_id: str | None
    # Airflow: task instances that failed or went up-for-retry in the operation's window.
    failed_tasks: list[dict[str, Any]] | None
    # Unhealthy, or with failed task instances: POST .../deployments/retry acts on it.
    needs_retry: bool
    checked_at: datetime


class DeploymentOut(Strict):
    name: str
    critical: bool
    kind: str | None
    has_health_check: bool
    # The last validation (in the target region of the operation that ran it); null: never.
    last_result: DeploymentResultOut | None


class DeploymentsOut(Strict):
    items: list[DeploymentOut]
