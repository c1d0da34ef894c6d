"""Webhook delivery: from committed delivery rows to receivers, at least once.

One worker at a time holds the `webhook-dispatcher` lease (renewed like an operation's;
taken over when its holder dies). It sends each endpoint's deliveries for a pair in
event order, one lane per (endpoint, pair), lanes concurrently, so a slow or dead
receiver holds up only its own lane and never an operation. Every attempt is a row; one
that cannot be written is still counted, and the next waits its turn on the schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from datetime import datetime, timedelta

import httpx
from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.columns import new_id, utcnow
from app.config import Settings
from app.coordination import Lease
from app.db import unit_of_work
from app.events.models import Event
from app.events.service import emit_event
from app.metrics.process import webhook_delivered
from app.webhooks.delivery import Outcome, build_request, next_delay, send
from app.webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint

log = logging.getLogger("tandem.dispatcher")

LEASE_NAME = "webhook-dispatcher"
# Deliveries sent between two writes of their results, per lane.
BATCH = 50
Lane = tuple[str, str | None]


class Dispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        http: httpx.AsyncClient,
        settings: Settings,
        owner: str,
    ) -> None:
        self._sessions = sessions
        self._http = http
        self._settings = settings
        self._owner = owner
        self._lanes: dict[Lane, asyncio.Task[None]] = {}
        self.wake = asyncio.Event()

    # -- leadership ----------------------------------------------------------

    async def hold_lease(self) -> bool:
        now = utcnow()
        ttl = timedelta(seconds=self._settings.dispatcher_lease_ttl_s)
        async with unit_of_work(self._sessions) as session:
            result = await session.execute(
                update(Lease)
                .where(
                    col(Lease.name) == LEASE_NAME,
                    or_(
                        col(Lease.owner) == self._owner,
                        col(Lease.owner).is_(None),
                        col(Lease.expires_at) < now,
                    ),
                )
                .values(owner=self._owner, expires_at=now + ttl)
                .execution_options(synchronize_session=False)
            )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def release_lease(self) -> None:
        async with unit_of_work(self._sessions) as session:
            await session.execute(
                update(Lease)
                .where(col(Lease.name) == LEASE_NAME, col(Lease.owner) == self._owner)
                .values(owner=None, expires_at=None)
                .execution_options(synchronize_session=False)
            )

    async def run_forever(self) -> None:
        renew_every = self._settings.dispatcher_lease_ttl_s / 3
        leader, renewed = False, 0.0
        try:
            while True:
                try:
                    if not leader or time.monotonic() - renewed > renew_every:
                        leader = await self.hold_lease()
                        renewed = time.monotonic()
                    if leader:
                        await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("dispatcher round failed")
                    leader = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.wake.wait(), timeout=0.25 if leader else renew_every
                    )
                self.wake.clear()
        finally:
            for task in self._lanes.values():
                task.cancel()
            if leader:
                with contextlib.suppress(Exception):
                    await self.release_lease()

    # -- sending -------------------------------------------------------------

    async def tick(self) -> int:
        """Start a lane for every (endpoint, pair) with deliveries due and no lane yet."""
        async with unit_of_work(self._sessions) as session:
            rows = (
                await session.execute(
                    select(
                        col(WebhookDelivery.id),
                        col(WebhookDelivery.endpoint_id),
                        col(WebhookDelivery.cluster_id),
                    )
                    .where(
                        col(WebhookDelivery.status) == DeliveryStatus.PENDING,
                        col(WebhookDelivery.next_attempt_at) <= utcnow(),
                    )
                    .order_by(col(WebhookDelivery.position))
                    .limit(1000)
                )
            ).all()
        lanes: dict[Lane, list[str]] = defaultdict(list)
        for delivery_id, endpoint_id, cluster_id in rows:
            lanes[(endpoint_id, cluster_id)].append(delivery_id)
        started = 0
        for lane, ids in lanes.items():
            if lane in self._lanes:
                continue
            self._lanes[lane] = asyncio.create_task(self._run_lane(lane, ids))
            started += 1
        return started

    async def _run_lane(self, lane: Lane, delivery_ids: list[str]) -> None:
        try:
            for start in range(0, len(delivery_ids), BATCH):
                if not await self._send_batch(lane, delivery_ids[start : start + BATCH]):
                    break  # the rest are tried on the next round, on their own schedule
        except Exception:
            log.exception("lane %s failed", lane)
        finally:
            self._lanes.pop(lane, None)
            self.wake.set()

    async def _send_batch(self, lane: Lane, delivery_ids: list[str]) -> bool:
        """Send a lane's deliveries in order, reading them in one transaction and
        recording the successes in another; a failure is recorded on its own and ends
        the batch. A crash in between re-sends at most one batch (same webhook-id)."""
        endpoint_id = lane[0]
        async with unit_of_work(self._sessions) as session:
            endpoint = await session.get(WebhookEndpoint, endpoint_id, populate_existing=True)
            rows = list(
                await session.scalars(
                    select(WebhookDelivery)
                    .where(
                        col(WebhookDelivery.id).in_(delivery_ids),
                        col(WebhookDelivery.status) == DeliveryStatus.PENDING,
                    )
                    .order_by(col(WebhookDelivery.position))
                )
            )
            events = {
                event.id: event
                for event in await session.scalars(
                    select(Event).where(col(Event.id).in_([d.event_id for d in rows]))
                )
            }
        if endpoint is None or not endpoint.enabled:
            for delivery in rows:
                await self.attempt(delivery.id)  # settles each as failed, with the reason
            return True
        sent: list[tuple[WebhookDelivery, Outcome]] = []
        settled = True
        for delivery in rows:
            event = events.get(delivery.event_id)
            request = build_request(endpoint, event, utcnow(), self._settings) if event else None
            if request is None:
                settled = await self.attempt(delivery.id)
                continue
            outcome = await send(self._http, request, self._settings)
            webhook_delivered(endpoint.org_id, outcome.ok)
            if not outcome.ok:
                await self._record_sent(sent)
                sent = []
                settled = await self.record(delivery.id, delivery.attempts, outcome)
                break
            sent.append((delivery, outcome))
        await self._record_sent(sent)
        return settled

    async def _record_sent(self, sent: list[tuple[WebhookDelivery, Outcome]]) -> None:
        if not sent:
            return
        try:
            await self._write_sent(sent)
        except Exception as exc:
            log.exception("could not record %d sent deliveries", len(sent))
            await self._put_off({d.id: d.attempts for d, _ in sent}, exc)

    async def _write_sent(self, sent: list[tuple[WebhookDelivery, Outcome]]) -> None:
        now = utcnow()
        async with unit_of_work(self._sessions) as session:
            # One statement per status code (all 2xx) for the batch; the status guard
            # keeps a delivery that another dispatcher settled meanwhile as it is.
            by_code: dict[int | None, list[str]] = defaultdict(list)
            for delivery, outcome in sent:
                by_code[outcome.status_code].append(delivery.id)
            for code, ids in by_code.items():
                await session.execute(
                    update(WebhookDelivery)
                    .where(
                        col(WebhookDelivery.id).in_(ids),
                        col(WebhookDelivery.status) == DeliveryStatus.PENDING,
                    )
                    .values(
                        status=DeliveryStatus.SUCCEEDED,
                        attempts=WebhookDelivery.attempts + 1,
                        delivered_at=now,
                        last_status_code=code,
                        last_error=None,
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
            await session.execute(
                insert(WebhookAttempt),
                [
                    {
                        "id": new_id("att"),
                        "delivery_id": delivery.id,
                        "attempt": delivery.attempts + 1,
                        "status_code": outcome.status_code,
                        "duration_ms": outcome.duration_ms,
                        "response_excerpt": outcome.excerpt,
                        "created_at": now,
                    }
                    for delivery, outcome in sent
                ],
            )
            await session.execute(
                update(WebhookEndpoint)
                .where(
                    col(WebhookEndpoint.id) == sent[0][0].endpoint_id,
                    col(WebhookEndpoint.failing_since).is_not(None),
                )
                .values(failing_since=None)
                .execution_options(synchronize_session=False)
            )

    async def attempt(self, delivery_id: str) -> bool:
        """One attempt at one delivery. True when it is settled (sent, or given up)."""
        async with unit_of_work(self._sessions) as session:
            delivery = await session.get(WebhookDelivery, delivery_id, populate_existing=True)
            if delivery is None or delivery.status != DeliveryStatus.PENDING:
                return True
            endpoint = await session.get(WebhookEndpoint, delivery.endpoint_id)
            event = await session.get(Event, delivery.event_id)
            if endpoint is None or event is None or not endpoint.enabled:
                delivery.status = DeliveryStatus.FAILED
                delivery.last_error = "endpoint disabled or deleted"
                delivery.updated_at = utcnow()
                return True
            request = build_request(endpoint, event, utcnow(), self._settings)
            prior_attempts = delivery.attempts
            if request is None:
                delivery.status = DeliveryStatus.SUCCEEDED
                delivery.last_error = "nothing to send for this endpoint kind"
                return True

        outcome = await send(self._http, request, self._settings)
        webhook_delivered(endpoint.org_id, outcome.ok)
        return await self.record(delivery_id, prior_attempts, outcome)

    async def record(self, delivery_id: str, prior_attempts: int, outcome: Outcome) -> bool:
        """Record one attempt and settle or reschedule its delivery. True when it is settled."""
        try:
            return await self._write_attempt(delivery_id, prior_attempts, outcome)
        except Exception as exc:
            log.exception("could not record attempt %d of %s", prior_attempts + 1, delivery_id)
            await self._put_off({delivery_id: prior_attempts}, exc)
            return False

    async def _put_off(self, prior_attempts: dict[str, int], error: Exception) -> None:
        """The attempts were made but could not be recorded: count them and push each
        delivery's next attempt back on the retry schedule, as for a failed attempt, so
        that an answer which cannot be stored is not asked for again at once, in a loop."""
        now = utcnow()
        # The type only: the message of a database error quotes the values it refused.
        reason = f"the attempt could not be recorded ({type(error).__name__})"
        async with unit_of_work(self._sessions) as session:
            for delivery_id, prior in prior_attempts.items():
                delay = next_delay(prior + 1, None, self._settings)
                next_at = None if delay is None else now + timedelta(seconds=delay)
                await session.execute(
                    update(WebhookDelivery)
                    .where(
                        col(WebhookDelivery.id) == delivery_id,
                        col(WebhookDelivery.status) == DeliveryStatus.PENDING,
                        # Recorded meanwhile by another dispatcher: theirs stands.
                        col(WebhookDelivery.attempts) == prior,
                    )
                    .values(
                        attempts=prior + 1,
                        status=DeliveryStatus.FAILED if next_at is None else DeliveryStatus.PENDING,
                        next_attempt_at=next_at,
                        last_error=reason,
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )

    async def _write_attempt(self, delivery_id: str, prior_attempts: int, outcome: Outcome) -> bool:
        now = utcnow()
        async with unit_of_work(self._sessions) as session:
            delivery = await session.get(
                WebhookDelivery, delivery_id, populate_existing=True, with_for_update=True
            )
            if delivery is None or delivery.status != DeliveryStatus.PENDING:
                return True
            if delivery.attempts != prior_attempts:
                return True  # another dispatcher recorded this attempt already
            endpoint = await session.get(
                WebhookEndpoint, delivery.endpoint_id, populate_existing=True
            )
            assert endpoint is not None
            delivery.attempts += 1
            delivery.last_status_code = outcome.status_code
            delivery.last_error = outcome.error
            delivery.updated_at = now
            next_at: datetime | None = None
            if outcome.ok:
                delivery.status = DeliveryStatus.SUCCEEDED
                delivery.delivered_at = now
                endpoint.failing_since = None
            else:
                gone = outcome.status_code == 410
                delay = (
                    None
                    if (gone or outcome.permanent)
                    else next_delay(delivery.attempts, outcome.retry_after_s, self._settings)
                )
                if delay is None:
                    delivery.status = DeliveryStatus.FAILED
                    delivery.next_attempt_at = None
                else:
                    next_at = now + timedelta(seconds=delay)
                    delivery.next_attempt_at = next_at
                endpoint.failing_since = endpoint.failing_since or now
                failing_for = (now - endpoint.failing_since).total_seconds()
                if endpoint.enabled and gone:
                    await self._disable(session, endpoint, "the receiver answered 410 Gone")
                elif endpoint.enabled and failing_for >= self._settings.webhook_disable_after_s:
                    await self._disable(
                        session,
                        endpoint,
                        f"every attempt failed for {int(failing_for)} s",
                    )
            session.add(
                WebhookAttempt(
                    id=new_id("att"),
                    delivery_id=delivery.id,
                    attempt=delivery.attempts,
                    status_code=outcome.status_code,
                    duration_ms=outcome.duration_ms,
                    error=outcome.error,
                    response_excerpt=outcome.excerpt,
                    next_attempt_at=next_at,
                    created_at=now,
                )
            )
        return outcome.ok

    async def _disable(self, session: AsyncSession, endpoint: WebhookEndpoint, reason: str) -> None:
        endpoint.enabled = False
        endpoint.disabled_reason = reason
        endpoint.updated_at = utcnow()
        await session.flush()
        log.warning("webhook endpoint %s disabled: %s", endpoint.id, reason)
        await emit_event(
            session,
            None,
            "webhook.endpoint_disabled",
            {"endpoint_id": endpoint.id, "url": endpoint.url, "reason": reason},
            org_id=endpoint.org_id,
        )
