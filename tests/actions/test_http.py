"""The `http` action end to end: a real runbook service on loopback, the real API and
worker processes, PostgreSQL or SQLite and Redis (DESIGN.md section 8)."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers import operation_row, pair_body, start_ok, wait_done, wait_for
from tests.runbook import Call, Reply, Runbook
from tests.stack import Stack


def hook(runbook: Runbook, path: str, **settings: Any) -> dict[str, Any]:
    return {"kind": "http", "url": runbook.url(path), **settings}


def runbook_plan(runbook: Runbook, **extra: Any) -> dict[str, Any]:
    """check, a reversible hook, the point of no return, one more hook."""
    return {
        "steps": [
            {"name": "preflight", "action": {"kind": "check", "urls": [runbook.url("/health")]}},
            {
                "name": "prepare",
                "action": hook(runbook, "/prepare", params={"level": 3}),
                "undo": hook(runbook, "/unprepare"),
                **extra.get("prepare", {}),
            },
            {
                "name": "promote",
                "action": hook(runbook, "/promote"),
                "point_of_no_return": True,
                **extra.get("promote", {}),
            },
            {"name": "switch", "action": hook(runbook, "/switch"), "traffic_switched": True},
        ]
    }


async def create_planned(client: httpx.AsyncClient, plan: dict[str, Any]) -> dict[str, Any]:
    body = pair_body()
    del body["driver"]
    response = await client.post("/v1/clusters", json={**body, "plan": plan})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def step_of(operation: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in operation["steps"] if s["name"] == name)


async def test_runbook_calls_are_signed_keyed_and_retried_with_the_same_key(
    client: httpx.AsyncClient, runbook: Runbook
) -> None:
    prepared = 0

    def answer(call: Call) -> Reply:
        nonlocal prepared
        if call.path == "/prepare":
            prepared += 1
            # The first call fails transiently; the retry must carry the same key.
            return Reply(503, {"error": "busy"}) if prepared == 1 else Reply(200, {"done": 1})
        return Reply(200, {"step": call.path})

    runbook.answer = answer
    pair = await create_planned(client, runbook_plan(runbook))
    assert pair["driver"] is None and pair["plan"]["steps"][0]["name"] == "preflight"
    secret = pair["runbook_secret"]
    operation = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
    assert operation["status"] == "succeeded", [s["error"] for s in operation["steps"]]

    posts = runbook.of("POST")
    assert [c.path for c in posts] == ["/prepare", "/prepare", "/promote", "/switch"]
    for call in posts:
        assert call.verifies_with(secret), call.headers
        assert not call.verifies_with(pair["runbook_secret"][:-4] + "AAA=")
        body = call.json()
        step = {"/prepare": "prepare", "/promote": "promote", "/switch": "switch"}[call.path]
        assert call.headers["idempotency-key"] == f"{operation['id']}:{step}:1"
        assert body == {
            "operation_id": operation["id"],
            "pair_id": pair["id"],
            "pair": pair["name"],
            "step": step,
            "action": "do",
            "attempt": 1,
            "kind": "failover",
            "mode": "planned",
            "source": pair["primary"],
            "target": pair["secondary"],
            "params": {"level": 3} if step == "prepare" else None,
        }
        deadline = datetime.fromisoformat(call.headers["x-tandem-deadline"])
        assert deadline.tzinfo is not None and deadline > datetime.now(UTC)
    # The retried call is the same call: the same key, and the same deadline.
    assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
    assert posts[0].headers["x-tandem-deadline"] == posts[1].headers["x-tandem-deadline"]
    assert step_of(operation, "prepare")["output"] == {"done": 1}
    assert step_of(operation, "switch")["output"] == {"step": "/switch"}
    # Once for the pair's first readiness evaluation (asked for by the planned failover),
    # once as the preflight step.
    assert len(runbook.of("GET", "/health")) == 2


async def test_a_202_is_polled_until_it_succeeds_or_fails(
    client: httpx.AsyncClient, runbook: Runbook
) -> None:
    polls: dict[str, int] = {}

    def answer(call: Call) -> Reply:
        if call.method == "POST" and call.path in ("/prepare", "/promote"):
            job = "/jobs" + call.path
            return Reply(202, {"accepted": True}, {"Location": job, "Retry-After": "0.2"})
        if call.method == "GET" and call.path.startswith("/jobs/"):
            polls[call.path] = polls.get(call.path, 0) + 1
            if polls[call.path] < 3:
                return Reply(200, {"status": "running"})
            if call.path == "/jobs/prepare":
                return Reply(200, {"status": "succeeded", "output": {"prepared": True}})
            return Reply(200, {"status": "failed", "error": "replica is 40 GB behind"})
        return Reply()

    runbook.answer = answer
    pair = await create_planned(client, runbook_plan(runbook))
    operation = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
    # prepare succeeded after polling; promote (past the point of no return) failed.
    assert step_of(operation, "prepare")["output"] == {"prepared": True}
    assert step_of(operation, "promote")["status"] == "failed"
    assert "replica is 40 GB behind" in step_of(operation, "promote")["error"]["message"]
    assert operation["status"] == "failed" and operation["needs_attention"] is True
    assert polls == {"/jobs/prepare": 3, "/jobs/promote": 3}
    for poll in runbook.of("GET"):
        if poll.path.startswith("/jobs/"):
            assert poll.signed_by(pair["runbook_secret"]) and poll.body == b""
    # One POST each: polling never starts the runbook again.
    assert [c.path for c in runbook.of("POST")] == ["/prepare", "/promote"]


async def test_a_4xx_fails_the_step_at_once_and_rolls_back(
    client: httpx.AsyncClient, runbook: Runbook
) -> None:
    def answer(call: Call) -> Reply:
        if call.path == "/promote":
            return Reply(400, {"error": "unknown region"})
        return Reply()

    runbook.answer = answer
    pair = await create_planned(client, runbook_plan(runbook))
    operation = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
    assert operation["status"] == "failed"
    promote = step_of(operation, "promote")
    assert promote["attempts"] == 1 and "HTTP 400" in promote["error"]["message"]
    assert "unknown region" in promote["error"]["message"]
    assert len(runbook.of("POST", "/promote")) == 1


async def test_a_runbook_that_never_answers_times_out_and_is_undone_in_reverse(
    client: httpx.AsyncClient, runbook: Runbook
) -> None:
    release = threading.Event()

    def answer(call: Call) -> Reply:
        if call.path == "/third":
            return Reply(hold=release)
        return Reply()

    runbook.answer = answer
    plan = {
        "steps": [
            {"name": "first", "action": hook(runbook, "/first"), "undo": hook(runbook, "/undo1")},
            {"name": "second", "action": hook(runbook, "/second"), "undo": hook(runbook, "/undo2")},
            {
                "name": "third",
                "action": hook(runbook, "/third"),
                "undo": hook(runbook, "/undo3"),
                "timeout_s": 2,
            },
            {"name": "promote", "action": hook(runbook, "/promote"), "point_of_no_return": True},
        ]
    }
    pair = await create_planned(client, plan)
    try:
        started = await start_ok(client, pair["id"])
        operation = await wait_done(client, started["id"])
    finally:
        release.set()
    assert operation["status"] == "failed", operation
    third = step_of(operation, "third")
    assert third["error"]["code"] == "step_timed_out", third
    assert operation["needs_attention"] is False
    undos = [c for c in runbook.of("POST") if c.json()["action"] == "undo"]
    # The steps that were done are undone, last first.
    assert [c.path for c in undos] == ["/undo2", "/undo1"]
    assert [c.headers["idempotency-key"] for c in undos] == [
        f"{started['id']}:second:undo:1",
        f"{started['id']}:first:undo:1",
    ]
    assert all(c.verifies_with(pair["runbook_secret"]) for c in undos)
    assert runbook.of("POST", "/promote") == []
    types = [
        e["type"] for e in (await client.get(f"/v1/clusters/{pair['id']}/events")).json()["items"]
    ]
    assert "operation.step_timed_out" in types


async def test_a_timeout_past_the_point_of_no_return_needs_attention(
    client: httpx.AsyncClient, runbook: Runbook
) -> None:
    release = threading.Event()
    runbook.answer = lambda call: Reply(hold=release) if call.path == "/switch" else Reply()
    plan = runbook_plan(runbook)
    plan["steps"][3]["timeout_s"] = 2
    pair = await create_planned(client, plan)
    try:
        operation = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
    finally:
        release.set()
    assert operation["status"] == "failed" and operation["needs_attention"] is True
    assert step_of(operation, "switch")["error"]["code"] == "step_timed_out"


async def test_a_worker_killed_while_polling_leaves_the_next_one_polling_the_same_url(
    client: httpx.AsyncClient,
    runbook: Runbook,
    live_stack: Stack,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    first_poll, release = threading.Event(), threading.Event()
    polls = 0

    def answer(call: Call) -> Reply:
        nonlocal polls
        if call.method == "POST" and call.path == "/promote":
            return Reply(202, {}, {"Location": "/jobs/7", "Retry-After": "0.2"})
        if call.method == "GET" and call.path == "/jobs/7":
            polls += 1
            if polls == 1:
                first_poll.set()
                # The worker waits inside this poll, holding the operation, until killed.
                return Reply(200, {"status": "running"}, hold=release)
            return Reply(200, {"status": "succeeded", "output": {"promoted": True}})
        return Reply()

    runbook.answer = answer
    pair = await create_planned(client, runbook_plan(runbook))
    started = await start_ok(client, pair["id"])
    try:
        await wait_for(lambda: _is_set(first_poll), timeout_s=60)
        owner = (await operation_row(sessions, started["id"])).lease_owner
        assert owner is not None
        live_stack.worker_by_pid(int(owner.split(":")[1])).kill(signal.SIGKILL)
    finally:
        release.set()
    live_stack.ensure_workers()
    operation = await wait_done(client, started["id"], timeout_s=90)
    assert operation["status"] == "succeeded", [s["error"] for s in operation["steps"]]
    assert step_of(operation, "promote")["output"] == {"promoted": True}
    # The runbook was started once; the worker that took over polled the same URL.
    assert len(runbook.of("POST", "/promote")) == 1
    assert len(runbook.of("GET", "/jobs/7")) >= 2
    keys = {c.headers["idempotency-key"] for c in runbook.of(path="/jobs/7")}
    assert keys == {f"{started['id']}:promote:1"}


async def _is_set(event: threading.Event) -> bool:
    return event.is_set()
