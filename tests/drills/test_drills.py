"""Drills end to end (DESIGN.md section 14): the real API and worker processes, a real
runbook service on loopback that records every call, PostgreSQL or SQLite and Redis."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.samples import Sample
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.drills import service as drill_service
from app.metrics.service import Pair as MetricPair
from app.metrics.service import Snapshot, exposition
from tests import pg_servers as servers
from tests.actions.test_postgres import database_pair, fetch, new_table
from tests.helpers import (
    create_cluster,
    events,
    open_gate,
    pair_body,
    start_ok,
    wait_done,
    wait_for,
)
from tests.metrics.test_metrics import samples, scrape
from tests.pg_servers import PgPair
from tests.receiver import Receiver
from tests.runbook import Reply, Runbook
from tests.stack import Stack
from tests.webhooks.test_pagerduty import ROUTING_KEY, events_api_v2_errors

# The session's PostgreSQL servers (first backend's pass only), rebuilt when broken.
pg_servers, pg_pair = servers.pg_servers, servers.pg_pair

# Regions of these tests' own: other tests evacuate or count pairs in theirs.
PRIMARY, SECONDARY = "eu-drill-1", "ap-drill-1"


def hook(runbook: Runbook, path: str) -> dict[str, Any]:
    return {"kind": "http", "url": runbook.url(path)}


def drill_plan(runbook: Runbook) -> dict[str, Any]:
    """A check (rehearsed by its probe), a reversible hook and the point of no return with
    drill hooks, a last step with none (skipped), and a cleanup hook."""
    return {
        "steps": [
            {"name": "preflight", "action": {"kind": "check", "urls": [runbook.url("/health")]}},
            {
                "name": "prepare",
                "action": hook(runbook, "/prepare"),
                "undo": hook(runbook, "/unprepare"),
                "drill": hook(runbook, "/drill/prepare"),
            },
            {
                "name": "promote",
                "action": hook(runbook, "/promote"),
                "point_of_no_return": True,
                "drill": hook(runbook, "/drill/promote"),
            },
            {"name": "switch", "action": hook(runbook, "/switch"), "traffic_switched": True},
        ],
        "cleanup": [{"name": "teardown", "action": hook(runbook, "/cleanup")}],
    }


async def create_pair(client: httpx.AsyncClient, plan: dict[str, Any]) -> dict[str, Any]:
    name = f"drill-{uuid.uuid4().hex[:10]}"
    response = await client.post(
        "/v1/clusters",
        json={
            "name": name,
            "primary": {"name": f"{name}-a", "region": PRIMARY, "cloud": "aws"},
            "secondary": {"name": f"{name}-b", "region": SECONDARY, "cloud": "aws"},
            "plan": plan,
        },
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def start_drill(
    client: httpx.AsyncClient, cluster_id: str, key: str | None = None, **body: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/clusters/{cluster_id}/drills",
        json=body or None,
        headers={"Idempotency-Key": key or uuid.uuid4().hex},
    )


def posts(runbook: Runbook) -> list[str]:
    return [c.path for c in runbook.of("POST")]


def types(items: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in items]


async def test_a_drill_runs_drill_hooks_probes_and_cleanup_and_moves_nothing(
    client: httpx.AsyncClient, runbook: Runbook
) -> None:
    pair = await create_pair(client, drill_plan(runbook))
    key = uuid.uuid4().hex
    response = await start_drill(client, pair["id"], key, reason="quarterly rehearsal")
    assert response.status_code == 202, response.text
    started = response.json()
    assert response.headers["Location"] == f"/v1/operations/{started['id']}"
    assert started["kind"] == "drill" and started["mode"] is None
    assert started["from_state"] == started["target_state"] == "primary-active"
    assert started["reason"] == "quarterly rehearsal"
    # The same key and body: the same drill, never a second one.
    again = await start_drill(client, pair["id"], key, reason="quarterly rehearsal")
    assert again.status_code == 202 and again.json()["id"] == started["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert (await start_drill(client, pair["id"], key, reason="other")).status_code == 422
    missing = await client.post(f"/v1/clusters/{pair['id']}/drills")
    assert missing.status_code == 400, missing.text

    drill = await wait_done(client, started["id"])
    assert drill["status"] == "succeeded", drill
    # The drill hooks and the cleanup ran; no real action and no undo of any step did.
    assert posts(runbook) == ["/drill/prepare", "/drill/promote", "/cleanup"]
    assert [c.path for c in runbook.of("GET")] == ["/health"]  # the check's probe, once
    call = runbook.of("POST", "/drill/prepare")[0]
    assert call.verifies_with(pair["runbook_secret"])
    body = call.json()
    assert body["kind"] == "drill" and body["action"] == "do"
    # Rehearsing the failover the pair allows next: from the primary to the secondary.
    assert body["source"]["region"] == PRIMARY and body["target"]["region"] == SECONDARY

    statuses = {s["name"]: s["status"] for s in drill["steps"]}
    assert statuses == {
        "preflight": "succeeded",
        "prepare": "succeeded",
        "promote": "succeeded",
        "switch": "skipped",
        "teardown": "succeeded",
    }
    assert all(s["reversible"] for s in drill["steps"])
    report = drill["report"]
    assert report["outcome"] == "succeeded" and report["failed_step"] is None
    assert [(s["name"], s["rehearsal"]) for s in report["steps"]] == [
        ("preflight", "probe"),
        ("prepare", "drill"),
        ("promote", "drill"),
        ("switch", "skipped"),
    ]
    assert [(s["name"], s["status"]) for s in report["cleanup"]] == [("teardown", "succeeded")]
    measured = [s["duration_s"] for s in report["steps"][:3]]
    assert all(d is not None and d >= 0 for d in measured)
    assert report["expected_rto_s"] == round(sum(measured), 3)
    assert report["unmeasured_steps"] == ["switch"]
    assert [(c["step"], c["name"], c["ok"]) for c in report["readiness"]] == [
        ("preflight", "check", True)
    ]
    assert report["replication_lag"] is None

    # The pair never moved.
    after = (await client.get(f"/v1/clusters/{pair['id']}")).json()
    assert after["state"] == "primary-active" and after["active_region"] == PRIMARY
    assert after["version"] == pair["version"]
    logged = await events(client, pair["id"])
    assert "cluster.state_changed" not in types(logged)
    finished = [e for e in logged if e["type"] == "drill.finished"]
    assert types(logged)[:2] == ["operation.created", "drill.started"]
    assert [e["data"]["outcome"] for e in finished] == ["succeeded"]
    assert finished[0]["data"]["operation_id"] == drill["id"]
    assert finished[0]["data"]["expected_rto_s"] == report["expected_rto_s"]
    # Listed among the pair's operations by kind.
    listed = await client.get("/v1/operations", params={"cluster_id": pair["id"], "kind": "drill"})
    assert [o["id"] for o in listed.json()["items"]] == [drill["id"]]


async def test_a_failing_drill_step_still_cleans_up_and_pages_a_warning(
    client: httpx.AsyncClient, runbook: Runbook
) -> None:
    runbook.answer = lambda call: (
        Reply(400, {"error": "no isolated network left"})
        if call.path == "/drill/prepare"
        else Reply()
    )
    receiver, standard = Receiver().start(), Receiver().start()
    created = []
    try:
        for body in (
            {"kind": "pagerduty", "url": receiver.url, "routing_key": ROUTING_KEY},
            {"url": standard.url, "event_types": ["drill.started", "drill.finished"]},
        ):
            response = await client.post("/v1/webhooks", json=body)
            assert response.status_code == 201, response.text
            created.append(response.json()["id"])
        pair = await create_pair(client, drill_plan(runbook))
        started = await start_drill(client, pair["id"])
        assert started.status_code == 202, started.text
        drill = await wait_done(client, started.json()["id"])

        assert drill["status"] == "failed" and not drill["needs_attention"]
        assert drill["error"]["step"] == "prepare"
        assert "no isolated network left" in drill["error"]["detail"]
        # The cleanup ran after the failure; the steps after it were skipped.
        assert posts(runbook) == ["/drill/prepare", "/cleanup"]
        statuses = {s["name"]: s["status"] for s in drill["steps"]}
        assert statuses == {
            "preflight": "succeeded",
            "prepare": "failed",
            "promote": "skipped",
            "switch": "skipped",
            "teardown": "succeeded",
        }
        report = drill["report"]
        assert report["outcome"] == "failed" and report["failed_step"] == "prepare"
        assert report["expected_rto_s"] is None
        failed = next(s for s in report["steps"] if s["name"] == "prepare")
        assert failed["status"] == "failed" and "400" in failed["error"]["message"]
        assert report["cleanup"][0]["status"] == "succeeded"
        logged = await events(client, pair["id"])
        finished = [e["data"] for e in logged if e["type"] == "drill.finished"]
        assert [(f["outcome"], f["failed_step"]) for f in finished] == [("failed", "prepare")]
        assert "cluster.state_changed" not in types(logged)

        # Webhooks: both drill events to the standard endpoint; PagerDuty gets exactly one
        # body for the drill, a warning trigger from drill.finished (its operation.* events
        # never page, and neither does its start).
        def delivered() -> list[str]:
            return [
                r.json()["type"]
                for r in standard.bodies_for_cluster(pair["id"])
                if r.json()["type"].startswith("drill.")
            ]

        await wait_for(lambda: _async(len(set(delivered())) == 2), timeout_s=30)
        assert sorted(set(delivered())) == ["drill.finished", "drill.started"]

        def paged() -> list[dict[str, Any]]:
            return [
                r.json()
                for r in list(receiver.received)
                if r.json().get("dedup_key") == drill["id"]
            ]

        # drill.finished is the pair's last event: its body comes after any of the others.
        await wait_for(lambda: _async(bool(paged())), timeout_s=30)
        bodies = paged()
        assert {b["event_action"] for b in bodies} == {"trigger"}
        assert {b["payload"]["severity"] for b in bodies} == {"warning"}
        assert {b["payload"]["class"] for b in bodies} == {"drill.finished"}
        assert all(events_api_v2_errors(b) == [] for b in bodies)
        assert "prepare" in bodies[0]["payload"]["summary"]
    finally:
        for endpoint_id in created:
            await client.delete(f"/v1/webhooks/{endpoint_id}")
        receiver.stop()
        standard.stop()


async def _async(value: Any) -> Any:
    return value


async def test_a_failover_asked_for_during_a_drill_cancels_it_and_runs_after_its_cleanup(
    client: httpx.AsyncClient,
    runbook: Runbook,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    held = threading.Event()
    runbook.answer = lambda call: Reply(hold=held) if call.path == "/drill/prepare" else Reply()
    pair = await create_pair(client, drill_plan(runbook))
    started = await start_drill(client, pair["id"])
    assert started.status_code == 202, started.text
    drill_id = started.json()["id"]
    try:
        await wait_for(lambda: _async(bool(runbook.of("POST", "/drill/prepare"))), timeout_s=30)
        # A second drill, meanwhile: one unfinished drill per pair.
        second = await start_drill(client, pair["id"])
        assert second.status_code == 409, second.text
        assert second.json()["operation_id"] == drill_id

        failover = await start_ok(client, pair["id"], "failover", reason="region trouble")
        assert failover["status"] == "queued"
        pair_now = (await client.get(f"/v1/clusters/{pair['id']}")).json()
        assert pair_now["state"] == "failing-over"
        drill_now = (await client.get(f"/v1/operations/{drill_id}")).json()
        assert drill_now["status"] == "cancelling"
        # A drill asked for while the failover is unfinished is refused, naming it.
        refused = await start_drill(client, pair["id"])
        assert refused.status_code == 409, refused.text
        assert refused.json()["operation_id"] == failover["id"]
        assert failover["id"] in refused.json()["detail"]
        # The failover waits for the drill: nothing real has run yet.
        assert "/prepare" not in posts(runbook)
    finally:
        held.set()

    drill = await wait_done(client, drill_id)
    assert drill["status"] == "cancelled", drill
    assert drill["report"]["outcome"] == "cancelled"
    assert drill["report"]["cleanup"][0]["status"] == "succeeded"
    moved = await wait_done(client, failover["id"])
    assert moved["status"] == "succeeded", moved
    order = posts(runbook)
    # The drill's hook, its cleanup, then the failover's real steps; the drill's promote
    # hook never ran (the drill was cancelled before it).
    assert order == ["/drill/prepare", "/cleanup", "/prepare", "/promote", "/switch"]
    assert moved["started_at"] >= drill["finished_at"]
    after = (await client.get(f"/v1/clusters/{pair['id']}")).json()
    assert after["state"] == "secondary-active" and after["active_region"] == SECONDARY
    finished = [
        e["data"] for e in await events(client, pair["id"]) if e["type"] == "drill.finished"
    ]
    assert [f["outcome"] for f in finished] == ["cancelled"]


# -- a PostgreSQL pair ---------------------------------------------------------------


async def test_a_drill_of_a_postgresql_pair_checks_lag_and_roles_and_never_fences(
    client: httpx.AsyncClient, pg_pair: PgPair
) -> None:
    """Real servers (first backend's pass only): the drill's postgres check runs as the
    preflight's probe; fence, drain and promote are never run; a writer on the primary
    commits throughout without one error."""
    primary, standby = pg_pair.primary, pg_pair.standby
    table = await new_table(primary)
    pair = await database_pair(client, primary.dsn(), standby.dsn())
    stop, committed = asyncio.Event(), []

    async def write() -> None:
        conn = await asyncpg.connect(primary.dsn(), timeout=5)
        try:
            while not stop.is_set():
                n = len(committed) + 1
                await conn.execute(f"INSERT INTO {table} VALUES ($1)", n)
                committed.append(n)
        finally:
            await conn.close()

    writer = asyncio.ensure_future(write())
    try:
        await wait_for(lambda: _async(len(committed) >= 50), timeout_s=30)
        started = await start_drill(client, pair["id"])
        assert started.status_code == 202, started.text
        drill = await wait_done(client, started.json()["id"])
        during = len(committed)
        # Still writing after the drill: the source was never fenced.
        await wait_for(lambda: _async(len(committed) >= during + 50), timeout_s=30)
    finally:
        stop.set()
        await writer  # raises if any write failed
    assert drill["status"] == "succeeded", drill["steps"]
    report = drill["report"]
    assert [(s["name"], s["rehearsal"], s["status"]) for s in report["steps"]] == [
        ("preflight", "probe", "succeeded"),
        ("fence", "skipped", "skipped"),
        ("drain", "skipped", "skipped"),
        ("promote", "skipped", "skipped"),
    ]
    assert [(c["step"], c["name"], c["ok"]) for c in report["readiness"]] == [
        ("preflight", "postgres", True)
    ]
    lag = report["replication_lag"]
    assert lag is not None and lag["step"] == "preflight"
    assert lag["bytes"] is not None and lag["bytes"] >= 0 and lag["seconds"] is not None
    assert drill["steps"][0]["output"]["checks"][0]["replication_lag"]["bytes"] == lag["bytes"]
    # Both servers kept their roles; the primary takes writes on a new session too.
    assert await fetch(primary, "SELECT pg_is_in_recovery()") is False
    assert await fetch(standby, "SELECT pg_is_in_recovery()") is True
    assert await fetch(primary, "SHOW default_transaction_read_only") == "off"
    assert await fetch(primary, f"SELECT count(*) FROM {table}") == len(committed)
    after = (await client.get(f"/v1/clusters/{pair['id']}")).json()
    assert after["state"] == "primary-active"
    finished = [
        e["data"] for e in await events(client, pair["id"]) if e["type"] == "drill.finished"
    ]
    assert finished[0]["replication_lag"]["bytes"] == lag["bytes"]


# -- the schedule --------------------------------------------------------------------


async def drills_of(client: httpx.AsyncClient, cluster_id: str) -> list[dict[str, Any]]:
    response = await client.get(
        "/v1/operations", params={"cluster_id": cluster_id, "kind": "drill", "page_size": 100}
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


async def scheduled_pair(client: httpx.AsyncClient, every_days: int = 1, **driver: Any) -> str:
    body = pair_body(**driver)
    for side, region in (("primary", PRIMARY), ("secondary", SECONDARY)):
        body[side]["region"] = region
    response = await client.post("/v1/clusters", json={**body, "drill_every_days": every_days})
    assert response.status_code == 201, response.text
    assert response.json()["drill_every_days"] == every_days
    return str(response.json()["id"])


async def one_done_drill(client: httpx.AsyncClient, cluster_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        found = await drills_of(client, cluster_id)
        return found[0] if found and found[0]["done"] else None

    drill: dict[str, Any] = await wait_for(done, timeout_s=60, interval_s=0.2)
    return drill


async def test_drill_every_days_is_validated_and_can_be_cleared(
    client: httpx.AsyncClient,
) -> None:
    body = pair_body()
    for bad in (0, 366, "7", 1.5, True):
        response = await client.post("/v1/clusters", json={**body, "drill_every_days": bad})
        assert response.status_code == 422, (bad, response.text)
    pair = await create_cluster(client)
    assert pair["drill_every_days"] is None
    patched = await client.patch(f"/v1/clusters/{pair['id']}", json={"drill_every_days": 365})
    assert patched.status_code == 200 and patched.json()["drill_every_days"] == 365
    # Another change leaves it; an explicit null ends the schedule.
    renamed = await client.patch(f"/v1/clusters/{pair['id']}", json={"rto_target_s": 60})
    assert renamed.json()["drill_every_days"] == 365
    cleared = await client.patch(f"/v1/clusters/{pair['id']}", json={"drill_every_days": None})
    assert cleared.status_code == 200 and cleared.json()["drill_every_days"] is None
    got = (await client.get(f"/v1/clusters/{pair['id']}")).json()
    assert got["drill_every_days"] is None


async def test_the_workers_start_one_drill_per_due_pair_and_none_beside_a_switch(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    live_stack: Stack,
) -> None:
    """The stack's two worker processes both run every round; with this test's own callers
    besides, each due pair gets exactly one drill, decided under the pair's row lock."""
    assert len(live_stack.live_workers()) >= 2

    async def enqueue(operation_id: str, epoch: int) -> None:
        pass  # the sweeper queues it: its lease is free

    first = await scheduled_pair(client)
    # Four callers at once, racing the workers' rounds: one drill at most among them all.
    started = await asyncio.gather(
        *(drill_service.start_if_due(sessions, enqueue, first) for _ in range(4))
    )
    assert sum(1 for s in started if s is not None) <= 1
    second = await scheduled_pair(client)
    # A pair whose failover is unfinished gets no drill meanwhile.
    busy = await scheduled_pair(client, gate=["preflight"])
    failover = await start_ok(client, busy, "failover")
    drills_first = await one_done_drill(client, first)
    drills_second = await one_done_drill(client, second)
    for drill in (drills_first, drills_second):
        assert drill["status"] == "succeeded", drill
        assert drill["requested_by"] == "scheduler"
        assert drill["from_state"] == "primary-active"
    # A pair made due now is drilled by a later round, which saw the others again.
    marker = await scheduled_pair(client)
    await one_done_drill(client, marker)
    assert len(await drills_of(client, first)) == 1
    assert len(await drills_of(client, second)) == 1
    assert len(await drills_of(client, marker)) == 1
    # Any drill of the busy pair was asked for before its failover and cancelled by it.
    early = await drills_of(client, busy)
    assert all(d["created_at"] < failover["created_at"] for d in early)
    assert all(d["status"] == "cancelled" for d in early)
    await open_gate(sessions, busy, "preflight")
    moved = await wait_done(client, failover["id"])
    assert moved["status"] == "succeeded", moved

    # Once the switch is done, the pair is due again and its drill rehearses the failback.
    async def drilled() -> dict[str, Any] | None:
        found = [d for d in await drills_of(client, busy) if d["created_at"] > moved["finished_at"]]
        return found[0] if found and found[0]["done"] else None

    drill = await wait_for(drilled, timeout_s=60, interval_s=0.2)
    assert drill["status"] == "succeeded" and drill["from_state"] == "secondary-active"
    assert [s["status"] for s in drill["report"]["steps"][:3]] == ["succeeded"] * 3


# -- the metric ----------------------------------------------------------------------


async def test_last_drill_success_timestamp_follows_successful_drills(
    client: httpx.AsyncClient,
) -> None:
    body = pair_body(fail={"preflight": 1})
    for side, region in (("primary", PRIMARY), ("secondary", SECONDARY)):
        body[side]["region"] = region
    created = await client.post("/v1/clusters", json=body)
    assert created.status_code == 201, created.text
    pair = created.json()

    async def drilled() -> list[Sample]:
        found = samples(await scrape(client))
        return [
            s
            for s in found
            if s.name in ("tandem_last_drill_success_timestamp", "tandem_pair_drill_every_days")
            and s.labels == {"pair": pair["name"]}
        ]

    assert await drilled() == []  # no schedule, never drilled
    # A failed drill (the simulated driver's injected failure, rehearsed) counts for nothing.
    failed = await wait_done(client, (await start_drill(client, pair["id"])).json()["id"])
    assert failed["status"] == "failed" and failed["report"]["failed_step"] == "preflight"
    assert await drilled() == []
    patched = await client.patch(f"/v1/clusters/{pair['id']}", json={"driver": {}})
    assert patched.status_code == 200, patched.text
    drill = await wait_done(client, (await start_drill(client, pair["id"])).json()["id"])
    assert drill["status"] == "succeeded", drill
    [sample] = await drilled()
    finished = datetime.fromisoformat(drill["finished_at"]).timestamp()
    assert sample.name == "tandem_last_drill_success_timestamp"
    assert sample.value == pytest.approx(finished, abs=0.001)
    # A schedule is shown beside it (the drill just started makes the pair not due).
    await client.patch(f"/v1/clusters/{pair['id']}", json={"drill_every_days": 30})
    shown = {s.name: s.value for s in await drilled()}
    assert shown == {
        "tandem_last_drill_success_timestamp": pytest.approx(finished, abs=0.001),
        "tandem_pair_drill_every_days": 30,
    }


def test_a_scheduled_pair_never_drilled_shows_zero() -> None:
    """0 (the epoch) for a pair with a schedule and no successful drill yet, so that the
    alert on untested pairs fires for it; nothing for a pair with neither."""
    base = dict(
        state="primary-active",
        active_region="a",
        sides=(("aws", "a"), ("aws", "b")),
        ready=None,
        rto_target_s=None,
        rpo_target_s=None,
    )
    snapshot = Snapshot(
        pairs=[
            MetricPair(name="scheduled", drill_every_days=7, **base),  # type: ignore[arg-type]
            MetricPair(name="plain", **base),  # type: ignore[arg-type]
        ],
        in_progress=0,
        needing_attention=0,
        oldest_running_s=0,
        oldest_pending_s=0,
    )
    found = samples(exposition(snapshot))
    assert [(s.name, s.labels["pair"], s.value) for s in found if "drill" in s.name] == [
        ("tandem_last_drill_success_timestamp", "scheduled", 0.0),
        ("tandem_pair_drill_every_days", "scheduled", 7.0),
    ]
