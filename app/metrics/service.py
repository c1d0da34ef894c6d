"""`GET /metrics`: the families read from the database when scraped (DESIGN.md section 11),
so every API process shows the same values and retention does not disturb them, then the
ones this process counted (app.metrics.process, rendered by prometheus-client). A scrape
shows its token's organization only. Two queries, whatever the number of pairs: the
pairs, then the operation and webhook figures in one statement of scalar subqueries.

The families read here are written as Prometheus text directly: with 1,000 pairs they are
9,000 samples, which prometheus-client's `generate_latest` takes about 60 ms of the event
loop's time to write (label names validated and escaped sample by sample), this about a
tenth of that (bench/metrics.py).

`pair` is the pair's name: unique in its organization (the only one a scrape shows) and
what a person reads on a dashboard or in an alert; a rename starts new series.
`tandem_pair_state` has a sample for every state, 1 for the current one and 0 for the
others: each (pair, state) series lives as long as the pair, so `for:` clauses and
`sum by (state)` behave, and a state left is a 0, not a series that goes stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from prometheus_client import generate_latest
from prometheus_client.utils import floatToGoString
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.clusters.models import Cluster
from app.columns import utcnow
from app.domain.plans import UNFINISHED, OperationKind, OperationStatus
from app.domain.states import ClusterState
from app.metrics.process import OrgView
from app.operations.models import Operation
from app.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

STATES = tuple(state.value for state in ClusterState)
# Targets take few distinct values: each written once.
_number = lru_cache(maxsize=4096)(floatToGoString)

# name -> help; every one a gauge.
HELP = {
    "tandem_pair_info": "1 for each side of each pair; role is active for the side in the "
    "pair's active region, standby for the other",
    "tandem_pair_state": "1 for the pair's current state, 0 for the others",
    "tandem_pair_ready": "1 if the pair's last readiness evaluation found it ready, 0 if not; "
    "absent when it was never evaluated",
    "tandem_replication_lag_seconds": "Replication lag into each region of a pair, where a "
    "step measures it",
    "tandem_pair_rto_target_seconds": "The pair's recovery time objective, where set",
    "tandem_pair_rpo_target_seconds": "The pair's recovery point objective, where set",
    "tandem_last_drill_success_timestamp": "When the pair's last successful drill finished, "
    "in seconds since the epoch; 0 for a pair with a drill schedule that never had one; "
    "absent for a pair with neither",
    "tandem_pair_drill_every_days": "The pair's drill schedule (drill_every_days), where set",
    "tandem_operations_in_progress": "Operations not done yet (queued, running or cancelling)",
    "tandem_operations_needing_attention": "Failed operations that left their pair "
    "mid-switch: an operator must retry them",
    "tandem_operation_oldest_running_seconds": "Age of the oldest operation not done yet, "
    "from its creation; 0 when none",
    "tandem_webhook_oldest_pending_seconds": "Age of the oldest webhook delivery not yet sent "
    "nor given up; 0 when none",
}


@dataclass(frozen=True)
class Pair:
    name: str
    state: str
    active_region: str
    # (cloud, cloud_region) of the primary, then of the secondary.
    sides: tuple[tuple[str, str], tuple[str, str]]
    ready: bool | None
    rto_target_s: float | None
    rpo_target_s: float | None
    # (cloud_region, seconds) of the last replication lag measured into a region.
    lag: tuple[str, float] | None = None
    drill_every_days: int | None = None
    # When its last successful drill finished.
    last_drill_success: datetime | None = None


@dataclass(frozen=True)
class Snapshot:
    """What a scrape reads from the database, for one organization."""

    pairs: list[Pair]
    in_progress: int
    needing_attention: int
    oldest_running_s: float
    oldest_pending_s: float


async def render(session: AsyncSession, org_id: str) -> bytes:
    text = exposition(await read(session, org_id))
    return text.encode() + generate_latest(OrgView(org_id))


async def read(session: AsyncSession, org_id: str) -> Snapshot:
    last_drill = (
        select(func.max(col(Operation.finished_at)))
        .where(
            col(Operation.cluster_id) == col(Cluster.id),
            col(Operation.kind) == OperationKind.DRILL.value,
            col(Operation.status) == OperationStatus.SUCCEEDED.value,
        )
        .correlate(Cluster)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(
            col(Cluster.name),
            col(Cluster.state),
            col(Cluster.active_region),
            col(Cluster.primary)["cloud"].as_string(),
            col(Cluster.primary)["region"].as_string(),
            col(Cluster.secondary)["cloud"].as_string(),
            col(Cluster.secondary)["region"].as_string(),
            col(Cluster.readiness)["ready"].as_boolean(),
            col(Cluster.rto_target_s),
            col(Cluster.rpo_target_s),
            col(Cluster.readiness)["replication_lag"]["cloud_region"].as_string(),
            col(Cluster.readiness)["replication_lag"]["seconds"].as_float(),
            col(Cluster.drill_every_days),
            last_drill,
        )
        .where(col(Cluster.org_id) == org_id)
        .order_by(col(Cluster.name))
    )
    pairs = [
        Pair(
            name,
            state,
            active,
            ((p_cloud, p_region), (s_cloud, s_region)),
            ok,
            rto,
            rpo,
            (lag_region, lag_s) if lag_region is not None and lag_s is not None else None,
            every_days,
            _aware(drilled),
        )
        for (
            name,
            state,
            active,
            p_cloud,
            p_region,
            s_cloud,
            s_region,
            ok,
            rto,
            rpo,
            lag_region,
            lag_s,
            every_days,
            drilled,
        ) in rows
    ]

    unfinished = [status.value for status in UNFINISHED]
    mine = col(Operation.org_id) == org_id
    in_flight = col(Operation.status).in_(unfinished)
    in_progress = select(func.count()).select_from(Operation).where(mine, in_flight)
    attention = (
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
    oldest_operation = select(func.min(col(Operation.created_at))).where(mine, in_flight)
    oldest_delivery = (
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
                in_progress.scalar_subquery(),
                attention.scalar_subquery(),
                oldest_operation.scalar_subquery(),
                oldest_delivery.scalar_subquery(),
            )
        )
    ).one()
    now = utcnow()
    return Snapshot(
        pairs=pairs,
        in_progress=figures[0] or 0,
        needing_attention=figures[1] or 0,
        oldest_running_s=_age(figures[2], now),
        oldest_pending_s=_age(figures[3], now),
    )


def _aware(at: datetime | None) -> datetime | None:
    """A timestamp read through an aggregate, as aware UTC on every backend."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


