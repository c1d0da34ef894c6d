"""A pair's own plan is checked when it is saved (DESIGN.md section 8): every refusal is a
422 problem that names the offending step; URLs are not resolved and secrets need not
exist yet."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import create_cluster, pair_body, start_ok, wait_done

HOOK = {"kind": "http", "url": "https://ops.example/{target.region}/promote"}
CHECK = {"kind": "check", "urls": ["https://{target.region}.ops.example/healthz"]}


def plan_body(steps: list[dict[str, Any]], **plan: Any) -> dict[str, Any]:
    body = pair_body()
    del body["driver"]
    return {**body, "plan": {"steps": steps, **plan}}


def good_steps() -> list[dict[str, Any]]:
    return [
        {"name": "preflight", "action": CHECK},
        {
            "name": "pause",
            "action": {**HOOK, "url": "https://ops.example/pause"},
            "undo": {**HOOK, "url": "https://ops.example/resume"},
            "skip_when_forced": True,
        },
        {"name": "promote", "action": HOOK, "point_of_no_return": True},
        {"name": "validate", "parallel": [CHECK, {**CHECK, "expect": {"status": "ok"}}]},
    ]


REFUSALS = [
    ("no point of no return", lambda s: [{**x, "point_of_no_return": False} for x in s], "steps"),
    (
        "two points of no return",
        lambda s: [*s[:3], {**s[3], "point_of_no_return": True}],
        "'validate'",
    ),
    (
        "side effect before it and no undo",
        lambda s: [s[0], {k: v for k, v in s[1].items() if k != "undo"}, *s[2:]],
        "'pause'",
    ),
    (
        "unknown action kind",
        lambda s: [{**s[0], "action": {"kind": "teleport"}}, *s[1:]],
        "'preflight'",
    ),
    (
        "unknown placeholder",
        lambda s: [*s[:2], {**s[2], "action": {**HOOK, "url": "https://{target.zone}/x"}}, s[3]],
        "'promote'",
    ),
    (
        "malformed $secret",
        lambda s: [
            *s[:2],
            {**s[2], "action": {**HOOK, "headers": {"Authorization": {"$secret": "a b"}}}},
            s[3],
        ],
        "'promote'",
    ),
    (
        "a $secret with more keys",
        lambda s: [*s[:2], {**s[2], "action": {**HOOK, "url": {"$secret": "u", "x": 1}}}, s[3]],
        "'promote'",
    ),
    (
        "bad settings",
        lambda s: [{**s[0], "action": {"kind": "check", "urls": []}}, *s[1:]],
        "'preflight'",
    ),
    ("action and parallel", lambda s: [*s[:3], {**s[3], "action": CHECK}], "'validate'"),
    ("a step twice", lambda s: [*s, s[0]], "'preflight'"),
]


@pytest.mark.parametrize(("why", "change", "named"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_a_broken_plan_is_refused_naming_the_step(
    client: httpx.AsyncClient, why: str, change: Any, named: str
) -> None:
    response = await client.post("/v1/clusters", json=plan_body(change(good_steps())))
    assert response.status_code == 422, (why, response.text)
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert named in problem["detail"], (why, problem["detail"])


async def test_driver_and_plan_together_are_refused(client: httpx.AsyncClient) -> None:
    body = {**plan_body(good_steps()), "driver": {"kind": "simulated"}}
    response = await client.post("/v1/clusters", json=body)
    assert response.status_code == 422, response.text
    assert "not both" in response.json()["detail"]


async def test_a_plan_with_a_secret_not_yet_put_is_accepted_and_shown_back(
    client: httpx.AsyncClient,
) -> None:
    steps = good_steps()
    steps[2]["action"] = {**HOOK, "headers": {"Authorization": {"$secret": "ops-token"}}}
    created = await client.post(
        "/v1/clusters", json={**plan_body(steps), "rto_target_s": 600, "rpo_target_s": 30}
    )
    assert created.status_code == 201, created.text
    pair = created.json()
    assert pair["driver"] is None
    assert pair["plan"]["steps"][2]["action"]["headers"] == {
        "Authorization": {"$secret": "ops-token"}
    }
    assert (pair["rto_target_s"], pair["rpo_target_s"]) == (600, 30)
    fetched = (await client.get(f"/v1/clusters/{pair['id']}")).json()
    assert fetched["plan"] == pair["plan"]


async def test_patch_swaps_driver_and_plan_and_operations_keep_theirs(
    client: httpx.AsyncClient,
) -> None:
    pair = await create_cluster(client, gate=["preflight"])
    running = await start_ok(client, pair["id"])
    # Refused while an operation runs.
    busy = await client.patch(f"/v1/clusters/{pair['id']}", json={"plan": {"steps": good_steps()}})
    assert busy.status_code == 409, busy.text
    from_gate = await client.post(f"/v1/operations/{running['id']}/cancel")
    assert from_gate.status_code in (200, 202), from_gate.text
    await wait_done(client, running["id"])

    simulated = {"kind": "simulated"}
    plan = {
        "steps": [
            {"name": "one", "action": simulated, "undo": simulated},
            {"name": "two", "action": simulated, "point_of_no_return": True},
        ]
    }
    changed = await client.patch(f"/v1/clusters/{pair['id']}", json={"plan": plan})
    assert changed.status_code == 200, changed.text
    assert changed.json()["driver"] is None and changed.json()["plan"]["steps"][0]["name"] == "one"
    operation = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
    assert [s["name"] for s in operation["steps"]] == ["one", "two"]
    assert operation["status"] == "succeeded"
    # Back to a driver: the plan is gone, the default plan runs (a failback here).
    back = await client.patch(f"/v1/clusters/{pair['id']}", json={"driver": simulated})
    assert back.status_code == 200 and back.json()["plan"] is None
    failback = await wait_done(client, (await start_ok(client, pair["id"], "failback"))["id"])
    assert [s["name"] for s in failback["steps"]][0] == "preflight"
    # The finished operation still shows the plan it ran.
    again = (await client.get(f"/v1/operations/{operation['id']}")).json()
    assert [s["name"] for s in again["steps"]] == ["one", "two"]


async def test_failback_steps_run_on_failback(client: httpx.AsyncClient) -> None:
    simulated = {"kind": "simulated"}
    plan = {
        "steps": [{"name": "over", "action": simulated, "point_of_no_return": True}],
        "failback_steps": [
            {"name": "back_check", "action": simulated, "undo": simulated},
            {"name": "back", "action": simulated, "point_of_no_return": True},
        ],
    }
    body = plan_body(plan["steps"], failback_steps=plan["failback_steps"])
    created = await client.post("/v1/clusters", json=body)
    assert created.status_code == 201, created.text
    pair = created.json()
    over = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
    assert [s["name"] for s in over["steps"]] == ["over"]
    back = await wait_done(client, (await start_ok(client, pair["id"], "failback"))["id"])
    assert [s["name"] for s in back["steps"]] == ["back_check", "back"]
    assert back["status"] == "succeeded"
