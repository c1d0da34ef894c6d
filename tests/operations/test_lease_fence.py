"""A run whose lease was taken over writes nothing more, even when the one that took it
is another job of the same worker process (same owner): the lease epoch fences it."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.columns import utcnow
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
from tests.stack import Stack


async def test_a_run_whose_lease_was_retaken_by_its_own_worker_writes_nothing(
    client: httpx.AsyncClient, live_stack: Stack, sessions: async_sessionmaker[AsyncSession]
) -> None:
    pair = await create_cluster(client, hold=["promote_target"])
    op_id = (await start_ok(client, pair["id"]))["id"]

    async def promoting() -> bool:
        return await step_status(client, op_id, "promote_target") == "running"

    await wait_for(promoting, timeout_s=60)
    held = await operation_row(sessions, op_id)
    assert held.lease_owner is not None
    # What a late renewal followed by a second job of the same worker leaves: the same
    # owner, the next epoch. Done in one statement, so that no other worker slips in.
    async with sessions() as session, session.begin():
        await session.execute(
            update(Operation)
            .where(Operation.id == op_id)  # type: ignore[arg-type]
            .values(
                lease_epoch=Operation.lease_epoch + 1,
                lease_expires_at=utcnow() + timedelta(minutes=5),
            )
        )
    worker = live_stack.worker_by_pid(int(held.lease_owner.split(":")[1]))
    gave_up = re.compile(rf"lost the lease on {op_id}|operation {op_id} was taken over")

    async def stale_run_stopped() -> bool:
        return bool(gave_up.search(worker.log_path.read_text(errors="replace")))

    await wait_for(stale_run_stopped, timeout_s=30)
    # The stale run neither recorded the step nor gave the lease back.
    assert await step_status(client, op_id, "promote_target") == "running"
    now = await operation_row(sessions, op_id)
    assert (now.lease_owner, now.lease_epoch) == (held.lease_owner, held.lease_epoch + 1)

    # Given back, the operation is swept up again and finishes once.
    await open_gate(sessions, pair["id"], "promote_target")
    async with sessions() as session, session.begin():
        await session.execute(
            update(Operation)
            .where(Operation.id == op_id)  # type: ignore[arg-type]
            .values(lease_owner=None, lease_expires_at=None)
        )
    done = await wait_done(client, op_id, timeout_s=120)
    assert done["status"] == "succeeded", done
    assert [s["status"] for s in done["steps"]].count("succeeded") == len(done["steps"])
