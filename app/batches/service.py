"""A region's evacuation: one batch, one operation per pair that must move, at most
`max_parallel` of them running at once.

The batch and its items are rows; what drives them is `advance`, a pass that settles the
items whose operation has ended, starts pending ones while fewer than `max_parallel` run,
and ends the batch when nothing is left. A pass runs when the batch is created (a queued
job), each time one of its operations ends (on the worker that ended it) and on every
sweep (so a pass lost with a worker is made up within seconds). Every start happens in a
transaction of its own that first locks the batch row and counts what runs: however many
passes run at once, they never start more than `max_parallel` between them.
"""

from __future__ import annotations

import logging

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.batches.models import Batch, BatchItem, BatchStatus, ItemStatus
from app.batches.schemas import BatchCounts, BatchOut, BatchPair, EvacuateRequest
from app.clusters.models import Cluster
from app.columns import new_id, utcnow
from app.context import Context
from app.db import after_commit, unit_of_work
from app.domain.plans import Mode, OperationKind, OperationStatus
from app.domain.states import ClusterState
from app.errors import NotFound, Problem
from app.events.service import emit_event
from app.operations import service as operations
from app.operations.models import Operation
from app.operations.schemas import OperationRequest
from app.pagination import decode_int_key, encode_token, page_by_creation

log = logging.getLogger("tandem.batches")

RUN_BATCH = "run_batch"
ENDED = {
    OperationStatus.SUCCEEDED.value: ItemStatus.SUCCEEDED,
    OperationStatus.FAILED.value: ItemStatus.FAILED,
    OperationStatus.CANCELLED.value: ItemStatus.CANCELLED,
}


def _moves(cluster: Cluster, region: str) -> OperationKind | None:
    """What takes the pair's active side out of `region`: a failover where it is the
    primary's region, a failback where it is the secondary's; None: nothing of it runs
    there (or it is mid-switch, see _mid_switch)."""
    if cluster.state == ClusterState.PRIMARY_ACTIVE and cluster.primary["region"] == region:
        return OperationKind.FAILOVER
    if cluster.state == ClusterState.SECONDARY_ACTIVE and cluster.secondary["region"] == region:
        return OperationKind.FAILBACK
    return None


def _mid_switch(cluster: Cluster, region: str) -> bool:
    return cluster.state in (ClusterState.FAILING_OVER, ClusterState.FAILING_BACK) and region in (
        cluster.primary["region"],
        cluster.secondary["region"],
    )


def _not_ready(cluster: Cluster, kind: OperationKind) -> bool:
    readiness = cluster.readiness or {}
    return readiness.get("ready") is False and readiness.get("operation") == kind.value


async def evacuate(
    session: AsyncSession,
    context: Context,
    org_id: str,
    region: str,
    body: EvacuateRequest,
    requested_by: str | None,
) -> Batch:
    clusters = list(
        await session.scalars(
            select(Cluster).where(col(Cluster.org_id) == org_id).order_by(col(Cluster.name))
        )
    )
    if not any(region in (c.primary["region"], c.secondary["region"]) for c in clusters):
        # Most likely a typo: an empty batch would say "done" and move nothing.
        raise NotFound(f"no pair has a site in region {region!r}", region=region)
    batch = Batch(
        id=new_id("bt"),
        org_id=org_id,
        kind="evacuate",
        region=region,
        status=BatchStatus.RUNNING.value,
        mode=body.mode.value,
        reason=body.reason,
        accept_data_loss=body.accept_data_loss,
        ignore_readiness=body.ignore_readiness,
        max_parallel=body.max_parallel,
        labels=dict(body.labels),
        requested_by=requested_by,
    )
    session.add(batch)
    await session.flush()
    position = 0
    for cluster in clusters:
        if any(cluster.labels.get(k) != v for k, v in body.labels.items()):
            continue
        kind = _moves(cluster, region)
        status, detail = ItemStatus.PENDING, None
        if kind is None:
            if not _mid_switch(cluster, region):
                continue
            kind = (
                OperationKind.FAILOVER
                if cluster.state == ClusterState.FAILING_OVER
                else OperationKind.FAILBACK
            )
            status, detail = ItemStatus.SKIPPED, f"already {cluster.state}"
        elif body.mode is Mode.PLANNED and not body.ignore_readiness and _not_ready(cluster, kind):
            status = ItemStatus.SKIPPED
            detail = 'not ready (its last readiness evaluation failed); send "ignore_readiness"'
        session.add(
            BatchItem(
                batch_id=batch.id,
                position=position,
                cluster_id=cluster.id,
                cluster_name=cluster.name,
                kind=kind.value,
                status=status.value,
                detail=detail,
            )
        )
        position += 1
    await session.flush()
    counts = await _counts(session, batch.id)
    await emit_event(
        session,
        None,
        "batch.created",
        {
            "batch_id": batch.id,
            "kind": batch.kind,
            "region": region,
            "total": position,
            "to_start": counts.pending,
            "skipped": counts.skipped,
        },
        org_id=org_id,
    )
    batch_id = batch.id
    after_commit(session, lambda: enqueue_pass(context, batch_id, "created"))
    return batch


