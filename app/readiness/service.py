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

from sqlalchemy import bindparam, or_, select, update
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
# Probes of one evaluation round, at once (httpcore's pool bookkeeping grows with the
# square of its open connections: 12 was cheaper and faster than 50 on 1,000 checks).
CONCURRENCY = 12
# Pairs whose evaluations are written in one transaction.
RECORD_CHUNK = 100


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


async def probe(
    deps: ActionDeps,
    settings: dict[str, Any],
    call: StepCall,
    name: str,
    rpo_target_s: float | None = None,
    *,
    rehearse: bool = False,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> dict[str, Any] | None:
    """One bounded round of an action's probe, as a readiness check (None: nothing to
    probe). A drill asks for the action's rehearsal instead (its probe, for most kinds)."""
    action = registry.build(settings, deps)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            result = await (action.rehearse(call) if rehearse else action.probe(call))
    except ActionFailed as exc:
        result = (False, exc.message, int((time.perf_counter() - started) * 1000))
    except TimeoutError:
        result = (False, f"no answer in {timeout_s:g} s", int(timeout_s * 1000))
    if result is None:
        return None
    ok, detail, duration_ms = result
    check = {
        "step": call.step,
        "name": name,
        "ok": ok,
        "detail": detail,
        "duration_ms": duration_ms,
    }
    measured = action.measurement()
    if measured is not None:
        check["replication_lag"] = measured
        seconds = measured.get("seconds")
        if ok and rpo_target_s is not None and seconds is not None and seconds > rpo_target_s:
            check["ok"] = False
            check["detail"] = f"{detail}: over the pair's rpo_target_s ({rpo_target_s:g} s)"
    return check


def _replication_lag(
    checks: list[dict[str, Any]], cluster: Cluster, kind: OperationKind
) -> dict[str, Any] | None:
    """The lag measured now (the largest, if several steps measure it), else the last one
    measured for this operation: a source that went away leaves its last known window."""
    found = [c.pop("replication_lag") for c in checks if "replication_lag" in c]
    known = [m for m in found if m.get("bytes") is not None]
    if known:
        target = cluster.secondary if kind is OperationKind.FAILOVER else cluster.primary
        worst = max(known, key=lambda m: (m.get("seconds") or 0, m["bytes"]))
        return {**worst, "operation": kind.value, "cloud_region": target.get("region")}
    last = (cluster.readiness or {}).get("replication_lag")
    return last if isinstance(last, dict) and last.get("operation") == kind.value else None


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
                return await probe(deps, settings, call, name, cluster.rpo_target_s)

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
        "replication_lag": _replication_lag(checks, cluster, kind) if kind is not None else None,
    }


async def record(
    sessions: async_sessionmaker[AsyncSession], cluster_id: str, readiness: dict[str, Any]
) -> None:
    """Keep the evaluation on the pair; announce a flip of `ready`."""
    await record_many(sessions, [(cluster_id, readiness)])


async def record_many(
    sessions: async_sessionmaker[AsyncSession],
    evaluations: list[tuple[str, dict[str, Any]]],
    chunk: int = RECORD_CHUNK,
) -> None:
    """Keep evaluations on their pairs, a chunk of pairs per transaction (rows locked in id
    order, as every writer of several pairs does); announce each flip of `ready`."""
    ordered = sorted(evaluations, key=lambda item: item[0])
    for first in range(0, len(ordered), chunk):
        part = dict(ordered[first : first + chunk])
        async with unit_of_work(sessions) as session:
            rows = await session.execute(
                select(col(Cluster.id), col(Cluster.readiness))
                .where(col(Cluster.id).in_(list(part)))
                .order_by(col(Cluster.id))
                .with_for_update()
            )
            before = {str(row[0]): (row[1] or {}).get("ready") for row in rows}
            if not before:
                continue  # deleted meanwhile
            now = utcnow()
            table = Cluster.__table__  # type: ignore[attr-defined]
            # Core executemany: one statement for the chunk.
            await session.execute(
                update(table)
                .where(table.c.id == bindparam("cluster_id"))
                .values(readiness=bindparam("evaluation"), readiness_checked_at=now),
                [{"cluster_id": cid, "evaluation": part[cid]} for cid in before],
            )
            for cluster_id, was in before.items():
                readiness = part[cluster_id]
                # The first evaluation says something only when the pair is not ready.
                if (was is None and not readiness["ready"]) or (
                    was is not None and was != readiness["ready"]
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
    """The last evaluation, or a fresh one when the pair has none yet or the last one was
    for another operation (the pair has switched since)."""
    kind = next_kind(cluster.state)
    last = cluster.readiness
    if last is None or (kind is not None and last.get("operation") != kind.value):
        return await refresh(deps, cluster)
    return last


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
                # Never evaluated first (NULLs sort last on PostgreSQL, first on SQLite).
                .order_by(col(Cluster.readiness_checked_at).asc().nulls_first())
                .limit(batch)
            )
        )
    limit = asyncio.Semaphore(CONCURRENCY)
    evaluations = await asyncio.gather(*(evaluate(deps, c, limit) for c in clusters))
    await record_many(
        deps.sessions, [(c.id, e) for c, e in zip(clusters, evaluations, strict=True)]
    )
    return len(clusters)
