"""The event log: appending events (with their webhook deliveries) and reading them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ARRAY, JSON, String, bindparam, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.access.models import Organization
from app.clusters.models import Cluster
from app.columns import UTCDateTime, new_id, utcnow
from app.coordination import Counter
from app.db import after_commit
from app.events.models import Event
from app.events.notify import COMMITTED_MESSAGE, DELIVERIES_MESSAGE, announce
from app.events.schemas import EventOut
from app.pagination import INT64_MAX, decode_int_key, encode_token
from app.webhooks import pagerduty
from app.webhooks.fanout import delivery_rows, endpoints_for, wanted
from app.webhooks.models import WebhookDelivery

# Set on a session whose commit should wake live streams (and, when it made webhook
# deliveries, the webhook dispatcher).
_PUBLISH_FLAG = "tandem_publish_events"
_DELIVERIES_FLAG = "tandem_publish_deliveries"


# On PostgreSQL, the whole append, webhook deliveries included, is one call of the
# function of migration 0016: the counters' row locks are held from there to the commit,
# so nothing but the COMMIT stands between one writer's numbers and the next writer's.
_APPEND_PG = text(
    "SELECT last_sequence, owner_org, last_position, last_org_position, deliveries FROM "
    "tandem_append_events(:cluster_id, :org_id, :created_at, :events, :pagerduty_types)"
).bindparams(
    bindparam("created_at", type_=UTCDateTime),
    bindparam("events", type_=JSON),
    bindparam("pagerduty_types", type_=ARRAY(String)),
)
_PAGERDUTY_TYPES = sorted(pagerduty.EVENT_TYPES)
# On SQLite (one writer at a time), the same steps one statement each.
_PAIR_SEQ = (
    update(Cluster)
    .where(col(Cluster.id) == bindparam("cluster_id"))
    .values(event_seq=Cluster.event_seq + bindparam("count"))
    .returning(col(Cluster.event_seq), col(Cluster.org_id))
)
_GLOBAL_POSITION = (
    update(Counter)
    .where(col(Counter.name) == "events")
    .values(value=Counter.value + bindparam("count"))
    .returning(col(Counter.value))
)
_ORG_POSITION = (
    update(Organization)
    .where(col(Organization.id) == bindparam("org_id"))
    .values(event_position=Organization.event_position + bindparam("count"))
    .returning(col(Organization.event_position))
)
_INSERT_EVENTS = insert(Event.__table__)  # type: ignore[attr-defined]
_INSERT_DELIVERIES = insert(WebhookDelivery.__table__)  # type: ignore[attr-defined]

Numbers = tuple[int, str, int, int]


async def _append_pg(
    session: AsyncSession,
    cluster_id: str | None,
    org_id: str | None,
    rows: list[dict[str, Any]],
) -> tuple[Numbers, int]:
    """The numbers, and how many webhook deliveries were made."""
    found = (
        await session.execute(
            _APPEND_PG,
            {
                "cluster_id": cluster_id,
                "org_id": org_id,
                "created_at": rows[0]["created_at"],
                "events": [{"id": r["id"], "type": r["type"], "data": r["data"]} for r in rows],
                "pagerduty_types": _PAGERDUTY_TYPES,
            },
        )
    ).one()
    if found[1] is None:
        raise LookupError(f"no pair {cluster_id} to append events to")
    return (int(found[0]), str(found[1]), int(found[2]), int(found[3])), int(found[4])


async def _take_numbers(
    session: AsyncSession, cluster_id: str | None, org_id: str | None, count: int
) -> Numbers:
    last_sequence = 0
    if cluster_id is not None:
        seq_row = (
            await session.execute(_PAIR_SEQ, {"cluster_id": cluster_id, "count": count})
        ).one()
        last_sequence, org_id = int(seq_row[0]), str(seq_row[1])
    assert org_id is not None
    position = (await session.execute(_GLOBAL_POSITION, {"count": count})).scalar_one()
    org_position = (
        await session.execute(_ORG_POSITION, {"org_id": org_id, "count": count})
    ).scalar_one()
    return last_sequence, org_id, int(position), int(org_position)


def _number(rows: list[dict[str, Any]], cluster_id: str | None, numbers: Numbers) -> None:
    last_sequence, org_id, last_position, last_org_position = numbers
    count = len(rows)
    for i, row in enumerate(rows):
        row["org_id"] = org_id
        # Events about no pair have sequence 0; a pair's are numbered 1, 2, 3, ...
        row["sequence"] = last_sequence - count + 1 + i if cluster_id is not None else 0
        row["position"] = last_position - count + 1 + i
        row["org_position"] = last_org_position - count + 1 + i


async def emit_event(
    session: AsyncSession,
    cluster_id: str | None,
    type_: str,
    data: dict[str, Any],
    *,
    org_id: str | None = None,
) -> None:
    """Append one event in the caller's transaction, with its webhook deliveries."""
    await emit_events(session, cluster_id, [(type_, data)], org_id=org_id)


async def emit_events(
    session: AsyncSession,
    cluster_id: str | None,
    events: list[tuple[str, dict[str, Any]]],
    *,
    org_id: str | None = None,
) -> list[dict[str, Any]]:
    """Append events, in this order, in the caller's transaction, with their deliveries;
    returns the rows written.

    The pair's `event_seq`, the global `events` counter and the organization's
    `event_position` are incremented in place: each locks its row until commit, so numbers
    are handed out in commit order, without gaps, and a rolled-back transaction gives its
    numbers back.
    """
    if cluster_id is None and org_id is None:
        raise ValueError("an event about no pair needs its organization")
    if not events:
        return []
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {
            "id": new_id("evt"),
            "cluster_id": cluster_id,
            "type": type_,
            "created_at": now,
            "data": data,
        }
        for type_, data in events
    ]
    if session.get_bind().dialect.name == "postgresql":
        numbers, made = await _append_pg(session, cluster_id, org_id, rows)
        _number(rows, cluster_id, numbers)
    else:
        # The endpoints first (their row locks before the counters': the one order).
        deliveries = wanted(await endpoints_for(session, org_id, cluster_id), rows)
        _number(rows, cluster_id, await _take_numbers(session, cluster_id, org_id, len(rows)))
        # Core inserts: the event log is append-only and the hot path of every operation.
        await session.execute(_INSERT_EVENTS, rows)
        if deliveries:
            await session.execute(_INSERT_DELIVERIES, delivery_rows(deliveries, rows))
        made = len(deliveries)
    if made:
        session.info[_DELIVERIES_FLAG] = True
    _publish_after_commit(session)
    return rows


def _publish_after_commit(session: AsyncSession) -> None:
    redis, channel = session.info.get("redis"), session.info.get("events_channel")
    if redis is None or channel is None or session.info.get(_PUBLISH_FLAG):
        return
    session.info[_PUBLISH_FLAG] = True

    async def publish() -> None:
        session.info.pop(_PUBLISH_FLAG, None)
        made_deliveries = session.info.pop(_DELIVERIES_FLAG, False)
        announce(redis, channel, DELIVERIES_MESSAGE if made_deliveries else COMMITTED_MESSAGE)

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
