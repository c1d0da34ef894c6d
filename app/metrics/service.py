"""Prometheus gauges read from the database at scrape time, so every process agrees; a
scrape shows its token's organization only."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.clusters.models import Cluster
from app.domain.states import ClusterState
from app.operations.models import Operation


async def render(session: AsyncSession, org_id: str) -> bytes:
    registry = CollectorRegistry()
    clusters = Gauge("tandem_clusters", "DR pairs by state", ["state"], registry=registry)
    operations = Gauge(
        "tandem_operations", "Operations by kind and status", ["kind", "status"], registry=registry
    )
    attention = Gauge(
        "tandem_operations_needing_attention",
        "Failed operations that left their pair mid-switch",
        registry=registry,
    )
    for known in ClusterState:
        clusters.labels(state=known.value).set(0)
    by_state = await session.execute(
        select(col(Cluster.state), func.count())
        .where(col(Cluster.org_id) == org_id)
        .group_by(col(Cluster.state))
    )
    for state, count in by_state:
        clusters.labels(state=state).set(count)
    by_status = await session.execute(
        select(col(Operation.kind), col(Operation.status), func.count())
        .where(col(Operation.org_id) == org_id)
        .group_by(col(Operation.kind), col(Operation.status))
    )
    for kind, status, count in by_status:
        operations.labels(kind=kind, status=status).set(count)
    flagged = await session.scalar(
        select(func.count()).where(
            col(Operation.org_id) == org_id, col(Operation.needs_attention).is_(True)
        )
    )
    attention.set(flagged or 0)
    return generate_latest(registry)
