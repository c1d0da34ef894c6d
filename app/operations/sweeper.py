"""The sweeper: the database says what is unfinished; make sure Redis has it queued.

Runs every few seconds on some worker (arq cron, unique). An unfinished operation whose
lease is free or expired is enqueued under its current lease epoch; a job already queued
under that id is left alone by arq, so sweeping often costs nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, or_, select
from sqlmodel import col

from app.columns import utcnow
from app.context import Context
from app.db import unit_of_work
from app.operations.models import IdempotencyRecord, Operation

log = logging.getLogger("tandem.sweeper")


async def sweep_once(context: Context) -> list[str]:
    now = utcnow()
    async with unit_of_work(context.sessions) as session:
        rows = (
            await session.execute(
                select(col(Operation.id), col(Operation.lease_epoch)).where(
                    Operation.done == False,  # type: ignore[arg-type]  # noqa: E712
                    or_(
                        Operation.lease_owner == None,  # type: ignore[arg-type]  # noqa: E711
                        Operation.lease_expires_at < now,  # type: ignore[arg-type,operator]
                    ),
                    # Parked until a step asks again: the queue holds it until then.
                    or_(col(Operation.wake_at).is_(None), col(Operation.wake_at) <= now),
                )
            )
        ).all()
        await session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.expires_at < now)  # type: ignore[arg-type]
        )
    for operation_id, epoch in rows:
        await context.enqueue(operation_id, epoch)
    if rows:
        log.info("sweeper enqueued %d unfinished operation(s)", len(rows))
    return [operation_id for operation_id, _ in rows]


async def sweep(ctx: dict[str, Any]) -> int:
    context = ctx["context"]
    queued = await sweep_once(context)
    # A pass of every unfinished batch: one lost with a worker is made up here.
    from app.batches import service as batches

    for batch_id in await batches.running_batches(context):
        try:
            await batches.advance(context, batch_id)
        except Exception:
            log.exception("a pass of batch %s failed; the next sweep tries again", batch_id)
    return len(queued)
