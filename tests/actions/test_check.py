"""The `check` action and `parallel` steps: a real health service on loopback, the real
API and worker processes."""

from __future__ import annotations

import httpx

from tests.actions.test_http import create_planned, hook, step_of
from tests.helpers import start_ok, wait_done
from tests.runbook import Call, Reply, Runbook


async def test_a_check_waits_for_consecutive_healthy_answers_with_the_expected_body(
    client: httpx.AsyncClient, runbook: Runbook
) -> None:
    answers = iter(
        [
            Reply(503, {"status": "starting"}),
            Reply(200, {"status": "starting"}),  # 2xx, but not the expected body
            Reply(200, {"status": "ok", "region": "us-west-2"}),
            Reply(500, {}),  # breaks the streak
            Reply(200, {"status": "ok", "region": "us-west-2"}),
            Reply(200, {"status": "ok", "region": "us-west-2"}),
        ]
    )
    runbook.answer = lambda call: next(answers, Reply(200, {"status": "ok"}))
    check = {
        "kind": "check",
        "urls": [runbook.url("/{target.region}/health")],
        "expect": {"status": "ok"},
        "consecutive": 2,
        "interval_s": 0.1,
    }
    plan = {
        "steps": [
            {"name": "wait_healthy", "action": check},
            {"name": "promote", "action": hook(runbook, "/promote"), "point_of_no_return": True},
        ]
    }
    pair = await create_planned(client, plan)
    operation = await wait_done(
        client, (await start_ok(client, pair["id"], ignore_readiness=True))["id"]
    )
    assert operation["status"] == "succeeded", [s["error"] for s in operation["steps"]]
    gets = runbook.of("GET")
    # Placeholders filled; the step ended at the second healthy answer in a row.
    assert {c.path for c in gets} == {"/us-west-2/health"}
    assert len(gets) == 6
    assert step_of(operation, "wait_healthy")["output"] == {"healthy": True, "rounds": 6}
    assert step_of(operation, "wait_healthy")["attempts"] == 1


async def test_a_parallel_step_runs_all_at_once_and_fails_when_one_does(
    client: httpx.AsyncClient, runbook: Runbook
) -> None:
    def answer(call: Call) -> Reply:
        if call.path == "/ui/health":
            return Reply(404, {"error": "no such app"})
        return Reply(200, {"ok": True})

    runbook.answer = answer
    plan = {
        "steps": [
            {"name": "promote", "action": hook(runbook, "/promote"), "point_of_no_return": True},
            {
                "name": "validate",
                "parallel": [
                    {"kind": "check", "urls": [runbook.url("/api/health")]},
                    {"kind": "check", "urls": [runbook.url("/ui/health")], "interval_s": 0.1},
                    hook(runbook, "/notify"),
                ],
                "timeout_s": 2,
            },
        ]
    }
    pair = await create_planned(client, plan)
    operation = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
    validate = step_of(operation, "validate")
    # The UI never becomes healthy: the step times out, past the point of no return.
    assert validate["status"] == "failed" and validate["error"]["code"] == "step_timed_out"
    assert operation["needs_attention"] is True
    # Items that were done are not called again while the step waits for the last one.
    assert len(runbook.of("GET", "/api/health")) == 1
    assert len(runbook.of("POST", "/notify")) == 1
    assert len(runbook.of("GET", "/ui/health")) >= 2

    # Healthy now: a retry runs the whole step again and it succeeds with every output.
    runbook.answer = lambda call: Reply(200, {"ok": True})
    retried = await client.post(f"/v1/operations/{operation['id']}/retry")
    assert retried.status_code == 202, retried.text
    operation = await wait_done(client, operation["id"])
    assert operation["status"] == "succeeded"
    results = step_of(operation, "validate")["output"]["results"]
    assert results[0] == {"healthy": True, "rounds": 1} and results[2] == {"ok": True}
    # A new attempt calls every item again, with keys of its own.
    keys = [c.headers["idempotency-key"] for c in runbook.of("POST", "/notify")]
    assert keys == [f"{operation['id']}:validate:1:2", f"{operation['id']}:validate:2:2"]
