"""A dry run: the operation as it would run now, and nothing else (DESIGN.md section 8).

No operation, no event, no action called, no Idempotency-Key: the plan the pair would run,
the steps a forced operation skips, each step's expected duration (the median of its
last 20 successful runs on this pair), the total, the readiness and the replication lag
readiness last measured."""

from __future__ import annotations

import statistics
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.clusters.models import Cluster
from app.domain.plans import Mode, OperationKind, StepStatus, initial_status, plan_for, reversible
from app.operations.models import Operation, OperationStep

HISTORY = 20


async def expected_durations(
    session: AsyncSession, cluster_id: str, kind: OperationKind, names: list[str]
) -> dict[str, float | None]:
    """step -> the median wall time of its last HISTORY successful runs on this pair."""
    rows = await session.execute(
        select(
            col(OperationStep.name), col(OperationStep.started_at), col(OperationStep.finished_at)
        )
        .join(Operation, col(Operation.id) == col(OperationStep.operation_id))
        .where(
            col(Operation.cluster_id) == cluster_id,
            col(Operation.kind) == kind.value,
            col(OperationStep.status) == StepStatus.SUCCEEDED.value,
            col(OperationStep.name).in_(names),
            col(OperationStep.started_at).is_not(None),
            col(OperationStep.finished_at).is_not(None),
        )
        .order_by(col(OperationStep.finished_at).desc())
        .limit(HISTORY * max(len(names), 1) * 2)
    )
    seen: dict[str, list[float]] = {name: [] for name in names}
    for name, started, finished in rows:
        if started is not None and finished is not None and len(seen[name]) < HISTORY:
            seen[name].append((finished - started).total_seconds())
    return {name: round(statistics.median(d), 3) if d else None for name, d in seen.items()}


async def plan_preview(
    session: AsyncSession, cluster: Cluster, kind: OperationKind, mode: Mode
) -> dict[str, Any]:
    plan = plan_for(cluster.driver, cluster.plan, kind, cluster.deployments)
    durations = await expected_durations(session, cluster.id, kind, [s.name for s in plan])
    steps: list[dict[str, Any]] = []
    for step, before in zip(plan, reversible(plan), strict=True):
        skipped = initial_status(step, mode) is StepStatus.SKIPPED
        steps.append(
            {
                "name": step.name,
                "actions": [str(a.get("kind")) for a in step.actions()],
                "point_of_no_return": step.point_of_no_return,
                "reversible": before,
                "skipped": skipped,
                "timeout_s": step.timeout_s,
                "expected_duration_s": None if skipped else durations[step.name],
            }
        )
    known: list[float | None] = [s["expected_duration_s"] for s in steps if not s["skipped"]]
    total = round(sum(d for d in known if d is not None), 3) if None not in known else None
    # The last lag readiness measured for this operation (a dry run calls nothing).
    lag = (cluster.readiness or {}).get("replication_lag")
    if not isinstance(lag, dict) or lag.get("operation") != kind.value:
        lag = None
    return {"steps": steps, "expected_duration_s": total, "replication_lag": lag}
