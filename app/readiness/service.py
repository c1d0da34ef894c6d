"""Readiness: could the operation this pair allows next run now? (DESIGN.md section 8)

Only the steps before the point of no return contribute, each action with one bounded
round of its probe (a `check` runs itself once; an `http` step with `check_url` is asked
once), never a wait; every secret the plan refers to must be set. The result is kept on
the pair; `cluster.readiness_changed` is emitted when `ready` flips. The worker evaluates
pairs every TANDEM_READINESS_INTERVAL_S; an API request may ask for a fresh evaluation.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.actions import registry, templating
from app.actions.base import ActionDeps, ActionFailed, StepCall
from app.clusters.models import Cluster
from app.clusters.transitions import emit_event
from app.columns import utcnow
from app.db import unit_of_work
from app.domain.plans import OperationKind, plan_for, reversible
from app.domain.states import ClusterState

# One round of a probe waits this long at most.
PROBE_TIMEOUT_S = 6.0
# Probes of one evaluation round, at once.
CONCURRENCY = 50


def next_kind(state: str) -> OperationKind | None:
    """The operation the pair's state allows next; None mid-switch."""
    if state == ClusterState.PRIMARY_ACTIVE.value:
        return OperationKind.FAILOVER
    if state == ClusterState.SECONDARY_ACTIVE.value:
        return OperationKind.FAILBACK
    return None


def _call(cluster: Cluster, kind: OperationKind, step: str) -> StepCall:
    failover = kind is OperationKind.FAILOVER
    source, target = (
        (cluster.primary, cluster.secondary) if failover else (cluster.secondary, cluster.primary)
    )
    return StepCall(
        cluster_id=cluster.id,
        cluster_name=cluster.name,
        operation_id="readiness",
        kind=kind.value,
        mode="planned",
        step=step,
        phase="do",
        attempt=0,
        idempotency_key=f"readiness:{cluster.id}:{step}",
        deadline_at=utcnow() + timedelta(seconds=PROBE_TIMEOUT_S),
        source=dict(source),
        target=dict(target),
        deployments=list(cluster.deployments),
        signing_secrets=cluster.runbook_secrets(),
    )


async def _probe(
    deps: ActionDeps, settings: dict[str, Any], call: StepCall, name: str
) -> dict[str, Any] | None:
    action = registry.build(settings, deps)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            result = await action.probe(call)
    except ActionFailed as exc:
        result = (False, exc.message, int((time.perf_counter() - started) * 1000))
    except TimeoutError:
        result = (False, f"no answer in {PROBE_TIMEOUT_S:g} s", int(PROBE_TIMEOUT_S * 1000))
    if result is None:
        return None
    ok, detail, duration_ms = result
    return {"step": call.step, "name": name, "ok": ok, "detail": detail, "duration_ms": duration_ms}


async def _missing_secrets(deps: ActionDeps, cluster: Cluster) -> list[dict[str, Any]]:
    checks = []
    for spec in (cluster.plan or {}).get("steps", []) + (cluster.plan or {}).get(
        "failback_steps", []
    ) or []:
        for name in sorted(templating.secret_names(spec)):
            try:
                await deps.secrets(cluster.id, name)
            except ActionFailed:
                checks.append(
                    {
                        "step": spec["name"],
                        "name": f"secret:{name}",
                        "ok": False,
                        "detail": f"secret {name!r} is not set on this pair",
                        "duration_ms": 0,
                    }
                )
    return checks


async def evaluate(
    deps: ActionDeps, cluster: Cluster, limit: asyncio.Semaphore | None = None
) -> dict[str, Any]:
    """One evaluation of the pair's readiness (no write)."""
    kind = next_kind(cluster.state)
    checks: list[dict[str, Any]] = []
    if kind is not None:
        plan = plan_for(cluster.driver, cluster.plan, kind, cluster.deployments)
        limit = limit or asyncio.Semaphore(CONCURRENCY)

        async def bounded(settings: dict[str, Any], call: StepCall, name: str) -> Any:
            async with limit:
                return await _probe(deps, settings, call, name)

        probes = []
        for step, before in zip(plan, reversible(plan), strict=True):
            if not before:
                break
            actions = step.actions()
            for i, settings in enumerate(actions):
                name = str(settings.get("kind")) + (f"[{i}]" if len(actions) > 1 else "")
                probes.append(bounded(settings, _call(cluster, kind, step.name), name))
        checks = [c for c in await asyncio.gather(*probes) if c is not None]
        checks.extend(await _missing_secrets(deps, cluster))
    return {
        "ready": all(c["ok"] for c in checks) if kind is not None else False,
        "checked_at": utcnow().isoformat(),
        "operation": kind.value if kind is not None else None,
        "checks": checks,
    }


async def record(
    sessions: async_sessionmaker[AsyncSession], cluster_id: str, readiness: dict[str, Any]
) -> None:
    """Keep the evaluation on the pair; announce a flip of `ready`."""
    async with unit_of_work(sessions) as session:
        cluster = await session.scalar(
            select(Cluster)
            .where(col(Cluster.id) == cluster_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if cluster is None:
            return  # deleted meanwhile
        before = (cluster.readiness or {}).get("ready")
        await session.execute(
            update(Cluster)
            .where(col(Cluster.id) == cluster_id)
            .values(readiness=readiness, readiness_checked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        # The first evaluation says something only when the pair is not ready.
        if (before is None and not readiness["ready"]) or (
            before is not None and before != readiness["ready"]
        ):
            await emit_event(
                session,
                cluster_id,
                "cluster.readiness_changed",
                {
                    "ready": readiness["ready"],
                    "failing": [c for c in readiness["checks"] if not c["ok"]],
                },
            )


async def refresh(deps: ActionDeps, cluster: Cluster) -> dict[str, Any]:
    readiness = await evaluate(deps, cluster)
    await record(deps.sessions, cluster.id, readiness)
    return readiness


async def current(deps: ActionDeps, cluster: Cluster) -> dict[str, Any]:
    """The last evaluation, or a fresh one when the pair has none yet."""
    return cluster.readiness or await refresh(deps, cluster)


async def evaluate_due(deps: ActionDeps, interval_s: float, batch: int = 1000) -> int:
    """The worker's round: every pair with a plan whose last evaluation is older than
    `interval_s`. Pairs on the default plan have nothing to probe."""
    cutoff = utcnow() - timedelta(seconds=interval_s)
    async with unit_of_work(deps.sessions) as session:
        clusters = list(
            await session.scalars(
                select(Cluster)
                .where(
                    col(Cluster.plan).is_not(None),  # NULL, not JSON null: see the column
                    or_(
                        col(Cluster.readiness_checked_at).is_(None),
                        col(Cluster.readiness_checked_at) < cutoff,
                    ),
                )
                .order_by(col(Cluster.readiness_checked_at))
                .limit(batch)
            )
        )
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(cluster: Cluster) -> None:
        await record(deps.sessions, cluster.id, await evaluate(deps, cluster, limit))

    await asyncio.gather(*(one(c) for c in clusters))
    return len(clusters)
