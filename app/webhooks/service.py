"""Webhook endpoint use cases: register, read, change, delete, rotate, test, redeliver."""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app import outbound
from app.columns import new_id, utcnow
from app.config import Settings
from app.db import unit_of_work
from app.errors import Conflict, NotFound, Unprocessable
from app.pagination import page_by_creation
from app.webhooks import signing
from app.webhooks.delivery import Request, networks, send
from app.webhooks.models import (
    DeliveryStatus,
    EndpointKind,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.webhooks.schemas import (
    AttemptOut,
    DeliveryOut,
    PingResult,
    WebhookCreate,
    WebhookOut,
    WebhookPatch,
)


async def _guard(url: str, settings: Settings) -> None:
    """Refuse a URL that could never be called, early; each call is checked again.

    Call it before the request's first statement: a DNS lookup is an outbound wait, and
    the request's transaction starts with that statement. With every network allowed,
    names are not looked up here (only addresses written in the URL are checked)."""
    reach = networks(settings)
    try:
        if reach == outbound.Networks.ALL:
            host, _ = outbound.check_url(url)
            if _is_address(host):
                outbound.check_address(host, host, reach)
        else:
            await outbound.check(url, reach)
    except outbound.Refused as exc:
        raise Unprocessable(f"url refused: {exc}", field="url") from None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def mask_routing_key(key: str) -> str:
    """Its last 4 characters at most: enough to tell keys apart, too few to use one."""
    return "…" + key[-4:] if len(key) > 8 else "…"


def mask_url(url: str) -> str:
    """The URL without what often carries a token: user info, query and fragment."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "…@" + netloc.rsplit("@", 1)[1]
    query = "…" if parts.query else ""
    fragment = "…" if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def render(endpoint: WebhookEndpoint, *, reveal: bool = False, full_url: bool = True) -> WebhookOut:
    """`full_url`: whoever may change the endpoint (an admin) sees its URL whole."""
    return WebhookOut(
        id=endpoint.id,
        url=endpoint.url if full_url else mask_url(endpoint.url),
        kind=EndpointKind(endpoint.kind),
        event_types=list(endpoint.event_types),
        routing_key=mask_routing_key(endpoint.routing_key) if endpoint.routing_key else None,
        description=endpoint.description,
        secret=endpoint.secret if reveal else signing.mask(endpoint.secret),
        previous_secret_expires_at=endpoint.previous_secret_expires_at,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        failing_since=endpoint.failing_since,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


async def create(
    session: AsyncSession, org_id: str, body: WebhookCreate, settings: Settings
) -> WebhookEndpoint:
    url = str(body.url) if body.url is not None else settings.pagerduty_events_url
    await _guard(url, settings)
    endpoint = WebhookEndpoint(
        id=new_id("wh"),
        org_id=org_id,
        url=url,
        kind=body.kind,
        event_types=list(body.event_types),
        routing_key=body.routing_key,
        description=body.description,
        secret=signing.new_secret(),
    )
    session.add(endpoint)
    await session.flush()
    return endpoint


async def get(
    session: AsyncSession, org_id: str, endpoint_id: str, *, lock: bool = False
) -> WebhookEndpoint:
    """The endpoint; `lock`: row-locked until commit, so a DELETE racing a change waits for
    it (or wins, and the change finds nothing: 404), never updates a row that is gone."""
    endpoint = await session.get(
        WebhookEndpoint, endpoint_id, populate_existing=True, with_for_update=lock
    )
    if endpoint is None or endpoint.org_id != org_id:
        raise NotFound(f"webhook endpoint {endpoint_id} does not exist")
    return endpoint


async def list_endpoints(
    session: AsyncSession,
    org_id: str,
    page_size: int,
    page_token: str | None,
    *,
    full_url: bool = True,
) -> tuple[list[WebhookOut], str | None]:
    query = select(WebhookEndpoint).where(col(WebhookEndpoint.org_id) == org_id)
    rows, token = await page_by_creation(session, query, WebhookEndpoint, page_size, page_token)
    return [render(e, full_url=full_url) for e in rows], token


async def update(
    session: AsyncSession, org_id: str, endpoint_id: str, body: WebhookPatch, settings: Settings
) -> WebhookEndpoint:
    if body.url is not None:
        await _guard(str(body.url), settings)
    endpoint = await get(session, org_id, endpoint_id, lock=True)
    changes = body.model_dump(exclude_unset=True)
    if body.url is not None:
        endpoint.url = str(body.url)
    if changes.get("event_types") is not None:
        endpoint.event_types = list(changes["event_types"])
    if "routing_key" in changes and body.routing_key is not None:
        endpoint.routing_key = body.routing_key
    if "description" in changes:
        endpoint.description = body.description
    if changes.get("enabled") is not None:
        endpoint.enabled = bool(body.enabled)
        if endpoint.enabled:
            endpoint.disabled_reason = None
            endpoint.failing_since = None
    endpoint.updated_at = utcnow()
    await session.flush()
    return endpoint


async def remove(session: AsyncSession, org_id: str, endpoint_id: str) -> None:
    endpoint = await get(session, org_id, endpoint_id)
    delivery_ids = select(col(WebhookDelivery.id)).where(
        col(WebhookDelivery.endpoint_id) == endpoint_id
    )
    # Lock the deliveries (a dispatcher recording an attempt commits it first; the next
    # finds its delivery gone), then the endpoint (an event adding a delivery for it
    # commits first; the next skips it), in the dispatcher's order, so no attempt or
    # delivery committed meanwhile is left referring to a deleted row.
    await session.execute(delivery_ids.with_for_update())
    await session.execute(
        select(col(WebhookEndpoint.id))
        .where(col(WebhookEndpoint.id) == endpoint_id)
        .with_for_update()
    )
    await session.execute(
        delete(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(delivery_ids))
    )
    await session.execute(
        delete(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint_id)
    )
    await session.delete(endpoint)
    await session.flush()


async def rotate_secret(
    session: AsyncSession, org_id: str, endpoint_id: str, settings: Settings
) -> WebhookEndpoint:
    """A new secret signs from now on; the old one signs too for the overlap period."""
    endpoint = await get(session, org_id, endpoint_id, lock=True)
    now = utcnow()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + timedelta(seconds=settings.webhook_secret_overlap_s)
    endpoint.secret = signing.new_secret()
    endpoint.updated_at = now
    await session.flush()
    return endpoint


async def ping(
    sessions: async_sessionmaker[AsyncSession],
    org_id: str,
    endpoint_id: str,
    http: httpx.AsyncClient,
    settings: Settings,
) -> PingResult:
    """Send a signed `webhook.ping` now and report how the receiver answered.

    The endpoint is read in a transaction that is over before the call: a receiver taking
    its time must not hold one open (on SQLite, the write lock every writer waits for)."""
    async with unit_of_work(sessions) as session:
        endpoint = await get(session, org_id, endpoint_id)
    request = _ping_request(endpoint, utcnow())
    outcome = await send(http, request, settings)
    return PingResult(
        ok=outcome.ok,
        status_code=outcome.status_code,
        duration_ms=outcome.duration_ms,
        error=outcome.error,
    )


def _ping_request(endpoint: WebhookEndpoint, now: datetime) -> Request:
    message_id = new_id("ping")
    body = json.dumps(
        {
            "id": message_id,
            "type": "webhook.ping",
            "created_at": now.isoformat(),
            "cluster_id": None,
            "sequence": 0,
            "data": {"endpoint_id": endpoint.id},
        },
        separators=(",", ":"),
    )
    signers = [endpoint.secret] + ([endpoint.previous_secret] if endpoint.previous_secret else [])
    return Request(endpoint.url, body, signing.headers(message_id, now, body, signers))


async def _render_delivery(session: AsyncSession, delivery: WebhookDelivery) -> DeliveryOut:
    attempts = await session.scalars(
        select(WebhookAttempt)
        .where(col(WebhookAttempt.delivery_id) == delivery.id)
        .order_by(col(WebhookAttempt.attempt))
    )
    pending = delivery.status == DeliveryStatus.PENDING
    return DeliveryOut(
        id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        event_id=delivery.event_id,
        cluster_id=delivery.cluster_id,
        status=DeliveryStatus(delivery.status),
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at if pending else None,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        delivered_at=delivery.delivered_at,
        attempt_log=[
            AttemptOut(
                attempt=a.attempt,
                status_code=a.status_code,
                duration_ms=a.duration_ms,
                error=a.error,
                response_excerpt=a.response_excerpt,
                next_attempt_at=a.next_attempt_at,
                created_at=a.created_at,
            )
            for a in attempts
        ],
    )


async def list_deliveries(
    session: AsyncSession,
    org_id: str,
    endpoint_id: str,
    status: DeliveryStatus | None,
    page_size: int,
    page_token: str | None,
) -> tuple[list[DeliveryOut], str | None]:
    await get(session, org_id, endpoint_id)
    query = select(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint_id)
    if status is not None:
        query = query.where(col(WebhookDelivery.status) == status)
    rows, token = await page_by_creation(
        session, query, WebhookDelivery, page_size, page_token, newest_first=True
    )
    return [await _render_delivery(session, d) for d in rows], token


async def get_delivery(
    session: AsyncSession, org_id: str, endpoint_id: str, delivery_id: str
) -> DeliveryOut:
    await get(session, org_id, endpoint_id)  # another organization's: not found
    delivery = await session.get(WebhookDelivery, delivery_id, populate_existing=True)
    if delivery is None or delivery.endpoint_id != endpoint_id:
        raise NotFound(f"delivery {delivery_id} does not exist")
    return await _render_delivery(session, delivery)


async def redeliver(
    session: AsyncSession, org_id: str, endpoint_id: str, delivery_id: str
) -> DeliveryOut:
    """A new delivery of the same event: same webhook-id, a fresh retry schedule."""
    endpoint = await get(session, org_id, endpoint_id)
    original = await session.get(WebhookDelivery, delivery_id)
    if original is None or original.endpoint_id != endpoint_id:
        raise NotFound(f"delivery {delivery_id} does not exist")
    if not endpoint.enabled:
        raise Conflict("the endpoint is disabled; enable it first", enabled=False)
    copy = WebhookDelivery(
        id=new_id("dlv"),
        endpoint_id=endpoint_id,
        event_id=original.event_id,
        cluster_id=original.cluster_id,
        position=original.position,
        status=DeliveryStatus.PENDING,
        next_attempt_at=utcnow(),
    )
    session.add(copy)
    await session.flush()
    return await _render_delivery(session, copy)
