"""Recovery objectives: measured_rto_s (to the end of the step that switched traffic),
data_loss (as an action measured it), and the events when a target is missed."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from tests.actions.test_http import hook, step_of
from tests.helpers import events, pair_body, start_ok, wait_done
from tests.runbook import Call, Reply, Runbook


async def test_rto_runs_to_the_traffic_switch_and_missed_targets_are_events(
    client: httpx.AsyncClient, runbook: Runbook
) -> None:
    def answer(call: Call) -> Reply:
        if call.path == "/promote":
            return Reply(200, {"data_loss": {"bytes": 4096, "seconds": 12.5}})
        return Reply()

    runbook.answer = answer
    plan = {
        "steps": [
            {"name": "promote", "action": hook(runbook, "/promote"), "point_of_no_return": True},
            {"name": "switch", "action": hook(runbook, "/switch"), "traffic_switched": True},
            # Slow, after traffic moved: not part of the recovery time.
            {"name": "tidy", "action": {"kind": "simulated", "step_delay_ms": 1500}},
        ]
    }
    body = {**pair_body(), "plan": plan, "rto_target_s": 0.01, "rpo_target_s": 10}
    del body["driver"]
    created = await client.post("/v1/clusters", json=body)
    assert created.status_code == 201, created.text
    pair = created.json()
    operation = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
    assert operation["status"] == "succeeded"

    created_at = datetime.fromisoformat(operation["created_at"])
    switched = datetime.fromisoformat(step_of(operation, "switch")["finished_at"])
    finished = datetime.fromisoformat(operation["finished_at"])
    assert operation["measured_rto_s"] == pytest.approx(
        (switched - created_at).total_seconds(), abs=0.002
    )
    assert (finished - created_at).total_seconds() - operation["measured_rto_s"] >= 1.4
    assert operation["data_loss"] == {"bytes": 4096, "seconds": 12.5}

    logged = {e["type"]: e["data"] for e in await events(client, pair["id"])}
    assert logged["operation.succeeded"]["measured_rto_s"] == operation["measured_rto_s"]
    assert logged["operation.rto_breached"] == {
        "operation_id": operation["id"],
        "target_s": 0.01,
        "measured_s": operation["measured_rto_s"],
    }
    assert logged["operation.rpo_breached"] == {
        "operation_id": operation["id"],
        "target_s": 10,
        "measured_s": 12.5,
    }


async def test_targets_met_emit_nothing(client: httpx.AsyncClient) -> None:
    body = {**pair_body(), "rto_target_s": 3600, "rpo_target_s": 60}
    created = await client.post("/v1/clusters", json=body)
    assert created.status_code == 201, created.text
    operation = await wait_done(client, (await start_ok(client, created.json()["id"]))["id"])
    assert operation["measured_rto_s"] > 0 and operation["data_loss"] is None
    types = {e["type"] for e in await events(client, created.json()["id"])}
    assert not types & {"operation.rto_breached", "operation.rpo_breached"}
