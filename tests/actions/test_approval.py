"""The `approval` action: a step that waits for a person (DESIGN.md section 8), with
the real API and worker processes and a real runbook service on loopback."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from tests.access.test_access import as_token
from tests.actions.test_http import create_planned, hook, step_of
from tests.helpers import start_ok, wait_done, wait_for
from tests.runbook import Runbook
from tests.stack import Stack


@pytest_asyncio.fixture
async def operator(
    client: httpx.AsyncClient, live_stack: Stack
) -> AsyncIterator[httpx.AsyncClient]:
    """A second person: an operator token of the same organization."""
    created = await client.post(
        "/v1/tokens", json={"name": f"second-person-{uuid.uuid4().hex[:6]}", "role": "operator"}
    )
    assert created.status_code == 201, created.text
    async with as_token(live_stack, created.json()["token"]) as second:
        yield second


def approval_plan(runbook: Runbook, *, after: bool = False, **approval: Any) -> dict[str, Any]:
    """prepare (undone by unprepare), an approval before or after promote, switch."""
    ask = {"name": "approve", "action": {"kind": "approval", **approval}, "timeout_s": 60}
    if "timeout_s" in approval:
        ask["timeout_s"] = approval.pop("timeout_s")
        ask["action"] = {"kind": "approval", **approval}
    steps = [
        {
            "name": "prepare",
            "action": hook(runbook, "/prepare"),
            "undo": hook(runbook, "/unprepare"),
        },
        {"name": "promote", "action": hook(runbook, "/promote"), "point_of_no_return": True},
        {"name": "switch", "action": hook(runbook, "/switch")},
    ]
    steps.insert(2 if after else 1, ask)
    return {"steps": steps}


async def waiting(client: httpx.AsyncClient, op_id: str) -> dict[str, Any]:
    async def asked() -> dict[str, Any] | None:
        operation = (await client.get(f"/v1/operations/{op_id}")).json()
        return operation if operation["awaiting_approval"] else None

    operation: dict[str, Any] = await wait_for(asked, timeout_s=60)
    return operation


async def event_types(client: httpx.AsyncClient, cluster_id: str) -> list[str]:
    page = await client.get(f"/v1/clusters/{cluster_id}/events", params={"page_size": 100})
    return [e["type"] for e in page.json()["items"]]


async def test_approve_continues_and_is_audited_with_the_approver(
    client: httpx.AsyncClient, operator: httpx.AsyncClient, runbook: Runbook
) -> None:
    pair = await create_planned(client, approval_plan(runbook))
    started = await start_ok(client, pair["id"])
    asked = await waiting(client, started["id"])
    assert step_of(asked, "approve")["status"] == "waiting"
    assert asked["awaiting_approval"]["step"] == "approve"
    assert asked["awaiting_approval"]["timeout_at"] is not None
    assert "operation.approval_requested" in await event_types(client, pair["id"])
    assert runbook.of("POST", "/promote") == []  # nothing past the approval has run

    approved = await operator.post(
        f"/v1/operations/{started['id']}/approve", json={"comment": "region is gone, go"}
    )
    assert approved.status_code == 202, approved.text
    operation = await wait_done(client, started["id"])
    assert operation["status"] == "succeeded"
    output = step_of(operation, "approve")["output"]
    assert output["comment"] == "region is gone, go" and "second-person" in output["approved_by"]
    # A second decision on the same step is refused.
    again = await operator.post(f"/v1/operations/{started['id']}/approve", json={})
    assert again.status_code == 409, again.text

    audit = (await client.get("/v1/audit", params={"page_size": 100})).json()["items"]
    row = next(r for r in audit if r["path"] == f"/v1/operations/{started['id']}/approve")
    assert "second-person" in str(row), row


async def test_reject_before_the_point_of_no_return_rolls_back_and_cancels(
    client: httpx.AsyncClient, operator: httpx.AsyncClient, runbook: Runbook
) -> None:
    pair = await create_planned(client, approval_plan(runbook))
    started = await start_ok(client, pair["id"])
    await waiting(client, started["id"])
    rejected = await operator.post(
        f"/v1/operations/{started['id']}/reject", json={"comment": "not yet"}
    )
    assert rejected.status_code == 202, rejected.text
    operation = await wait_done(client, started["id"])
    assert operation["status"] == "cancelled", operation
    assert [c.path for c in runbook.of("POST")] == ["/prepare", "/unprepare"]
    pair_now = (await client.get(f"/v1/clusters/{pair['id']}")).json()
    assert pair_now["state"] == "primary-active"


async def test_reject_past_the_point_of_no_return_fails_and_needs_attention(
    client: httpx.AsyncClient, operator: httpx.AsyncClient, runbook: Runbook
) -> None:
    pair = await create_planned(client, approval_plan(runbook, after=True))
    started = await start_ok(client, pair["id"])
    await waiting(client, started["id"])
    rejected = await operator.post(f"/v1/operations/{started['id']}/reject", json={})
    assert rejected.status_code == 202, rejected.text
    operation = await wait_done(client, started["id"])
    assert operation["status"] == "failed" and operation["needs_attention"] is True
    assert "rejected by" in step_of(operation, "approve")["error"]["message"]
    assert runbook.of("POST", "/switch") == []


async def test_no_decision_by_the_deadline_times_out_and_rolls_back(
    client: httpx.AsyncClient, runbook: Runbook
) -> None:
    pair = await create_planned(client, approval_plan(runbook, timeout_s=2))
    operation = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
    assert operation["status"] == "failed" and operation["needs_attention"] is False
    assert step_of(operation, "approve")["error"]["code"] == "step_timed_out"
    assert [c.path for c in runbook.of("POST")] == ["/prepare", "/unprepare"]


async def test_two_person_refuses_the_requesters_own_token(
    client: httpx.AsyncClient, operator: httpx.AsyncClient, runbook: Runbook
) -> None:
    pair = await create_planned(client, approval_plan(runbook, two_person=True))
    started = await start_ok(client, pair["id"])
    await waiting(client, started["id"])
    own = await client.post(f"/v1/operations/{started['id']}/approve", json={})
    assert own.status_code == 403, own.text
    assert own.json()["code"] == "second_person_required"
    assert own.headers["content-type"].startswith("application/problem+json")
    other = await operator.post(f"/v1/operations/{started['id']}/approve", json={})
    assert other.status_code == 202, other.text
    assert (await wait_done(client, started["id"]))["status"] == "succeeded"


async def test_nothing_to_decide_is_409(client: httpx.AsyncClient, runbook: Runbook) -> None:
    pair = await create_planned(client, approval_plan(runbook))
    started = await start_ok(client, pair["id"])
    await waiting(client, started["id"])
    await client.post(f"/v1/operations/{started['id']}/cancel")
    await wait_done(client, started["id"])
    late = await client.post(f"/v1/operations/{started['id']}/approve", json={})
    assert late.status_code == 409, late.text
