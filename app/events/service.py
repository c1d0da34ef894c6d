"""The event log: appending events (with their webhook deliveries) and reading them."""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.access.models import Organization
from app.clusters.models import Cluster
from app.columns import new_id
from app.coordination import Counter
from app.db import after_commit
from app.events.models import Event
from app.events.schemas import EventOut
from app.pagination import INT64_MAX, decode_int_key, encode_token
from app.webhooks.fanout import create_deliveries

# Set on a session whose commit should wake the webhook dispatcher and live streams.
_PUBLISH_FLAG = "tandem_publish_events"


async def _next(session: AsyncSession, statement: Any) -> int:
    return int((await session.execute(statement)).scalar_one())


async def emit_event(
    session: AsyncSession,
    cluster_id: str | None,
    type_: str,
    data: dict[str, Any],
    *,
    org_id: str | None = None,
) -> Event:
    """Append one event in the caller's transaction, with its webhook deliveries."""
    [event] = await emit_events(session, cluster_id, [(type_, data)], org_id=org_id)
    return event


async def emit_events(
    session: AsyncSession,
    cluster_id: str | None,
    events: list[tuple[str, dict[str, Any]]],
    *,
    org_id: str | None = None,
) -> list[Event]:
    """Append events, in this order, in the caller's transaction, with their deliveries.

    The pair's `event_seq`, the global `events` counter and the organization's
    `event_position` are incremented in place: each locks its row until commit, so numbers
    are handed out in commit order, without gaps, and a rolled-back transaction gives its
    numbers back.
    """
    count = len(events)
    last_sequence = 0
    if cluster_id is not None:
        row = (
            await session.execute(
                update(Cluster)
                .where(col(Cluster.id) == cluster_id)
                .values(event_seq=Cluster.event_seq + count)
                .returning(col(Cluster.event_seq), col(Cluster.org_id))
                .execution_options(synchronize_session=False)
            )
        ).one()
        last_sequence, org_id = int(row[0]), str(row[1])
    if org_id is None:
        raise ValueError("an event about no pair needs its organization")
    last_position = await _next(
        session,
        update(Counter)
        .where(col(Counter.name) == "events")
        .values(value=Counter.value + count)
        .returning(col(Counter.value))
        .execution_options(synchronize_session=False),
    )
    last_org_position = await _next(
        session,
        update(Organization)
        .where(col(Organization.id) == org_id)
        .values(event_position=Organization.event_position + count)
        .returning(col(Organization.event_position))
        .execution_options(synchronize_session=False),
    )
    appended = [
        Event(
            id=new_id("evt"),
            cluster_id=cluster_id,
            org_id=org_id,
            # Events about no pair have sequence 0; a pair's are numbered 1, 2, 3, ...
            sequence=last_sequence - count + 1 + i if cluster_id is not None else 0,
            position=last_position - count + 1 + i,
            org_position=last_org_position - count + 1 + i,
            type=type_,
            data=data,
        )
        for i, (type_, data) in enumerate(events)
    ]
    # Core inserts: the event log is append-only and the hot path of every operation.
    await session.execute(insert(Event), [event.model_dump() for event in appended])
    await create_deliveries(session, appended)
    _publish_after_commit(session)
    return appended


def _publish_after_commit(session: AsyncSession) -> None:
    redis, channel = session.info.get("redis"), session.info.get("events_channel")
    if redis is None or channel is None or session.info.get(_PUBLISH_FLAG):
        return
    session.info[_PUBLISH_FLAG] = True

    async def publish() -> None:
        session.info.pop(_PUBLISH_FLAG, None)
        # Readers also poll; a lost wake-up costs latency only.
        with contextlib.suppress(Exception):
            await redis.publish(channel, "committed")

    after_commit(session, publish)


def render(event: Event) -> EventOut:
    return EventOut(
        id=event.id,
        type=event.type,
        created_at=event.created_at,
        cluster_id=event.cluster_id,
        sequence=event.sequence,
        data=event.data,
    )


async def list_for_cluster(
    session: AsyncSession, cluster_id: str, page_size: int, page_token: str | None
) -> tuple[list[EventOut], str | None]:
    after = decode_int_key(page_token)
    query = select(Event).where(col(Event.cluster_id) == cluster_id)
    if after is not None:
        query = query.where(col(Event.sequence) > after)
    rows = list(await session.scalars(query.order_by(col(Event.sequence)).limit(page_size + 1)))
    more = len(rows) > page_size
    rows = rows[:page_size]
    token = encode_token([rows[-1].sequence]) if more else None
    return [render(e) for e in rows], token


async def after_position(
    session: AsyncSession, org_id: str, position: int, limit: int, cluster_id: str | None = None
) -> list[Event]:
    """An organization's events past one of its positions, in order: the feed, the stream."""
    query = select(Event).where(col(Event.org_id) == org_id, col(Event.org_position) > position)
    if cluster_id is not None:
        query = query.where(col(Event.cluster_id) == cluster_id)
    return list(await session.scalars(query.order_by(col(Event.org_position)).limit(limit)))


async def list_global(
    session: AsyncSession,
    org_id: str,
    cluster_id: str | None,
    page_size: int,
    page_token: str | None,
) -> tuple[list[tuple[int, EventOut]], str | None]:
    after = decode_int_key(page_token, INT64_MAX) or 0  # positions are 64-bit
    rows = await after_position(session, org_id, after, page_size, cluster_id)
    # A feed always hands back a cursor, so a poller can ask again for what comes next.
    token = encode_token([rows[-1].org_position if rows else after])
    return [(e.org_position, render(e)) for e in rows], token


async def latest_position(session: AsyncSession) -> int:
    """The newest event's global position (where a process's reader starts)."""
    value = await session.scalar(select(col(Counter.value)).where(col(Counter.name) == "events"))
    return int(value or 0)


async def latest_org_position(session: AsyncSession, org_id: str) -> int:
    """The newest event's position in the organization's feed (where a new stream starts)."""
    value = await session.scalar(
        select(col(Organization.event_position)).where(col(Organization.id) == org_id)
    )
    return int(value or 0)
