"""An event becomes one delivery per enabled endpoint that wants it, in the same
transaction as the event (the outbox): a committed event never misses its deliveries."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models import Event, WebhookDelivery, WebhookEndpoint
from app.models.base import new_id, utcnow
from app.services import pagerduty


def wants(endpoint: WebhookEndpoint, event_type: str) -> bool:
    if endpoint.kind == "pagerduty" and event_type not in pagerduty.EVENT_TYPES:
        return False
    return not endpoint.event_types or event_type in endpoint.event_types


async def create_deliveries(session: AsyncSession, event: Event) -> int:
    # FOR KEY SHARE: an endpoint being deleted is waited for, then skipped, so the new
    # delivery never refers to a deleted endpoint (and the event's transaction never fails).
    endpoints = await session.scalars(
        select(WebhookEndpoint)
        .where(col(WebhookEndpoint.enabled).is_(True), col(WebhookEndpoint.org_id) == event.org_id)
        .with_for_update(read=True, key_share=True)
    )
    now = utcnow()
    count = 0
    for endpoint in endpoints:
        if not wants(endpoint, event.type):
            continue
        session.add(
            WebhookDelivery(
                id=new_id("dlv"),
                endpoint_id=endpoint.id,
                event_id=event.id,
                cluster_id=event.cluster_id,
                position=event.position,
                status="pending",
                next_attempt_at=now,
            )
        )
        count += 1
    return count
