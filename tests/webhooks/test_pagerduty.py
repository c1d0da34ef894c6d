"""PagerDuty endpoints: Events API v2 bodies that open an incident when an operation
starts, escalate it when it fails, and resolve it when it succeeds."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.helpers import create_cluster, start_ok, wait_done, wait_for
from tests.receiver import Receiver

ROUTING_KEY = "R0UT1NGKEY0123456789012345678901"
ACTIONS = {"trigger", "acknowledge", "resolve"}
SEVERITIES = {"critical", "error", "warning", "info"}


def _non_empty(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def events_api_v2_errors(body: Any) -> list[str]:
    """What PagerDuty's Events API v2 would refuse in this body (empty: accepted)."""
    if not isinstance(body, dict):
        return ["the body is not a JSON object"]
    errors = []
    if not _non_empty(body.get("routing_key")):
        errors.append("routing_key must be a non-empty string")
    action = body.get("event_action")
    if action not in ACTIONS:
        errors.append(f"event_action {action!r} is not one of {sorted(ACTIONS)}")
    if "dedup_key" in body and not _non_empty(body["dedup_key"]):
        errors.append("dedup_key, when given, must be a non-empty string")
    if action in ("acknowledge", "resolve") and not _non_empty(body.get("dedup_key")):
        errors.append(f"{action} needs a dedup_key")
    if action == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            errors.append("trigger needs a payload object")
        else:
            summary = payload.get("summary")
            if not _non_empty(summary):
                errors.append("payload.summary must be a non-empty string")
            elif len(str(summary)) > 1024:
                errors.append("payload.summary is longer than 1024 characters")
            if not _non_empty(payload.get("source")):
                errors.append("payload.source must be a non-empty string")
            if payload.get("severity") not in SEVERITIES:
                errors.append(f"payload.severity {payload.get('severity')!r} is not allowed")
            if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
                errors.append("payload.custom_details must be an object")
    return errors


def test_validator_catches_bad_bodies() -> None:
    good_trigger = {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "op_1",
        "payload": {"summary": "s", "source": "src", "severity": "warning"},
    }
    assert events_api_v2_errors(good_trigger) == []
    assert (
        events_api_v2_errors(
            {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "op_1"}
        )
        == []
    )
    bad = [
        {**good_trigger, "routing_key": ""},
        {**good_trigger, "event_action": "explode"},
        {**good_trigger, "payload": {"summary": "", "source": "src", "severity": "info"}},
        {**good_trigger, "payload": {"summary": "x" * 1025, "source": "s", "severity": "info"}},
        {**good_trigger, "payload": {"summary": "s", "source": "", "severity": "info"}},
        {**good_trigger, "payload": {"summary": "s", "source": "src", "severity": "fatal"}},
        {"routing_key": ROUTING_KEY, "event_action": "resolve"},
        [],
    ]
    for body in bad:
        assert events_api_v2_errors(body), body


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


@pytest_asyncio.fixture
async def pagerduty(client: httpx.AsyncClient, receiver: Receiver) -> AsyncIterator[str]:
    response = await client.post(
        "/v1/webhooks",
        json={"kind": "pagerduty", "url": receiver.url, "routing_key": ROUTING_KEY},
    )
    assert response.status_code == 201, response.text
    endpoint_id: str = response.json()["id"]
    try:
        yield endpoint_id
    finally:
        deleted = await client.delete(f"/v1/webhooks/{endpoint_id}")
        assert deleted.status_code == 204, deleted.text


def incident(receiver: Receiver, operation_id: str) -> list[dict[str, Any]]:
    """The bodies received for one operation, every one checked against Events API v2."""
    bodies = []
    for request in list(receiver.received):
        body = request.json()
        assert events_api_v2_errors(body) == [], body
        assert body["routing_key"] == ROUTING_KEY
        assert request.headers.get("content-type") == "application/json"
        if body.get("dedup_key") == operation_id:
            bodies.append(body)
    return bodies