def _age(since: datetime | None, now: datetime) -> float:
    return max((now - since).total_seconds(), 0.0) if since is not None else 0.0


def _escape(value: str | None) -> str:
    """A label value as the text format wants it."""
    if not value:
        return ""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposition(snapshot: Snapshot) -> str:
    """The families read from the database, in the Prometheus text format (0.0.4)."""
    lines: dict[str, list[str]] = {name: [] for name in HELP}
    info, state = lines["tandem_pair_info"], lines["tandem_pair_state"]
    ready, rto, rpo = (
        lines["tandem_pair_ready"],
        lines["tandem_pair_rto_target_seconds"],
        lines["tandem_pair_rpo_target_seconds"],
    )
    for pair in snapshot.pairs:
        name = _escape(pair.name)
        for cloud, region in pair.sides:
            role = "active" if region == pair.active_region else "standby"
            info.append(
                f'tandem_pair_info{{pair="{name}",cloud="{_escape(cloud)}",'
                f'cloud_region="{_escape(region)}",role="{role}"}} 1.0'
            )
        for known in STATES:
            value = "1.0" if known == pair.state else "0.0"
            state.append(f'tandem_pair_state{{pair="{name}",state="{known}"}} {value}')
        if pair.ready is not None:
            ready.append(f'tandem_pair_ready{{pair="{name}"}} {"1.0" if pair.ready else "0.0"}')
        if pair.rto_target_s is not None:
            rto.append(
                f'tandem_pair_rto_target_seconds{{pair="{name}"}} {_number(pair.rto_target_s)}'
            )
        if pair.rpo_target_s is not None:
            rpo.append(
                f'tandem_pair_rpo_target_seconds{{pair="{name}"}} {_number(pair.rpo_target_s)}'
            )
        if pair.last_drill_success is not None or pair.drill_every_days is not None:
            drilled = pair.last_drill_success.timestamp() if pair.last_drill_success else 0.0
            lines["tandem_last_drill_success_timestamp"].append(
                f'tandem_last_drill_success_timestamp{{pair="{name}"}} {floatToGoString(drilled)}'
            )
        if pair.drill_every_days is not None:
            lines["tandem_pair_drill_every_days"].append(
                f'tandem_pair_drill_every_days{{pair="{name}"}} {_number(pair.drill_every_days)}'
            )
        if pair.lag is not None:
            lines["tandem_replication_lag_seconds"].append(
                f'tandem_replication_lag_seconds{{pair="{name}",'
                f'cloud_region="{_escape(pair.lag[0])}"}} {_number(pair.lag[1])}'
            )
    for gauge, figure in (
        ("tandem_operations_in_progress", snapshot.in_progress),
        ("tandem_operations_needing_attention", snapshot.needing_attention),
        ("tandem_operation_oldest_running_seconds", snapshot.oldest_running_s),
        ("tandem_webhook_oldest_pending_seconds", snapshot.oldest_pending_s),
    ):
        lines[gauge].append(f"{gauge} {floatToGoString(figure)}")
    out = []
    for name, samples in lines.items():
        out.append(f"# HELP {name} {HELP[name]}\n# TYPE {name} gauge\n")
        if samples:
            out.append("\n".join(samples))
            out.append("\n")
    return "".join(out)
