"""How a step runs: deadlines, transient failures retried inside the step, and steps that
wait without holding a worker slot. Driven through the public API, real processes."""

from __future__ import annotations

import signal

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers import (
    create_cluster,
    effects_of,
    events,
    open_gate,
    start_ok,
    step_status,
    wait_done,
    wait_for,
)
from tests.stack import Stack


async def test_a_step_waiting_past_its_deadline_times_out_and_rolls_back(
    client: httpx.AsyncClient,
) -> None:
    # drain_replication answers "not yet" for ever; it may take 1 s.
    cluster = await create_cluster(
        client, gate=["drain_replication"], timeout_s={"drain_replication": 1}
    )
    op = await start_ok(client, cluster["id"])
    done = await wait_done(client, op["id"])
    assert done["status"] == "failed" and done["needs_attention"] is False, done
    assert done["error"]["code"] == "step_timed_out"
    assert done["error"]["step"] == "drain_replication"
    statuses = [s["status"] for s in done["steps"]]
    assert statuses == ["rolled_back", "rolled_back", "failed"] + ["skipped"] * 4
    drain = done["steps"][2]
    assert drain["error"]["code"] == "step_timed_out"
    assert drain["error"]["deadline_at"] is not None
    pair = (await client.get(f"/v1/clusters/{cluster['id']}")).json()
    assert pair["state"] == "primary-active"
    timed_out = [e for e in await events(client, cluster["id"]) if e["type"].endswith("timed_out")]
    assert [(e["type"], e["data"]["step"]) for e in timed_out] == [
        ("operation.step_timed_out", "drain_replication")
    ]
    assert timed_out[0]["data"]["deadline_at"] == drain["error"]["deadline_at"]


async def test_a_step_slower_than_its_deadline_past_the_point_of_no_return_needs_attention(
    client: httpx.AsyncClient,
) -> None:
    # Every step takes 1.2 s; switch_traffic may take 0.5 s.
    cluster = await create_cluster(client, step_delay_ms=1200, timeout_s={"switch_traffic": 0.5})
    op = await start_ok(client, cluster["id"])
    done = await wait_done(client, op["id"])
    assert done["status"] == "failed" and done["needs_attention"] is True, done
    assert done["error"]["code"] == "step_timed_out"
    assert done["error"]["step"] == "switch_traffic"
    pair = (await client.get(f"/v1/clusters/{cluster['id']}")).json()
    assert pair["state"] == "failing-over" and pair["needs_attention"] is True
    kinds = [e["type"] for e in await events(client, cluster["id"])]
    assert kinds.count("operation.step_timed_out") == 1
    assert kinds[-1] == "operation.failed"


async def test_transient_failures_are_retried_inside_the_step_with_one_key(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    cluster = await create_cluster(client, fail_transient={"switch_traffic": 2})
    op = await start_ok(client, cluster["id"])
    done = await wait_done(client, op["id"])
    assert done["status"] == "succeeded", done
    switch = next(s for s in done["steps"] if s["name"] == "switch_traffic")
    assert switch["attempts"] == 1 and switch["error"] is None
    calls = [e for e in await effects_of(sessions, op["id"]) if e.step == "switch_traffic"]
    key = f"{op['id']}:switch_traffic:1"
    # Two refused calls, then the effect, all under the step's one idempotency key.
    assert [(c.action, c.attempt) for c in calls] == [
        ("transient", 1),
        ("transient", 1),
        ("apply", 1),
    ]
    assert [c.output["key"] for c in calls[:2]] == [key, key]
    assert calls[2].idempotency_key == key


async def test_transient_failures_beyond_the_step_retries_fail_it(
    client: httpx.AsyncClient,
) -> None:
    cluster = await create_cluster(client, fail_transient={"preflight": 50})
    op = await start_ok(client, cluster["id"])
    done = await wait_done(client, op["id"])
    assert done["status"] == "failed" and done["error"]["step"] == "preflight", done
    preflight = done["steps"][0]
    assert preflight["attempts"] == 1
    assert preflight["error"]["transient"] is True
    assert "after 4 tries" in preflight["error"]["message"]


async def test_waiting_steps_hold_no_worker_slot(
    client: httpx.AsyncClient, live_stack: Stack, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # One worker that runs two jobs at once, alone.
    for worker in live_stack.live_workers():
        worker.kill(signal.SIGTERM)
    small = live_stack.start_worker(TANDEM_WORKER_MAX_JOBS="2")
    try:
        held = [await create_cluster(client, gate=["pause_schedulers"]) for _ in range(3)]
        ops = [await start_ok(client, pair["id"]) for pair in held]

        async def all_waiting() -> bool:
            return all(
                [await step_status(client, op["id"], "pause_schedulers") == "running" for op in ops]
            )

        await wait_for(all_waiting, timeout_s=60)
        free = await create_cluster(client)
        fourth = await start_ok(client, free["id"])
        assert (await wait_done(client, fourth["id"], timeout_s=60))["status"] == "succeeded"
        for op in ops:
            assert await step_status(client, op["id"], "pause_schedulers") == "running"
        for pair in held:
            await open_gate(sessions, pair["id"], "pause_schedulers")
        for op in ops:
            assert (await wait_done(client, op["id"], timeout_s=60))["status"] == "succeeded"
    finally:
        small.kill(signal.SIGTERM)