def steps(bodies: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(action, severity) in arrival order; a repeat sent again (at least once) collapses."""
    seen: list[tuple[str, str | None]] = []
    for body in bodies:
        step = (body["event_action"], body.get("payload", {}).get("severity"))
        if not seen or seen[-1] != step:
            seen.append(step)
    return seen


async def test_successful_failover_triggers_then_resolves(
    client: httpx.AsyncClient, receiver: Receiver, pagerduty: str
) -> None:
    cluster = await create_cluster(client)
    op = await start_ok(client, cluster["id"])
    assert (await wait_done(client, op["id"]))["status"] == "succeeded"

    async def resolved() -> bool:
        return any(b["event_action"] == "resolve" for b in incident(receiver, op["id"]))

    await wait_for(resolved, timeout_s=60)
    bodies = incident(receiver, op["id"])
    assert steps(bodies) == [("trigger", "warning"), ("resolve", None)]
    trigger = bodies[0]
    assert op["id"] in trigger["payload"]["summary"]
    assert cluster["id"] in trigger["payload"]["source"]
    assert trigger["payload"]["custom_details"]["operation_id"] == op["id"]


async def test_failover_failing_past_point_of_no_return_escalates_then_resolves(
    client: httpx.AsyncClient, receiver: Receiver, pagerduty: str
) -> None:
    cluster = await create_cluster(client, fail={"promote_target": 1})
    op = await start_ok(client, cluster["id"])
    failed = await wait_done(client, op["id"])
    assert failed["status"] == "failed" and failed["needs_attention"] is True

    async def escalated() -> bool:
        return ("trigger", "critical") in steps(incident(receiver, op["id"]))

    await wait_for(escalated, timeout_s=60)
    assert steps(incident(receiver, op["id"])) == [("trigger", "warning"), ("trigger", "critical")]
    critical = incident(receiver, op["id"])[-1]
    assert "failed" in critical["payload"]["summary"]

    retried = await client.post(f"/v1/operations/{op['id']}/retry")
    assert retried.status_code == 202, retried.text
    assert (await wait_done(client, op["id"]))["status"] == "succeeded"

    async def resolved() -> bool:
        return any(b["event_action"] == "resolve" for b in incident(receiver, op["id"]))

    await wait_for(resolved, timeout_s=60)
    assert steps(incident(receiver, op["id"])) == [
        ("trigger", "warning"),
        ("trigger", "critical"),
        ("resolve", None),
    ]


async def test_a_step_past_its_deadline_pages_critical(
    client: httpx.AsyncClient, receiver: Receiver, pagerduty: str
) -> None:
    # switch_traffic, past the point of no return, waits for ever; it may take 0.5 s.
    cluster = await create_cluster(
        client, gate=["switch_traffic"], timeout_s={"switch_traffic": 0.5}
    )
    op = await start_ok(client, cluster["id"])
    failed = await wait_done(client, op["id"])
    assert failed["error"]["code"] == "step_timed_out" and failed["needs_attention"] is True

    async def both_arrived() -> bool:
        classes = [b.get("payload", {}).get("class") for b in incident(receiver, op["id"])]
        return "operation.failed" in classes

    await wait_for(both_arrived, timeout_s=60)
    bodies = incident(receiver, op["id"])
    assert steps(bodies) == [("trigger", "warning"), ("trigger", "critical")]
    timed_out = [b for b in bodies if b["payload"]["class"] == "operation.step_timed_out"]
    assert len(timed_out) >= 1
    assert "switch_traffic passed its deadline" in timed_out[0]["payload"]["summary"]


async def test_an_evacuation_is_one_incident_not_one_per_pair(
    client: httpx.AsyncClient, receiver: Receiver, pagerduty: str
) -> None:
    from tests.batches.test_evacuation import batch_done, evacuate, register

    region = f"pd-{uuid.uuid4().hex[:6]}"
    for _ in range(3):
        await register(client, region, "us-west-2")
    answer = await evacuate(client, region, reason="region down")
    assert answer.status_code == 202, answer.text
    batch = await batch_done(client, answer.json()["id"])
    assert batch["status"] == "succeeded"

    async def resolved() -> bool:
        return any(b["event_action"] == "resolve" for b in incident(receiver, batch["id"]))

    await wait_for(resolved, timeout_s=60)
    bodies = incident(receiver, batch["id"])
    assert steps(bodies) == [("trigger", "warning"), ("resolve", None)]
    assert region in bodies[0]["payload"]["summary"]
    assert "3 pair(s) to move" in bodies[0]["payload"]["summary"]
    # The batch's operations opened none of their own (a resolve of an incident never
    # opened is a no-op for PagerDuty).
    for pair in batch["pairs"]:
        actions = [b["event_action"] for b in incident(receiver, pair["operation_id"])]
        assert "trigger" not in actions, actions