async def enqueue_pass(context: Context, batch_id: str, why: str) -> None:
    try:
        await context.redis.enqueue_job(
            RUN_BATCH,
            batch_id,
            _job_id=f"batch:{batch_id}:{why}",
            _queue_name=context.settings.queue_name,
        )
    except Exception:
        log.warning("could not enqueue a pass of batch %s; the sweeper will", batch_id)


async def _lock(session: AsyncSession, batch_id: str) -> Batch | None:
    """The batch, its row locked until commit (an UPDATE locks it on every backend)."""
    return await session.scalar(
        update(Batch)
        .where(col(Batch.id) == batch_id, col(Batch.done).is_(False))
        .values(passes=col(Batch.passes) + 1)
        .returning(Batch)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


# An item, and how many of its batch's items run (one statement: a batch's start is on
# the hot path of an evacuation).
_RUNNING = BatchItem.__table__.alias("running")  # type: ignore[attr-defined]
_ITEM_AND_RUNNING = select(
    BatchItem,
    select(func.count())
    .select_from(_RUNNING)
    .where(
        _RUNNING.c.batch_id == bindparam("b_batch"),
        _RUNNING.c.status == ItemStatus.RUNNING.value,
    )
    .scalar_subquery(),
).where(
    col(BatchItem.batch_id) == bindparam("b_batch"),
    col(BatchItem.position) == bindparam("b_position"),
)


# Batches with a pass running in this process -> whether another was asked for meanwhile.
_passing: dict[str, bool] = {}


async def advance(context: Context, batch_id: str) -> None:
    """A pass of the batch. Asked for again while one runs in this process (operations
    of a batch end together), it only makes that one go round once more: one pass at a
    time per process, not one per ended operation queueing on the batch's row lock."""
    if batch_id in _passing:
        _passing[batch_id] = True
        return
    _passing[batch_id] = False
    try:
        while True:
            await _one_pass(context, batch_id)
            if not _passing[batch_id]:
                return
            _passing[batch_id] = False
    finally:
        del _passing[batch_id]


async def _one_pass(context: Context, batch_id: str) -> None:
    """Settle, start what may start, settle again (and end the batch)."""
    pending = await _settle(context, batch_id)
    for position in pending:
        if not await _start_one(context, batch_id, position):
            break
    await _settle(context, batch_id)


async def _settle(context: Context, batch_id: str) -> list[int]:
    """Items whose operation ended take its outcome; a cancelled batch drops what has not
    started; a batch with nothing pending or running ends. The positions of the pending
    items that may start now (as many as there are free places)."""
    async with unit_of_work(context.sessions) as session:
        batch = await _lock(session, batch_id)
        if batch is None:
            return []
        rows = await session.execute(
            select(BatchItem, col(Operation.status))
            .join(Operation, col(Operation.id) == col(BatchItem.operation_id))
            .where(
                col(BatchItem.batch_id) == batch_id,
                col(BatchItem.status) == ItemStatus.RUNNING.value,
                col(Operation.done).is_(True),
            )
        )
        now = utcnow()
        for item, status in rows:
            item.status = ENDED.get(status, ItemStatus.FAILED).value
            item.updated_at = now
        if batch.cancel_requested:
            await session.execute(
                update(BatchItem)
                .where(
                    col(BatchItem.batch_id) == batch_id,
                    col(BatchItem.status) == ItemStatus.PENDING.value,
                )
                .values(status=ItemStatus.CANCELLED.value, detail="the batch was cancelled")
                .execution_options(synchronize_session=False)
            )
        await session.flush()
        counts = await _counts(session, batch_id)
        if counts.pending == 0 and counts.running == 0:
            await _finish(session, batch, counts)
            return []
        free = batch.max_parallel - counts.running
        if free <= 0 or batch.cancel_requested:
            return []
        return list(
            await session.scalars(
                select(col(BatchItem.position))
                .where(
                    col(BatchItem.batch_id) == batch_id,
                    col(BatchItem.status) == ItemStatus.PENDING.value,
                )
                .order_by(col(BatchItem.position))
                .limit(free)
            )
        )


async def _start_one(context: Context, batch_id: str, position: int) -> bool:
    """Starts one pending item's operation if a place is free; False when none is."""
    try:
        async with unit_of_work(context.sessions) as session:
            batch = await _lock(session, batch_id)
            if batch is None or batch.cancel_requested:
                return False
            found = (
                await session.execute(
                    _ITEM_AND_RUNNING, {"b_batch": batch_id, "b_position": position}
                )
            ).first()
            if found is None:
                return True
            item, running = found
            if running >= batch.max_parallel:
                return False
            if item.status != ItemStatus.PENDING.value:
                return True
            request = OperationRequest(
                mode=Mode(batch.mode),
                reason=batch.reason,
                accept_data_loss=batch.accept_data_loss,
                ignore_readiness=batch.ignore_readiness,
            )
            operation = await operations.start(
                session,
                context.enqueue,
                batch.org_id,
                item.cluster_id,
                OperationKind(item.kind),
                request,
                batch.requested_by,
                batch_id=batch_id,
            )
            item.status = ItemStatus.RUNNING.value
            item.operation_id = operation.id
            item.updated_at = utcnow()
        return True
    except Problem as refused:
        # Refused (the pair moved, was deleted, or has an operation of its own): skipped,
        # with the reason; the batch goes on.
        async with unit_of_work(context.sessions) as session:
            await session.execute(
                update(BatchItem)
                .where(
                    col(BatchItem.batch_id) == batch_id,
                    col(BatchItem.position) == position,
                    col(BatchItem.status) == ItemStatus.PENDING.value,
                )
                .values(
                    status=ItemStatus.SKIPPED.value,
                    detail=f"refused: {refused.detail}"[:1000],
                    updated_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
        return True


async def _finish(session: AsyncSession, batch: Batch, counts: BatchCounts) -> None:
    if batch.cancel_requested:
        status = BatchStatus.CANCELLED
    elif counts.failed or counts.cancelled:
        status = BatchStatus.FAILED
    else:
        status = BatchStatus.SUCCEEDED
    batch.status = status.value
    batch.done = True
    batch.finished_at = utcnow()
    await emit_event(
        session,
        None,
        "batch.finished",
        {
            "batch_id": batch.id,
            "kind": batch.kind,
            "region": batch.region,
            "status": status.value,
            "counts": counts.model_dump(),
        },
        org_id=batch.org_id,
    )
    log.info("batch %s %s: %s", batch.id, status.value, counts.model_dump())


async def _counts(session: AsyncSession, batch_id: str) -> BatchCounts:
    rows = await session.execute(
        select(col(BatchItem.status), func.count())
        .where(col(BatchItem.batch_id) == batch_id)
        .group_by(col(BatchItem.status))
    )
    return BatchCounts(**{status: n for status, n in rows})


async def get(session: AsyncSession, org_id: str, batch_id: str) -> Batch:
    batch = await session.get(Batch, batch_id)
    if batch is None or batch.org_id != org_id:
        raise NotFound(f"batch {batch_id} not found")
    return batch


async def cancel(session: AsyncSession, org_id: str, batch_id: str) -> Batch:
    """Starts nothing new; what runs runs to its end. Cancelling a finished batch changes
    nothing (its status says how it ended)."""
    await get(session, org_id, batch_id)  # 404 for another organization's
    locked = await _lock(session, batch_id)
    if locked is not None and not locked.cancel_requested:
        locked.cancel_requested = True
        await session.flush()
    return await get(session, org_id, batch_id)


async def render(
    session: AsyncSession, batch: Batch, page_size: int = 100, page_token: str | None = None
) -> BatchOut:
    after = decode_int_key(page_token)
    query = select(BatchItem).where(col(BatchItem.batch_id) == batch.id)
    if after is not None:
        query = query.where(col(BatchItem.position) > after)
    items = list(
        await session.scalars(query.order_by(col(BatchItem.position)).limit(page_size + 1))
    )
    more = len(items) > page_size
    items = items[:page_size]
    counts = await _counts(session, batch.id)
    total = sum(counts.model_dump().values())
    return BatchOut(
        id=batch.id,
        kind=batch.kind,
        region=batch.region,
        status=BatchStatus(batch.status),
        done=batch.done,
        mode=Mode(batch.mode),
        reason=batch.reason,
        max_parallel=batch.max_parallel,
        labels=batch.labels,
        ignore_readiness=batch.ignore_readiness,
        requested_by=batch.requested_by,
        cancel_requested=batch.cancel_requested,
        total=total,
        counts=counts,
        pairs=[
            BatchPair(
                cluster_id=item.cluster_id,
                name=item.cluster_name,
                kind=OperationKind(item.kind),
                status=ItemStatus(item.status),
                operation_id=item.operation_id,
                detail=item.detail,
            )
            for item in items
        ],
        next_page_token=encode_token([items[-1].position]) if more else None,
        created_at=batch.created_at,
        finished_at=batch.finished_at,
        links={"self": f"/v1/batches/{batch.id}", "cancel": f"/v1/batches/{batch.id}/cancel"},
    )


async def list_batches(
    session: AsyncSession, org_id: str, page_size: int, page_token: str | None
) -> tuple[list[BatchOut], str | None]:
    query = select(Batch).where(col(Batch.org_id) == org_id)
    rows, token = await page_by_creation(
        session, query, Batch, page_size, page_token, newest_first=True
    )
    # In a list, each batch's counts and its first pairs only.
    return [await render(session, batch, page_size=10) for batch in rows], token


async def running_batches(context: Context) -> list[str]:
    async with unit_of_work(context.sessions) as session:
        return list(await session.scalars(select(col(Batch.id)).where(col(Batch.done).is_(False))))
