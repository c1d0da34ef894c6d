from __future__ import annotations

from datetime import datetime
from typing import Any

from typing_extensions import TypeAliasType

from app.common import Strict

# One Airflow task instance, as Airflow's API lists it.
FailedTask = TypeAliasType("FailedTask", dict[str, Any])


class DeploymentResultOut(Strict):
    region: str
    healthy: bool
    detail: str
    operation_id: str | None
    # Airflow: task instances that failed or went up-for-retry in the operation's window.
    failed_tasks: list[FailedTask] | None
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
