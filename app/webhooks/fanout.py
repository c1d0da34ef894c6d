"""An event becomes one delivery per enabled endpoint that wants it, in the same
transaction as the event (the outbox): a committed event never misses its deliveries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.clusters.models import Cluster
from app.columns import new_id, utcnow
from app.webhooks import pagerduty
from app.webhooks.models import DeliveryStatus, EndpointKind, WebhookDelivery, WebhookEndpoint


def wants(kind: str, event_types: list[str], event_type: str) -> bool:
    if kind == EndpointKind.PAGERDUTY and event_type not in pagerduty.EVENT_TYPES:
        return False
    return not event_types or event_type in event_types


# FOR KEY SHARE: an endpoint being deleted is waited for, then skipped, so a new delivery
# never refers to a deleted endpoint (and the event's transaction never fails). Taken
# before the event numbers (app.events.service), as an endpoint's own change takes its row
# and then the numbers: one order, no deadlock. (This is SQLite's way; on PostgreSQL the
# function tandem_append_events of migration 0016 does the same, and `wants` in SQL.)
def _enabled_endpoints_of(org: Any) -> Any:
    return (
        select(
            col(WebhookEndpoint.id),
            col(WebhookEndpoint.kind),
            col(WebhookEndpoint.event_types),
        )
        .where(col(WebhookEndpoint.enabled).is_(True), col(WebhookEndpoint.org_id) == org)
        .with_for_update(read=True, key_share=True)
    )


_ENDPOINTS = _enabled_endpoints_of(bindparam("org_id"))
_ENDPOINTS_OF_PAIR = _enabled_endpoints_of(
    select(col(Cluster.org_id)).where(col(Cluster.id) == bindparam("cluster_id")).scalar_subquery()
)

Endpoints = list[tuple[str, str, list[str]]]


async def endpoints_for(
    session: AsyncSession, org_id: str | None, cluster_id: str | None
) -> Endpoints:
    """The enabled endpoints of the organization (or of the pair's organization)."""
    if org_id is not None:
        rows = await session.execute(_ENDPOINTS, {"org_id": org_id})
    else:
        rows = await session.execute(_ENDPOINTS_OF_PAIR, {"cluster_id": cluster_id})
    return [(str(i), str(kind), list(types or [])) for i, kind, types in rows]


def wanted(endpoints: Endpoints, events: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(index of the event, endpoint id): one delivery per event and endpoint that wants it."""
    return [
        (index, endpoint_id)
        for index, event in enumerate(events)
        for endpoint_id, kind, event_types in endpoints
        if wants(kind, event_types, event["type"])
    ]


def delivery_rows(
    deliveries: list[tuple[int, str]], events: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The delivery rows of numbered events (`events` carry their id and position)."""
    rows = []
    for index, endpoint_id in deliveries:
        event = events[index]
        rows.append(
            {
                "id": new_id("dlv"),
                "endpoint_id": endpoint_id,
                "event_id": event["id"],
                "cluster_id": event["cluster_id"],
                "position": event["position"],
                "status": DeliveryStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": event["created_at"],
                "created_at": event["created_at"],
                "updated_at": event["created_at"],
            }
        )
    return rows


async def stop_pending(session: AsyncSession, cluster_id: str) -> None:
    """A deleted pair's deliveries still waiting are not sent."""
    await session.execute(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.cluster_id) == cluster_id,
            col(WebhookDelivery.status) == DeliveryStatus.PENDING.value,
        )
        .values(
            status=DeliveryStatus.FAILED.value,
            next_attempt_at=None,
            last_error="the pair was deleted",
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
