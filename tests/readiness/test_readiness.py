"""Readiness (DESIGN.md section 8): evaluated by the worker all the time, not only when the
region is already burning; a planned operation of a pair that is not ready is held back.
A real check service on loopback, the real API and worker processes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.actions.test_http import create_planned, hook
from tests.helpers import events, start, start_ok, wait_done, wait_for
from tests.runbook import Call, Reply, Runbook
from tests.stack import Stack


def plan(runbook: Runbook) -> dict[str, Any]:
    return {
        "steps": [
            {"name": "preflight", "action": {"kind": "check", "urls": [runbook.url("/health")]}},
            {
                "name": "prepare",
                "action": {**hook(runbook, "/prepare"), "check_url": runbook.url("/prepare/ok")},
                "undo": hook(runbook, "/unprepare"),
            },
            {
                "name": "promote",
                "action": {
                    **hook(runbook, "/promote"),
                    "headers": {"Authorization": {"$secret": "ops-token"}},
                },
                "point_of_no_return": True,
            },
            # After the point of no return: never probed.
            {"name": "validate", "action": {"kind": "check", "urls": [runbook.url("/never")]}},
        ]
    }


async def test_worker_evaluates_and_a_planned_failover_waits_for_a_ready_pair(
    client: httpx.AsyncClient, live_stack: Stack, runbook: Runbook
) -> None:
    healthy = True

    def answer(call: Call) -> Reply:
        if call.path == "/health":
            return Reply(200 if healthy else 503, {"ok": healthy})
        return Reply()

    runbook.answer = answer
    pair = await create_planned(client, plan(runbook))
    put = await client.put(f"/v1/clusters/{pair['id']}/secrets/ops-token", json={"value": "s3"})
    assert put.status_code == 201, put.text
    fresh = await client.get(f"/v1/clusters/{pair['id']}/readiness", params={"fresh": "true"})
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["ready"] is True, fresh.json()
    assert {(c["step"], c["name"]) for c in fresh.json()["checks"]} == {
        ("preflight", "check"),
        ("prepare", "http"),
    }
    assert (await client.get(f"/v1/clusters/{pair['id']}")).json()["ready"] is True
    assert runbook.of("GET", "/never") == []

    # A worker that evaluates every second notices the check going bad.
    worker = live_stack.start_worker(TANDEM_READINESS_INTERVAL_S="1")
    try:
        healthy = False

        async def not_ready() -> bool:
            got = await client.get(f"/v1/clusters/{pair['id']}")
            return got.json()["ready"] is False

        await wait_for(not_ready, timeout_s=60, interval_s=0.5)
        changed = [
            e for e in await events(client, pair["id"]) if e["type"] == "cluster.readiness_changed"
        ]
        assert changed and changed[-1]["data"]["ready"] is False
        assert changed[-1]["data"]["failing"][0]["step"] == "preflight"

        refused = await start(client, pair["id"])
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "not_ready"
        assert "preflight" in refused.json()["detail"]
        assert runbook.of("POST") == []

        # Forced is not held back; neither is a planned one that says so. The forced one
        # skips nothing here, so its preflight check waits: cancel it.
        ignoring = await start(client, pair["id"], ignore_readiness=True)
        assert ignoring.status_code == 202, ignoring.text
        cancel = await client.post(f"/v1/operations/{ignoring.json()['id']}/cancel")
        assert cancel.status_code == 202, cancel.text
        assert (await wait_done(client, ignoring.json()["id"]))["status"] == "cancelled"
        forced = await start(client, pair["id"], mode="forced", accept_data_loss=True)
        assert forced.status_code == 202, forced.text
        await client.post(f"/v1/operations/{forced.json()['id']}/cancel")
        await wait_done(client, forced.json()["id"])

        healthy = True

        async def ready_again() -> bool:
            return (await client.get(f"/v1/clusters/{pair['id']}")).json()["ready"] is True

        await wait_for(ready_again, timeout_s=60, interval_s=0.5)
        operation = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
        assert operation["status"] == "succeeded", [s["error"] for s in operation["steps"]]
        promote = runbook.of("POST", "/promote")
        assert [c.headers["authorization"] for c in promote] == ["s3"]
    finally:
        worker.kill()


async def test_a_missing_secret_is_named_by_readiness(
    client: httpx.AsyncClient, runbook: Runbook
) -> None:
    pair = await create_planned(client, plan(runbook))
    readiness = (await client.get(f"/v1/clusters/{pair['id']}/readiness")).json()
    assert readiness["ready"] is False
    failing = [c for c in readiness["checks"] if not c["ok"]]
    assert failing == [
        {
            "step": "promote",
            "name": "secret:ops-token",
            "ok": False,
            "detail": "secret 'ops-token' is not set on this pair",
            "duration_ms": 0,
        }
    ]
    refused = await start(client, pair["id"])
    assert refused.status_code == 409 and "secret:ops-token" in refused.json()["detail"]


async def test_a_dry_run_calls_nothing_and_writes_nothing(
    client: httpx.AsyncClient, runbook: Runbook
) -> None:
    pair = await create_planned(client, plan(runbook))
    await client.put(f"/v1/clusters/{pair['id']}/secrets/ops-token", json={"value": "s3"})
    before = await events(client, pair["id"])
    calls_before = len(runbook.calls)
    # A first real failover and failback give the steps a history.
    done = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
    assert done["status"] == "succeeded"
    await wait_done(client, (await start_ok(client, pair["id"], "failback"))["id"])
    logged, calls = await events(client, pair["id"]), len(runbook.calls)
    operations = (await client.get("/v1/operations", params={"cluster_id": pair["id"]})).json()

    # The last readiness evaluation was for the failback: get one for the next failover.
    fresh = await client.get(f"/v1/clusters/{pair['id']}/readiness", params={"fresh": "true"})
    assert fresh.json()["operation"] == "failover"
    logged, calls = await events(client, pair["id"]), len(runbook.calls)
    dry = await client.post(f"/v1/clusters/{pair['id']}/failover", json={"dry_run": True})
    assert dry.status_code == 200, dry.text
    body = dry.json()
    assert body["dry_run"] is True and body["kind"] == "failover"
    assert [s["name"] for s in body["steps"]] == ["preflight", "prepare", "promote", "validate"]
    assert [s["point_of_no_return"] for s in body["steps"]] == [False, False, True, False]
    assert all(isinstance(s["expected_duration_s"], float) for s in body["steps"])
    assert body["expected_duration_s"] == pytest.approx(
        sum(s["expected_duration_s"] for s in body["steps"]), abs=0.01
    )
    assert body["readiness"]["ready"] is True and body["readiness"] == fresh.json()
    # Nothing happened: no call to the service (the readiness shown is the last one),
    # no event, no operation.
    assert len(runbook.calls) == calls
    assert await events(client, pair["id"]) == logged
    again = (await client.get("/v1/operations", params={"cluster_id": pair["id"]})).json()
    assert again == operations
    assert len(before) < len(logged) and calls_before < calls
