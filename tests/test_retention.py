"""Retention: old rows of each kind go, young ones stay; a deleted pair's pending
deliveries are not sent. Real database; the worker's job calls app.retention.prune, and
so does this test, with a `now` far enough ahead."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.access.models import AuditRecord
from app.actions.simulated import SimulatedEffect
from app.columns import utcnow
from app.config import Settings
from app.events.models import Event
from app.operations.models import Operation, OperationStep
from app.retention import prune
from app.webhooks.models import WebhookAttempt, WebhookDelivery
from tests.helpers import create_cluster, start_ok, wait_done, wait_for
from tests.receiver import Answer, Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


async def count(sessions: async_sessionmaker[AsyncSession], model: type, *where: object) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def test_old_rows_go_young_rows_stay(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    hook = await client.post("/v1/webhooks", json={"url": receiver.url})
    assert hook.status_code == 201, hook.text
    try:
        await _old_rows_go_young_rows_stay(client, sessions, receiver)
    finally:
        # Deleting the endpoint deletes its deliveries: only once the test has looked.
        await client.delete(f"/v1/webhooks/{hook.json()['id']}")


async def _old_rows_go_young_rows_stay(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    old, young = await create_cluster(client), await create_cluster(client)
    ops = {}
    for pair in (old, young):
        op = await start_ok(client, pair["id"])
        assert (await wait_done(client, op["id"]))["status"] == "succeeded"
        ops[pair["id"]] = op["id"]

    async def delivered() -> bool:
        return all(receiver.bodies_for_cluster(p["id"]) for p in (old, young))

    await wait_for(delivered, timeout_s=60)

    async def attempted() -> bool:
        return (
            await count(
                sessions,
                WebhookDelivery,
                col(WebhookDelivery.cluster_id) == young["id"],
                col(WebhookDelivery.status) == "succeeded",
            )
            > 0
        )

    await wait_for(attempted, timeout_s=60)

    # Everything of the old pair is 500 days old; the young pair's rows are new.
    long_ago = utcnow() - timedelta(days=500)
    old_op = ops[old["id"]]
    async with sessions() as session, session.begin():
        await session.execute(
            update(Event).where(col(Event.cluster_id) == old["id"]).values(created_at=long_ago)
        )
        await session.execute(
            update(Operation).where(col(Operation.id) == old_op).values(created_at=long_ago)
        )
        old_deliveries = select(col(WebhookDelivery.id)).where(
            col(WebhookDelivery.cluster_id) == old["id"]
        )
        await session.execute(
            update(WebhookAttempt)
            .where(col(WebhookAttempt.delivery_id).in_(old_deliveries))
            .values(created_at=long_ago)
        )
        audited = await session.scalar(select(col(AuditRecord.id)).limit(1))
        await session.execute(
            update(AuditRecord).where(col(AuditRecord.id) == audited).values(created_at=long_ago)
        )
    old_events = await count(sessions, Event, col(Event.cluster_id) == old["id"])
    assert old_events > 0
    assert await count(sessions, WebhookDelivery, col(WebhookDelivery.cluster_id) == old["id"])

    pruned = await prune(sessions, Settings(retain_audit_days=100))
    assert pruned.events >= old_events and pruned.operations >= 1 and pruned.audit >= 1

    assert await count(sessions, Event, col(Event.cluster_id) == old["id"]) == 0
    assert await count(sessions, WebhookDelivery, col(WebhookDelivery.cluster_id) == old["id"]) == 0
    assert await count(sessions, Operation, col(Operation.id) == old_op) == 0
    assert await count(sessions, OperationStep, col(OperationStep.operation_id) == old_op) == 0
    assert await count(sessions, SimulatedEffect, col(SimulatedEffect.operation_id) == old_op) == 0
    assert await count(sessions, AuditRecord, col(AuditRecord.id) == audited) == 0
    # The young pair keeps everything.
    young_op = ops[young["id"]]
    assert await count(sessions, Event, col(Event.cluster_id) == young["id"]) > 0
    assert (
        await count(sessions, WebhookDelivery, col(WebhookDelivery.cluster_id) == young["id"]) > 0
    )
    assert await count(sessions, Operation, col(Operation.id) == young_op) == 1
    assert await count(sessions, OperationStep, col(OperationStep.operation_id) == young_op) == 7
    young_deliveries = select(col(WebhookDelivery.id)).where(
        col(WebhookDelivery.cluster_id) == young["id"]
    )
    assert (
        await count(sessions, WebhookAttempt, col(WebhookAttempt.delivery_id).in_(young_deliveries))
        > 0
    )
    # The pair's page still reads (its last operation is gone).
    assert (await client.get(f"/v1/clusters/{old['id']}")).status_code == 200


async def test_an_operation_needing_attention_is_never_pruned(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    pair = await create_cluster(client, fail={"promote_target": 1})
    op = await start_ok(client, pair["id"])
    stuck = await wait_done(client, op["id"])
    assert stuck["needs_attention"] is True
    async with sessions() as session, session.begin():
        await session.execute(
            update(Operation)
            .where(col(Operation.id) == op["id"])
            .values(created_at=utcnow() - timedelta(days=500))
        )
    await prune(sessions, Settings())
    assert await count(sessions, Operation, col(Operation.id) == op["id"]) == 1
    assert (await client.get(f"/v1/operations/{op['id']}")).json()["needs_attention"] is True


async def test_deleting_a_pair_stops_its_pending_deliveries(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.default = Answer(status=503)  # the receiver is down: deliveries keep waiting
    hook = await client.post("/v1/webhooks", json={"url": receiver.url})
    assert hook.status_code == 201, hook.text
    hook_id = hook.json()["id"]
    try:
        pair = await create_cluster(client)
        op = await start_ok(client, pair["id"])
        await wait_done(client, op["id"])

        async def tried() -> bool:
            return bool(receiver.bodies_for_cluster(pair["id"]))

        await wait_for(tried, timeout_s=60)
        assert (await client.delete(f"/v1/clusters/{pair['id']}")).status_code == 204
        page = (
            await client.get(f"/v1/webhooks/{hook_id}/deliveries", params={"page_size": 100})
        ).json()
        mine = [d for d in page["items"] if d.get("cluster_id") == pair["id"]]
        assert mine and all(d["status"] == "failed" for d in mine), mine
        assert all(d["last_error"] == "the pair was deleted" for d in mine)
    finally:
        await client.delete(f"/v1/webhooks/{hook_id}")
