"""Durability: a SIGKILLed worker, a flushed Redis. The workers are real processes."""

from __future__ import annotations

import signal
from collections import Counter

import httpx
import redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.actions.simulated import SimulatedEffect
from app.domain.plans import STEP_NAMES
from app.operations.models import Operation
from tests.helpers import create_cluster, start_ok, wait_done, wait_for
from tests.stack import Stack


async def lease_owner(sessions: async_sessionmaker[AsyncSession], op_id: str) -> str | None:
    async with sessions() as session:
        return await session.scalar(
            select(Operation.lease_owner).where(Operation.id == op_id)  # type: ignore[arg-type]
        )


async def applied_per_step(sessions: async_sessionmaker[AsyncSession], op_id: str) -> Counter[str]:
    async with sessions() as session:
        rows = await session.scalars(
            select(SimulatedEffect).where(
                SimulatedEffect.operation_id == op_id,  # type: ignore[arg-type]
                SimulatedEffect.action == "apply",  # type: ignore[arg-type]
            )
        )
        return Counter(row.step for row in rows)


async def running_step(client: httpx.AsyncClient, op_id: str) -> str | None:
    operation = (await client.get(f"/v1/operations/{op_id}")).json()
    return next((s["name"] for s in operation["steps"] if s["status"] == "running"), None)


async def test_sigkill_mid_step_resumes_on_another_worker(
    client: httpx.AsyncClient, live_stack: Stack, sessions: async_sessionmaker[AsyncSession]
) -> None:
    cluster = await create_cluster(client, step_delay_ms=1500)
    op = await start_ok(client, cluster["id"])

    async def in_third_step() -> str | None:
        step = await running_step(client, op["id"])
        return step if step == "drain_replication" else None

    await wait_for(in_third_step, timeout_s=30)
    owner = await lease_owner(sessions, op["id"])
    assert owner is not None
    victim = live_stack.worker_by_pid(int(owner.split(":")[1]))
    victim.kill(signal.SIGKILL)  # mid-step: the effect is recorded, the step is not done

    done = await wait_done(client, op["id"], timeout_s=60)
    assert done["status"] == "succeeded", done
    steps = {s["name"]: s for s in done["steps"]}
    # Resumed with the same attempt (same idempotency key), not a new one.
    assert steps["drain_replication"]["attempts"] == 1
    assert await applied_per_step(sessions, op["id"]) == Counter(STEP_NAMES)
    finisher = await lease_owner(sessions, op["id"])
    assert finisher is None or finisher != owner
    assert not victim.alive()


async def test_redis_flushed_mid_operation_sweeper_finishes_it(
    client: httpx.AsyncClient,
    live_stack: Stack,
    sessions: async_sessionmaker[AsyncSession],
    redis_url: str,
) -> None:
    cluster = await create_cluster(client, step_delay_ms=1500)
    op = await start_ok(client, cluster["id"])

    async def in_second_step() -> bool:
        return await running_step(client, op["id"]) == "pause_schedulers"

    await wait_for(in_second_step, timeout_s=30)
    # Every worker dies and Redis forgets everything: only the database knows.
    for worker in live_stack.live_workers():
        worker.kill(signal.SIGKILL)
    redis.Redis.from_url(redis_url).flushdb()
    live_stack.ensure_workers()

    done = await wait_done(client, op["id"], timeout_s=60)
    assert done["status"] == "succeeded", done
    assert await applied_per_step(sessions, op["id"]) == Counter(STEP_NAMES)
