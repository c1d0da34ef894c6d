"""SIGTERM ends a process cleanly (DESIGN.md section 13): a worker gives its leases back so
another takes the operation at once; an API process finishes what is in flight."""

from __future__ import annotations

import signal
import time
from collections import Counter

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.domain.plans import STEP_NAMES
from tests.helpers import create_cluster, open_gate, operation_row, start_ok, wait_done, wait_for
from tests.operations.test_recovery import applied_per_step, lease_owner
from tests.stack import Stack

LONG_LEASE_S = "60"


async def test_a_worker_sigtermed_mid_step_hands_its_lease_over_at_once(
    client: httpx.AsyncClient, live_stack: Stack, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Workers whose leases run for a minute: one that waited for the victim's to expire
    # would be a minute late, one handed over takes it within the second.
    for worker in live_stack.live_workers():
        worker.kill(signal.SIGTERM)
    long_leased = [live_stack.start_worker(TANDEM_LEASE_TTL_S=LONG_LEASE_S) for _ in range(2)]
    try:
        # drain_replication applies its effect, then waits inside the call for its gate.
        cluster = await create_cluster(client, hold=["drain_replication"])
        op = await start_ok(client, cluster["id"])

        async def drain_applied() -> bool:
            return (await applied_per_step(sessions, op["id"]))["drain_replication"] == 1

        await wait_for(drain_applied, timeout_s=60)
        owner = await lease_owner(sessions, op["id"])
        assert owner is not None
        before = await operation_row(sessions, op["id"])
        assert before.lease_expires_at is not None
        victim = live_stack.worker_by_pid(int(owner.split(":")[1]))
        victim.kill(signal.SIGTERM)  # returns once the process has exited
        assert not victim.alive()

        async def taken_over() -> str | None:
            now = await lease_owner(sessions, op["id"])
            return now if now is not None and now != owner else None

        successor = await wait_for(taken_over, timeout_s=90, interval_s=0.05)
        seen_at = time.time()
        assert successor.split(":")[1] != owner.split(":")[1]
        assert (await operation_row(sessions, op["id"])).lease_epoch > before.lease_epoch
        # Taken before the victim's lease, as last renewed before the signal, ran out.
        assert seen_at < before.lease_expires_at.timestamp(), (
            seen_at,
            before.lease_expires_at,
        )

        await open_gate(sessions, cluster["id"], "drain_replication")
        done = await wait_done(client, op["id"], timeout_s=60)
        assert done["status"] == "succeeded", done
        assert {s["name"]: s["attempts"] for s in done["steps"]}["drain_replication"] == 1
        assert await applied_per_step(sessions, op["id"]) == Counter(STEP_NAMES)
    finally:
        for worker in long_leased:
            worker.kill(signal.SIGTERM)
        live_stack.ensure_workers()
