"""An event becomes one delivery per enabled endpoint that wants it, in the same
transaction as the event (the outbox): a committed event never misses its deliveries."""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.columns import new_id, utcnow
from app.events.models import Event
from app.webhooks import pagerduty
from app.webhooks.models import DeliveryStatus, EndpointKind, WebhookDelivery, WebhookEndpoint


def wants(kind: str, event_types: list[str], event_type: str) -> bool:
    if kind == EndpointKind.PAGERDUTY and event_type not in pagerduty.EVENT_TYPES:
        return False
    return not event_types or event_type in event_types


async def create_deliveries(session: AsyncSession, events: list[Event]) -> int:
    # FOR KEY SHARE: an endpoint being deleted is waited for, then skipped, so the new
    # delivery never refers to a deleted endpoint (and the event's transaction never fails).
    endpoints = (
        await session.execute(
            select(
                col(WebhookEndpoint.id),
                col(WebhookEndpoint.kind),
                col(WebhookEndpoint.event_types),
            )
            .where(
                col(WebhookEndpoint.enabled).is_(True),
                col(WebhookEndpoint.org_id) == events[0].org_id,
            )
            .with_for_update(read=True, key_share=True)
        )
    ).all()
    now = utcnow()
    rows = [
        {
            "id": new_id("dlv"),
            "endpoint_id": endpoint_id,
            "event_id": event.id,
            "cluster_id": event.cluster_id,
            "position": event.position,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for event in events
        for endpoint_id, kind, event_types in endpoints
        if wants(kind, event_types, event.type)
    ]
    if rows:
        await session.execute(insert(WebhookDelivery), rows)
    return len(rows)


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
