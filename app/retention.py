"""Retention: rows older than their kind's TANDEM_RETAIN_*_DAYS go, a small batch per
transaction, so pruning never holds a lock for long. The worker runs it every minute.

- webhook attempts: TANDEM_RETAIN_ATTEMPTS_DAYS (30);
- events, with their deliveries and those deliveries' attempts: TANDEM_RETAIN_EVENTS_DAYS (400);
- finished operations (never one that needs attention), with their steps and the
  simulated action's effects: TANDEM_RETAIN_OPERATIONS_DAYS (400);
- audit records: TANDEM_RETAIN_AUDIT_DAYS (unset: kept).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.access.models import AuditRecord
from app.actions.simulated import SimulatedEffect
from app.columns import utcnow
from app.config import Settings
from app.db import unit_of_work
from app.events.models import Event
from app.operations.models import Operation, OperationStep
from app.webhooks.models import WebhookAttempt, WebhookDelivery

log = logging.getLogger("tandem.retention")

BATCH = 500


@dataclass
class Pruned:
    attempts: int = 0
    events: int = 0
    operations: int = 0
    audit: int = 0

    @property
    def total(self) -> int:
        return self.attempts + self.events + self.operations + self.audit


async def _batches(
    sessions: async_sessionmaker[AsyncSession], oldest: Select[Any], remove: Any
) -> int:
    """Delete what `oldest` selects (ids), BATCH at a time, until none is left."""
    removed = 0
    while True:
        async with unit_of_work(sessions) as session:
            ids = list(await session.scalars(oldest.limit(BATCH)))
            if ids:
                await remove(session, ids)
        removed += len(ids)
        if len(ids) < BATCH:
            return removed


async def _attempts(session: AsyncSession, ids: list[str]) -> None:
    await session.execute(delete(WebhookAttempt).where(col(WebhookAttempt.id).in_(ids)))


async def _events(session: AsyncSession, ids: list[str]) -> None:
    # Locked first: the dispatcher may be recording an attempt of one of these deliveries;
    # it waits, and finds the delivery gone, instead of adding an attempt in between.
    deliveries = list(
        await session.scalars(
            select(col(WebhookDelivery.id))
            .where(col(WebhookDelivery.event_id).in_(ids))
            .with_for_update()
        )
    )
    if deliveries:
        await session.execute(
            delete(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(deliveries))
        )
        await session.execute(
            delete(WebhookDelivery).where(col(WebhookDelivery.id).in_(deliveries))
        )
    await session.execute(delete(Event).where(col(Event.id).in_(ids)))


async def _operations(session: AsyncSession, ids: list[str]) -> None:
    await session.execute(delete(OperationStep).where(col(OperationStep.operation_id).in_(ids)))
    await session.execute(delete(SimulatedEffect).where(col(SimulatedEffect.operation_id).in_(ids)))
    await session.execute(delete(Operation).where(col(Operation.id).in_(ids)))


async def _audit(session: AsyncSession, ids: list[str]) -> None:
    await session.execute(delete(AuditRecord).where(col(AuditRecord.id).in_(ids)))


def _older(column: Any, days: float, now: datetime) -> ColumnElement[bool]:
    return column < now - timedelta(days=days)  # type: ignore[no-any-return]


async def prune(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, now: datetime | None = None
) -> Pruned:
    now = now or utcnow()
    pruned = Pruned()
    pruned.attempts = await _batches(
        sessions,
        select(col(WebhookAttempt.id)).where(
            _older(col(WebhookAttempt.created_at), settings.retain_attempts_days, now)
        ),
        _attempts,
    )
    pruned.events = await _batches(
        sessions,
        select(col(Event.id)).where(
            _older(col(Event.created_at), settings.retain_events_days, now)
        ),
        _events,
    )
    pruned.operations = await _batches(
        sessions,
        select(col(Operation.id)).where(
            col(Operation.done).is_(True),
            # A pair left mid-switch keeps the operation a person must retry.
            col(Operation.needs_attention).is_(False),
            _older(col(Operation.created_at), settings.retain_operations_days, now),
        ),
        _operations,
    )
    if settings.retain_audit_days is not None:
        pruned.audit = await _batches(
            sessions,
            select(col(AuditRecord.id)).where(
                _older(col(AuditRecord.created_at), settings.retain_audit_days, now)
            ),
            _audit,
        )
    if pruned.total:
        log.info("retention removed %s", pruned)
    return pruned
