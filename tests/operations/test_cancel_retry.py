"""Cancel, rollback, failure and retry, driven through the public API."""

from __future__ import annotations

import signal

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers import (
    create_cluster,
    effects_of,
    events,
    open_gate,
    start,
    start_ok,
    step_status,
    wait_done,
    wait_for,
)
from tests.stack import Stack


async def test_cancel_before_point_of_no_return_rolls_back(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # drain_replication answers "not yet" until its gate opens: it is caught running.
    cluster = await create_cluster(client, gate=["drain_replication"])
    op = await start_ok(client, cluster["id"])

    async def drain_running() -> bool:
        return await step_status(client, op["id"], "drain_replication") == "running"

    await wait_for(drain_running)
    cancel = await client.post(f"/v1/operations/{op['id']}/cancel")
    assert cancel.status_code == 202, cancel.text
    assert cancel.json()["status"] == "cancelling"

    done = await wait_done(client, op["id"])
    assert done["status"] == "cancelled"
    statuses = {s["name"]: s["status"] for s in done["steps"]}
    assert statuses == {
        "preflight": "rolled_back",
        "pause_schedulers": "rolled_back",
        "drain_replication": "rolled_back",
        "promote_target": "skipped",
        "switch_traffic": "skipped",
        "validate_deployments": "skipped",
        "resume_schedulers": "skipped",
    }
    after = (await client.get(f"/v1/clusters/{cluster['id']}")).json()
    assert after["state"] == "primary-active" and after["active_region"] == "us-east-1"
    undone = [e.step for e in await effects_of(sessions, op["id"]) if e.action == "undo"]
    assert undone == ["drain_replication", "pause_schedulers", "preflight"]  # newest first
    changes = [
        (e["data"]["from"], e["data"]["to"])
        for e in await events(client, cluster["id"])
        if e["type"] == "cluster.state_changed"
    ]
    assert changes == [("primary-active", "failing-over"), ("failing-over", "primary-active")]
    # The pair can fail over again at once.
    await open_gate(sessions, cluster["id"], "drain_replication")
    again = await start_ok(client, cluster["id"])
    assert (await wait_done(client, again["id"]))["status"] == "succeeded"


async def test_cancel_past_point_of_no_return_is_409(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    cluster = await create_cluster(client, hold=["promote_target"])
    op = await start_ok(client, cluster["id"])

    async def promoting() -> bool:
        return await step_status(client, op["id"], "promote_target") == "running"

    await wait_for(promoting)
    cancel = await client.post(f"/v1/operations/{op['id']}/cancel")
    assert cancel.status_code == 409
    assert cancel.headers["content-type"].startswith("application/problem+json")
    assert cancel.json()["code"] == "point_of_no_return"
    await open_gate(sessions, cluster["id"], "promote_target")
    assert (await wait_done(client, op["id"]))["status"] == "succeeded"
    finished = await client.post(f"/v1/operations/{op['id']}/cancel")
    assert finished.status_code == 409


async def test_failure_past_point_of_no_return_then_retry(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    cluster = await create_cluster(client, fail={"promote_target": 2})
    op = await start_ok(client, cluster["id"])

    failed = await wait_done(client, op["id"])
    assert failed["status"] == "failed" and failed["needs_attention"] is True
    assert failed["error"]["step"] == "promote_target"
    promote = next(s for s in failed["steps"] if s["name"] == "promote_target")
    assert promote["status"] == "failed" and promote["attempts"] == 1
    stuck = (await client.get(f"/v1/clusters/{cluster['id']}")).json()
    assert stuck["state"] == "failing-over" and stuck["needs_attention"] is True
    assert (await start(client, cluster["id"])).status_code == 409
    assert (await client.post(f"/v1/operations/{op['id']}/cancel")).status_code == 409

    # The second attempt fails too (the driver fails the first two), the third succeeds.
    retried = await client.post(f"/v1/operations/{op['id']}/retry")
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "queued" and retried.json()["needs_attention"] is False
    second = await wait_done(client, op["id"])
    assert second["status"] == "failed"
    assert (await client.post(f"/v1/operations/{op['id']}/retry")).status_code == 202
    final = await wait_done(client, op["id"])
    assert final["status"] == "succeeded" and final["needs_attention"] is False
    attempts = {s["name"]: s["attempts"] for s in final["steps"]}
    assert attempts == {
        "preflight": 1,
        "pause_schedulers": 1,
        "drain_replication": 1,
        "promote_target": 3,
        "switch_traffic": 1,
        "validate_deployments": 1,
        "resume_schedulers": 1,
    }
    # Resumed from the failed step: the steps before it ran once.
    applied = [e.step for e in await effects_of(sessions, op["id"]) if e.action == "apply"]
    assert sorted(applied) == sorted(attempts)
    healed = (await client.get(f"/v1/clusters/{cluster['id']}")).json()
    assert healed["state"] == "secondary-active" and healed["needs_attention"] is False
    again = await client.post(f"/v1/operations/{op['id']}/retry")
    assert again.status_code == 409


async def test_failure_before_point_of_no_return_rolls_back(client: httpx.AsyncClient) -> None:
    cluster = await create_cluster(client, fail={"drain_replication": 1})
    op = await start_ok(client, cluster["id"])
    done = await wait_done(client, op["id"])
    assert done["status"] == "failed" and done["needs_attention"] is False
    statuses = [s["status"] for s in done["steps"]]
    assert statuses == ["rolled_back", "rolled_back", "failed"] + ["skipped"] * 4
    after = (await client.get(f"/v1/clusters/{cluster['id']}")).json()
    assert after["state"] == "primary-active" and after["needs_attention"] is False
    retry = await client.post(f"/v1/operations/{op['id']}/retry")
    assert retry.status_code == 409


async def test_forced_failover_needs_consent_and_skips_source_steps(
    client: httpx.AsyncClient,
) -> None:
    cluster = await create_cluster(client)
    refused = await start(client, cluster["id"], mode="forced")
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    op = await start_ok(client, cluster["id"], mode="forced", accept_data_loss=True)
    done = await wait_done(client, op["id"])
    assert done["status"] == "succeeded" and done["mode"] == "forced"
    statuses = {s["name"]: s["status"] for s in done["steps"]}
    assert statuses["pause_schedulers"] == statuses["drain_replication"] == "skipped"
    assert statuses["promote_target"] == "succeeded"


async def test_a_failed_undo_needs_attention_and_retry_runs_it_again(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    cluster = await create_cluster(
        client, gate=["drain_replication"], fail_undo={"pause_schedulers": 1}
    )
    op = await start_ok(client, cluster["id"])

    async def drain_running() -> bool:
        return await step_status(client, op["id"], "drain_replication") == "running"

    await wait_for(drain_running)
    assert (await client.post(f"/v1/operations/{op['id']}/cancel")).status_code == 202

    stuck = await wait_done(client, op["id"])
    assert stuck["status"] == "failed" and stuck["needs_attention"] is True, stuck
    assert stuck["error"]["code"] == "undo_failed"
    assert stuck["error"]["step"] == "pause_schedulers"
    assert "undo of pause_schedulers" in stuck["error"]["detail"]
    statuses = {s["name"]: s["status"] for s in stuck["steps"]}
    assert statuses["drain_replication"] == "rolled_back"
    assert statuses["preflight"] == "succeeded"  # never reached: the rollback stopped
    pair = (await client.get(f"/v1/clusters/{cluster['id']}")).json()
    assert pair["state"] == "failing-over" and pair["needs_attention"] is True
    failed_events = [
        e for e in await events(client, cluster["id"]) if e["type"] == "operation.failed"
    ]
    assert [e["data"]["needs_attention"] for e in failed_events] == [True]

    retried = await client.post(f"/v1/operations/{op['id']}/retry")
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "cancelling"
    done = await wait_done(client, op["id"])
    assert done["status"] == "cancelled" and done["needs_attention"] is False, done
    assert done["error"] is None
    assert [s["status"] for s in done["steps"]][:3] == ["rolled_back"] * 3
    after = (await client.get(f"/v1/clusters/{cluster['id']}")).json()
    assert after["state"] == "primary-active" and after["needs_attention"] is False
    # The undo ran twice, each time with a key of its own; the effect applied once.
    undone = [e for e in await effects_of(sessions, op["id"]) if e.action == "undo"]
    assert [e.idempotency_key for e in undone if e.step == "pause_schedulers"] == [
        f"{op['id']}:pause_schedulers:undo:2"
    ]


async def test_an_operation_cancelled_while_no_worker_runs_ends_cancelled(
    client: httpx.AsyncClient, live_stack: Stack
) -> None:
    for worker in live_stack.live_workers():
        worker.kill(signal.SIGTERM)
    cluster = await create_cluster(client)
    op = await start_ok(client, cluster["id"])
    cancelled = await client.post(f"/v1/operations/{op['id']}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "cancelling"
    assert all(s["status"] == "pending" for s in cancelled.json()["steps"])

    live_stack.ensure_workers()
    done = await wait_done(client, op["id"])
    assert done["status"] == "cancelled" and done["error"] is None, done
    assert [s["status"] for s in done["steps"]] == ["skipped"] * 7
    pair = (await client.get(f"/v1/clusters/{cluster['id']}")).json()
    assert pair["state"] == "primary-active" and pair["needs_attention"] is False
    kinds = [e["type"] for e in await events(client, cluster["id"])]
    assert kinds[-2:] == ["cluster.state_changed", "operation.cancelled"]
    # The pair is free again.
    again = await start_ok(client, cluster["id"])
    assert (await wait_done(client, again["id"]))["status"] == "succeeded"
