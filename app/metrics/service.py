"""`GET /metrics`: the families read from the database when scraped (DESIGN.md section 11),
so every API process shows the same values and retention does not disturb them, then the
ones this process counted (app.metrics.process). A scrape shows its token's organization
only. Two queries, whatever the number of pairs: the pairs, then the operation and
webhook figures in one statement of scalar subqueries.

`pair` is the pair's name: unique in its organization (the only one a scrape shows) and
what a person reads on a dashboard or in an alert; a rename starts new series.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.clusters.models import Cluster
from app.columns import utcnow
from app.domain.plans import UNFINISHED, OperationStatus
from app.domain.states import ClusterState
from app.metrics.process import OrgView
from app.operations.models import Operation
from app.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

STATES = tuple(state.value for state in ClusterState)


async def render(session: AsyncSession, org_id: str) -> bytes:
    families = await read(session, org_id)
    return generate_latest(OrgView(org_id, families))


async def read(session: AsyncSession, org_id: str) -> list[Metric]:
    info = GaugeMetricFamily(
        "tandem_pair_info",
        "1 for each side of each pair; role is active for the side in the pair's active "
        "region, standby for the other",
        labels=["pair", "cloud", "cloud_region", "role"],
    )
    state = GaugeMetricFamily(
        "tandem_pair_state",
        "1 for the pair's current state, 0 for the others",
        labels=["pair", "state"],
    )
    ready = GaugeMetricFamily(
        "tandem_pair_ready",
        "1 if the pair's last readiness evaluation found it ready, 0 if not; absent when "
        "it was never evaluated",
        labels=["pair"],
    )
    lag = GaugeMetricFamily(
        "tandem_replication_lag_seconds",
        "Replication lag into each region of a pair, where a step measures it",
        labels=["pair", "cloud_region"],
    )
    rto = GaugeMetricFamily(
        "tandem_pair_rto_target_seconds",
        "The pair's recovery time objective, where set",
        labels=["pair"],
    )
    rpo = GaugeMetricFamily(
        "tandem_pair_rpo_target_seconds",
        "The pair's recovery point objective, where set",
        labels=["pair"],
    )
    pairs = await session.execute(
        select(
            col(Cluster.name),
            col(Cluster.state),
            col(Cluster.active_region),
            col(Cluster.primary)["region"].as_string(),
            col(Cluster.primary)["cloud"].as_string(),
            col(Cluster.secondary)["region"].as_string(),
            col(Cluster.secondary)["cloud"].as_string(),
            col(Cluster.readiness)["ready"].as_boolean(),
            col(Cluster.rto_target_s),
            col(Cluster.rpo_target_s),
        )
        .where(col(Cluster.org_id) == org_id)
        .order_by(col(Cluster.name))
    )
    for name, current, active, p_region, p_cloud, s_region, s_cloud, ok, rto_s, rpo_s in pairs:
        for region, cloud in ((p_region, p_cloud), (s_region, s_cloud)):
            role = "active" if region == active else "standby"
            info.add_metric([name, cloud or "", region or "", role], 1)
        for known in STATES:
            state.add_metric([name, known], 1 if known == current else 0)
        if ok is not None:
            ready.add_metric([name], 1 if ok else 0)
        if rto_s is not None:
            rto.add_metric([name], rto_s)
        if rpo_s is not None:
            rpo.add_metric([name], rpo_s)

    unfinished = [status.value for status in UNFINISHED]
    mine = col(Operation.org_id) == org_id
    in_flight = col(Operation.status).in_(unfinished)
    in_progress_q = select(func.count()).select_from(Operation).where(mine, in_flight)
    attention_q = (
        select(func.count())
        .select_from(Operation)
        # needs_attention is only ever set on a failed operation: the status index
        # narrows the search.
        .where(
            mine,
            col(Operation.status) == OperationStatus.FAILED.value,
            col(Operation.needs_attention).is_(True),
        )
    )
    oldest_operation_q = select(func.min(col(Operation.created_at))).where(mine, in_flight)
    oldest_delivery_q = (
        select(func.min(col(WebhookDelivery.created_at)))
        .join(WebhookEndpoint, col(WebhookEndpoint.id) == col(WebhookDelivery.endpoint_id))
        .where(
            col(WebhookEndpoint.org_id) == org_id,
            col(WebhookDelivery.status) == DeliveryStatus.PENDING.value,
        )
    )
    figures = (
        await session.execute(
            select(
                in_progress_q.scalar_subquery(),
                attention_q.scalar_subquery(),
                oldest_operation_q.scalar_subquery(),
                oldest_delivery_q.scalar_subquery(),
            )
        )
    ).one()
    in_progress, attention, oldest_operation, oldest_delivery = figures
    now = utcnow()
    return [
        info,
        state,
        ready,
        lag,
        rto,
        rpo,
        GaugeMetricFamily(
            "tandem_operations_in_progress",
            "Operations not done yet (queued, running or cancelling)",
            value=in_progress or 0,
        ),
        GaugeMetricFamily(
            "tandem_operations_needing_attention",
            "Failed operations that left their pair mid-switch: an operator must retry them",
            value=attention or 0,
        ),
        GaugeMetricFamily(
            "tandem_operation_oldest_running_seconds",
            "Age of the oldest operation not done yet, from its creation; 0 when none",
            value=_age(oldest_operation, now),
        ),
        GaugeMetricFamily(
            "tandem_webhook_oldest_pending_seconds",
            "Age of the oldest webhook delivery not yet sent nor given up; 0 when none",
            value=_age(oldest_delivery, now),
        ),
    ]


def _age(since: datetime | None, now: datetime) -> float:
    return max((now - since).total_seconds(), 0.0) if since is not None else 0.0
