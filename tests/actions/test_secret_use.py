"""A secret used by a runbook call reaches the runbook and nothing else: not the step's
output or error (even when the runbook echoes it back), an event, a webhook delivery, an
audit row, an API response or a log line."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.actions.test_http import create_planned, hook, step_of
from tests.helpers import events, start_ok, wait_done, wait_for
from tests.receiver import Receiver
from tests.runbook import Call, Reply, Runbook
from tests.stack import Stack


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


async def all_items(client: httpx.AsyncClient, path: str) -> list[dict]:
    items, token = [], None
    while True:
        params = {"page_size": 100, **({"page_token": token} if token else {})}
        page = (await client.get(path, params=params)).json()
        items.extend(page["items"])
        token = page["next_page_token"]
        if not token or not page["items"]:
            return items


async def test_a_bearer_secret_goes_to_the_runbook_and_nowhere_else(
    client: httpx.AsyncClient, live_stack: Stack, runbook: Runbook, receiver: Receiver
) -> None:
    value = f"sekrit-{uuid.uuid4().hex}"

    def answer(call: Call) -> Reply:
        seen = call.headers.get("authorization", "")
        if call.path == "/fail":
            return Reply(400, {"error": f"bad token {seen}"})
        # A careless runbook that echoes what it got.
        return Reply(200, {"seen": seen})

    runbook.answer = answer
    endpoint = await client.post("/v1/webhooks", json={"url": receiver.url})
    assert endpoint.status_code == 201, endpoint.text
    bearer = {"Authorization": {"$secret": "ops-token"}}
    plan = {
        "steps": [
            {
                "name": "prepare",
                "action": {**hook(runbook, "/prepare"), "headers": bearer},
                "undo": {**hook(runbook, "/unprepare"), "headers": bearer},
            },
            {
                "name": "fail",
                "action": {**hook(runbook, "/fail"), "headers": bearer},
                "undo": hook(runbook, "/unfail"),
            },
            {"name": "promote", "action": hook(runbook, "/promote"), "point_of_no_return": True},
        ]
    }
    pair = await create_planned(client, plan)
    put = await client.put(f"/v1/clusters/{pair['id']}/secrets/ops-token", json={"value": value})
    assert put.status_code == 201, put.text
    started = await start_ok(client, pair["id"])
    operation = await wait_done(client, started["id"])
    assert operation["status"] == "failed"
    # It reached the runbook, on the do and on the undo.
    sent = [c.headers["authorization"] for c in runbook.of("POST")]
    assert sent == [value, value, value], sent
    # The runbook's echo is stored without it.
    assert step_of(operation, "prepare")["output"] == {"seen": "[secret]"}
    assert "[secret]" in step_of(operation, "fail")["error"]["message"]

    logged = await events(client, pair["id"])

    async def delivered() -> bool:
        return len(receiver.received) >= len(logged)

    await wait_for(delivered, timeout_s=60)
    places = {
        "operation": json.dumps(operation),
        "operations": json.dumps(await all_items(client, "/v1/operations")),
        "events": json.dumps(logged),
        "feed": json.dumps(await all_items(client, "/v1/events")),
        "pair": (await client.get(f"/v1/clusters/{pair['id']}")).text,
        "readiness": (await client.get(f"/v1/clusters/{pair['id']}/readiness")).text,
        "secrets": (await client.get(f"/v1/clusters/{pair['id']}/secrets")).text,
        "deliveries": json.dumps(
            await all_items(client, f"/v1/webhooks/{endpoint.json()['id']}/deliveries")
        ),
        "webhook bodies": b"".join(r.body for r in receiver.received).decode(),
        "audit": json.dumps(await all_items(client, "/v1/audit")),
    }
    for process in [live_stack.api, *live_stack.workers]:
        assert process is not None
        places[process.name] = process.log_path.read_text(errors="replace")
    leaked = [where for where, text in places.items() if value in text]
    assert leaked == [], leaked
