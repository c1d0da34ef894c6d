"""Durability: a SIGKILLed worker, a flushed Redis. The workers are real processes."""

from __future__ import annotations

import signal
from collections import Counter
from datetime import datetime

import httpx
import redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.actions.simulated import SimulatedEffect
from app.domain.plans import STEP_NAMES
from app.operations.models import Operation
from tests.helpers import (
    create_cluster,
    open_gate,
    operation_row,
    start_ok,
    step_status,
    wait_done,
    wait_for,
)
from tests.receiver import Receiver
from tests.stack import Stack
from tests.webhooks.test_pagerduty import incident, pagerduty, receiver, steps  # noqa: F401


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
    # drain_replication applies its effect, then waits inside the call for its gate.
    cluster = await create_cluster(client, hold=["drain_replication"])
    op = await start_ok(client, cluster["id"])

    async def drain_applied() -> bool:
        return (await applied_per_step(sessions, op["id"]))["drain_replication"] == 1

    await wait_for(drain_applied, timeout_s=30)
    owner = await lease_owner(sessions, op["id"])
    assert owner is not None
    epoch_of_victim = (await operation_row(sessions, op["id"])).lease_epoch
    victim = live_stack.worker_by_pid(int(owner.split(":")[1]))
    victim.kill(signal.SIGKILL)  # mid-step: the effect is recorded, the step is not done
    assert await running_step(client, op["id"]) == "drain_replication"
    await open_gate(sessions, cluster["id"], "drain_replication")

    done = await wait_done(client, op["id"], timeout_s=60)
    assert done["status"] == "succeeded", done
    steps = {s["name"]: s for s in done["steps"]}
    # Resumed with the same attempt (same idempotency key), not a new one.
    assert steps["drain_replication"]["attempts"] == 1
    assert await applied_per_step(sessions, op["id"]) == Counter(STEP_NAMES)
    # The victim is dead, so the lease was taken again (a higher epoch) by another worker.
    assert not victim.alive()
    assert (await operation_row(sessions, op["id"])).lease_epoch > epoch_of_victim


async def test_redis_flushed_mid_operation_sweeper_finishes_it(
    client: httpx.AsyncClient,
    live_stack: Stack,
    sessions: async_sessionmaker[AsyncSession],
    redis_url: str,
) -> None:
    cluster = await create_cluster(client, hold=["pause_schedulers"])
    op = await start_ok(client, cluster["id"])

    async def in_second_step() -> bool:
        return (await applied_per_step(sessions, op["id"]))["pause_schedulers"] == 1

    await wait_for(in_second_step, timeout_s=30)
    # Every worker dies and Redis forgets everything: only the database knows.
    for worker in live_stack.live_workers():
        worker.kill(signal.SIGKILL)
    redis.Redis.from_url(redis_url).flushdb()
    await open_gate(sessions, cluster["id"], "pause_schedulers")
    live_stack.ensure_workers()

    done = await wait_done(client, op["id"], timeout_s=60)
    assert done["status"] == "succeeded", done
    assert await applied_per_step(sessions, op["id"]) == Counter(STEP_NAMES)


async def test_sigkill_during_the_rollback_of_a_failed_operation_keeps_its_cause(
    client: httpx.AsyncClient,
    live_stack: Stack,
    sessions: async_sessionmaker[AsyncSession],
    receiver: Receiver,  # noqa: F811
    pagerduty: str,  # noqa: F811
) -> None:
    # drain_replication fails, so the operation rolls back; the undo of pause_schedulers
    # applies its effect, then waits inside the call: the worker is killed right there.
    cluster = await create_cluster(
        client, fail={"drain_replication": 1}, hold=["pause_schedulers:undo"]
    )
    op = await start_ok(client, cluster["id"])

    async def undoing() -> bool:
        async with sessions() as session:
            rows = await session.scalars(
                select(SimulatedEffect).where(
                    col(SimulatedEffect.operation_id) == op["id"],
                    col(SimulatedEffect.action) == "undo",
                )
            )
            return [row.step for row in rows] == ["pause_schedulers"]

    await wait_for(undoing, timeout_s=30)
    owner = await lease_owner(sessions, op["id"])
    assert owner is not None
    live_stack.worker_by_pid(int(owner.split(":")[1])).kill(signal.SIGKILL)
    assert (await client.get(f"/v1/operations/{op['id']}")).json()["status"] == "cancelling"
    await open_gate(sessions, cluster["id"], "pause_schedulers:undo")

    done = await wait_done(client, op["id"], timeout_s=60)
    assert done["status"] == "failed" and done["needs_attention"] is False, done
    assert done["error"]["code"] == "step_failed"
    assert done["error"]["step"] == "drain_replication"
    assert "simulated failure of drain_replication" in done["error"]["detail"]
    assert [s["status"] for s in done["steps"]][:3] == ["rolled_back", "rolled_back", "failed"]
    pair = (await client.get(f"/v1/clusters/{cluster['id']}")).json()
    assert pair["state"] == "primary-active"

    async def escalated() -> bool:
        return ("trigger", "critical") in steps(incident(receiver, op["id"]))

    await wait_for(escalated, timeout_s=60)
    # The dispatcher sends a pair's events in order: the failure arrived, and nothing after
    # it; a cancel would have resolved the incident.
    assert steps(incident(receiver, op["id"])) == [("trigger", "warning"), ("trigger", "critical")]


async def test_a_deadline_is_kept_by_the_worker_that_takes_over(
    client: httpx.AsyncClient, live_stack: Stack, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # switch_traffic (past the point of no return) applies its effect and waits in the call
    # for a gate nobody opens; its deadline is 4 s after it started.
    cluster = await create_cluster(client, hold=["switch_traffic"], timeout_s={"switch_traffic": 4})
    op = await start_ok(client, cluster["id"])

    async def switching() -> bool:
        return (await applied_per_step(sessions, op["id"]))["switch_traffic"] == 1

    await wait_for(switching, timeout_s=30)
    before = next(
        s
        for s in (await client.get(f"/v1/operations/{op['id']}")).json()["steps"]
        if s["name"] == "switch_traffic"
    )
    owner = await lease_owner(sessions, op["id"])
    assert owner is not None
    live_stack.worker_by_pid(int(owner.split(":")[1])).kill(signal.SIGKILL)

    done = await wait_done(client, op["id"], timeout_s=60)
    assert done["status"] == "failed" and done["needs_attention"] is True, done
    assert done["error"]["code"] == "step_timed_out"
    step = next(s for s in done["steps"] if s["name"] == "switch_traffic")
    assert step["status"] == "failed" and step["attempts"] == 1
    # The same instant as before the kill, not a new deadline counted from the takeover.
    assert step["deadline_at"] == before["deadline_at"]
    assert step["error"]["deadline_at"] is not None
    assert datetime.fromisoformat(step["error"]["deadline_at"]) == datetime.fromisoformat(
        before["deadline_at"]
    )
    assert datetime.fromisoformat(step["finished_at"]) >= datetime.fromisoformat(
        before["deadline_at"]
    )
    assert await step_status(client, op["id"], "promote_target") == "succeeded"
