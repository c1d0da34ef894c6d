"""A region's evacuation (DESIGN.md section 13): one batch, the right pairs moved the right
way, never more than max_parallel at once, cancellable, idempotent. Real API and worker
processes."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import BACKEND
from tests.helpers import open_gate, start_ok, wait_done, wait_for

# A region of this run alone: the pairs of other tests (primary in us-east-1) stay out of it.
REGION = f"evac-{uuid.uuid4().hex[:8]}"
# The whole 200 on PostgreSQL; a smaller fleet on SQLite, where one writer at a time makes
# the same test several times slower and proves nothing more.
FLEET = 200 if BACKEND == "postgresql" else 60


def site(name: str, region: str) -> dict[str, str]:
    return {"name": name, "region": region, "cloud": "aws"}


async def register(
    client: httpx.AsyncClient,
    primary: str,
    secondary: str,
    *,
    labels: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    name = f"ev-{uuid.uuid4().hex[:10]}"
    body: dict[str, Any] = {
        "name": name,
        "primary": site(f"{name}-a", primary),
        "secondary": site(f"{name}-b", secondary),
        "labels": labels or {},
        **extra,
    }
    if "plan" not in extra:
        body["driver"] = {"kind": "simulated", **extra.pop("driver", {})}
    response = await client.post("/v1/clusters", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def evacuate(
    client: httpx.AsyncClient, region: str, key: str | None = None, **body: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/regions/{region}/evacuate",
        json=body,
        headers={"Idempotency-Key": key or uuid.uuid4().hex},
    )


async def batch_done(client: httpx.AsyncClient, batch_id: str, timeout_s: float = 240) -> Any:
    async def done() -> Any:
        batch = (await client.get(f"/v1/batches/{batch_id}")).json()
        return batch if batch["done"] else None

    return await wait_for(done, timeout_s=timeout_s, interval_s=0.5)


async def all_pairs(client: httpx.AsyncClient, batch_id: str) -> list[dict[str, Any]]:
    pairs: list[dict[str, Any]] = []
    token = None
    while True:
        params: dict[str, Any] = {"page_size": 50}
        if token:
            params["page_token"] = token
        page = (await client.get(f"/v1/batches/{batch_id}", params=params)).json()
        pairs += page["pairs"]
        token = page["next_page_token"]
        if not token:
            return pairs


async def batch_operations(client: httpx.AsyncClient, pairs: list[dict[str, Any]]) -> list[Any]:
    ids = [p["operation_id"] for p in pairs if p["operation_id"]]
    found = await asyncio.gather(*(client.get(f"/v1/operations/{op}") for op in ids))
    return [r.json() for r in found]


def most_at_once(operations: list[dict[str, Any]]) -> int:
    """The largest number of operations alive at one instant (created .. finished)."""
    edges = []
    for op in operations:
        edges.append((datetime.fromisoformat(op["created_at"]), 1))
        edges.append((datetime.fromisoformat(op["finished_at"]), -1))
    alive = peak = 0
    for _, change in sorted(edges, key=lambda e: (e[0], e[1])):
        alive += change
        peak = max(peak, alive)
    return peak


@pytest.mark.timeout(900)
async def test_evacuation_moves_exactly_the_right_pairs_within_max_parallel(
    client: httpx.AsyncClient,
) -> None:
    gold = {"tier": "gold"}
    # Active in the region as primaries: a failover each (half of them labelled).
    away = [
        await register(client, REGION, "us-west-2", labels=gold if n % 2 else None)
        for n in range(FLEET - 40)
    ]
    # Active in the region as secondaries (failed over there before): a failback each.
    home = [await register(client, "eu-west-1", REGION) for _ in range(15)]
    # Already moved out of the region, or never in it: left alone.
    moved = [await register(client, REGION, "ap-south-1") for _ in range(10)]
    elsewhere = [await register(client, "eu-west-1", "ap-south-1") for _ in range(14)]
    started = [await start_ok(client, pair["id"]) for pair in home + moved]
    await asyncio.gather(*(wait_done(client, op["id"]) for op in started))
    # One not ready: its preflight check cannot reach its health URL.
    plan = {
        "steps": [
            {"name": "preflight", "action": {"kind": "check", "urls": ["http://127.0.0.1:9/h"]}},
            {
                "name": "switch",
                "action": {"kind": "check", "urls": ["http://127.0.0.1:9/h"]},
                "point_of_no_return": True,
            },
        ]
    }
    not_ready = await register(client, REGION, "us-west-2", plan=plan)
    readiness = await client.get(f"/v1/clusters/{not_ready['id']}/readiness?fresh=true")
    assert readiness.json()["ready"] is False

    untouched = {
        p["id"]: (await client.get(f"/v1/clusters/{p['id']}")).json()["last_operation_id"]
        for p in moved + elsewhere + [not_ready]
    }
    answer = await evacuate(client, REGION, max_parallel=7, reason="us-east-1 is down")
    assert answer.status_code == 202, answer.text
    assert answer.headers["location"] == f"/v1/batches/{answer.json()['id']}"
    batch = await batch_done(client, answer.json()["id"])

    expected = len(away) + len(home)
    assert batch["status"] == "succeeded", batch
    assert batch["total"] == expected + 1
    assert batch["counts"] == {
        "pending": 0, "running": 0, "succeeded": expected, "failed": 0, "cancelled": 0,
        "skipped": 1,
    }  # fmt: skip
    pairs = await all_pairs(client, batch["id"])
    by_id = {p["cluster_id"]: p for p in pairs}
    assert set(by_id) == {p["id"] for p in away + home} | {not_ready["id"]}
    assert by_id[not_ready["id"]]["status"] == "skipped"
    assert "not ready" in by_id[not_ready["id"]]["detail"]
    assert {by_id[p["id"]]["kind"] for p in away} == {"failover"}
    assert {by_id[p["id"]]["kind"] for p in home} == {"failback"}

    for pair in away:
        now = (await client.get(f"/v1/clusters/{pair['id']}")).json()
        assert (now["state"], now["active_region"]) == ("secondary-active", "us-west-2")
    for pair in home:
        now = (await client.get(f"/v1/clusters/{pair['id']}")).json()
        assert (now["state"], now["active_region"]) == ("primary-active", "eu-west-1")
    for pair in moved + elsewhere + [not_ready]:
        now = (await client.get(f"/v1/clusters/{pair['id']}")).json()
        assert now["last_operation_id"] == untouched[pair["id"]], now

    operations = await batch_operations(client, pairs)
    assert len(operations) == expected
    assert {(op["batch_id"], op["reason"]) for op in operations} == {
        (batch["id"], "us-east-1 is down")
    }
    assert most_at_once(operations) <= 7
    assert most_at_once(operations) > 1  # it did run operations side by side

    created = await _event(client, "batch.created", batch["id"])
    assert (created["data"]["total"], created["data"]["to_start"]) == (expected + 1, expected)
    last = await wait_for(
        lambda: _event(client, "batch.finished", batch["id"]), timeout_s=30, interval_s=0.2
    )
    assert last["data"]["status"] == "succeeded"
    assert last["cluster_id"] is None


async def _event(client: httpx.AsyncClient, type_: str, batch_id: str) -> Any:
    token = None
    while True:
        params: dict[str, Any] = {"page_size": 100}
        if token:
            params["page_token"] = token
        page = (await client.get("/v1/events", params=params)).json()
        for event in page["items"]:
            if event["type"] == type_ and event["data"].get("batch_id") == batch_id:
                return event
        token = page["next_page_token"]
        if not token:
            return None


async def test_a_label_selector_picks_the_pairs(client: httpx.AsyncClient) -> None:
    region = f"lab-{uuid.uuid4().hex[:6]}"
    team = {"team": uuid.uuid4().hex[:8]}
    picked = [await register(client, region, "us-west-2", labels=team) for _ in range(3)]
    left = [await register(client, region, "us-west-2") for _ in range(2)]
    answer = await evacuate(client, region, labels=team)
    assert answer.status_code == 202, answer.text
    batch = await batch_done(client, answer.json()["id"])
    assert {p["cluster_id"] for p in batch["pairs"]} == {p["id"] for p in picked}
    for pair in left:
        assert (await client.get(f"/v1/clusters/{pair['id']}")).json()["state"] == "primary-active"


async def test_cancel_mid_batch_starts_nothing_new_and_lets_running_ones_finish(
    client: httpx.AsyncClient,
) -> None:
    region = f"can-{uuid.uuid4().hex[:6]}"
    for _ in range(12):
        await register(client, region, "us-west-2", driver={"step_delay_ms": 150})
    answer = await evacuate(client, region, max_parallel=2)
    batch_id = answer.json()["id"]

    async def started() -> Any:
        batch = (await client.get(f"/v1/batches/{batch_id}")).json()
        return batch if batch["counts"]["running"] + batch["counts"]["succeeded"] >= 2 else None

    await wait_for(started, timeout_s=60)
    cancelled = await client.post(f"/v1/batches/{batch_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    cancelled_at = time.time()
    assert cancelled.json()["cancel_requested"] is True
    batch = await batch_done(client, batch_id)
    assert batch["status"] == "cancelled"
    ran = [p for p in batch["pairs"] if p["operation_id"]]
    rest = [p for p in batch["pairs"] if not p["operation_id"]]
    assert ran and rest
    assert {p["status"] for p in ran} == {"succeeded"}  # the running ones finished
    assert {p["status"] for p in rest} == {"cancelled"}
    for operation in await batch_operations(client, ran):
        assert datetime.fromisoformat(operation["created_at"]).timestamp() <= cancelled_at
    # Cancelling again changes nothing.
    again = await client.post(f"/v1/batches/{batch_id}/cancel")
    assert again.json()["status"] == "cancelled"


async def test_a_pair_failed_over_meanwhile_is_skipped_and_the_rest_go_on(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Pairs are taken in name order; the first one's promote waits for its gate, so with
    # max_parallel 1 nothing else starts until the test opens it.
    region = f"skip-{uuid.uuid4().hex[:6]}"
    tag = uuid.uuid4().hex[:8]
    first = await register(
        client, region, "us-west-2", name=f"ev-{tag}-0", driver={"gate": ["promote_target"]}
    )
    taken = await register(client, region, "us-west-2", name=f"ev-{tag}-1")
    rest = [await register(client, region, "us-west-2", name=f"ev-{tag}-{i}") for i in (2, 3)]
    answer = await evacuate(client, region, max_parallel=1)
    assert answer.status_code == 202, answer.text
    # Meanwhile the second pair is failed over on its own: when the batch comes to it, its
    # start is refused (inside the transaction that starts the next ones too).
    own = await start_ok(client, taken["id"])
    assert (await wait_done(client, own["id"]))["status"] == "succeeded"
    await open_gate(sessions, first["id"], "promote_target")
    batch = await batch_done(client, answer.json()["id"])
    by_id = {p["cluster_id"]: p for p in batch["pairs"]}
    assert by_id[taken["id"]]["status"] == "skipped", by_id[taken["id"]]
    assert by_id[taken["id"]]["detail"].startswith("refused:")
    assert by_id[taken["id"]]["operation_id"] is None
    assert {by_id[p["id"]]["status"] for p in [first, *rest]} == {"succeeded"}
    assert batch["counts"]["skipped"] == 1 and batch["counts"]["succeeded"] == 3


async def test_the_same_key_twice_is_one_batch(client: httpx.AsyncClient) -> None:
    region = f"idem-{uuid.uuid4().hex[:6]}"
    for _ in range(2):
        await register(client, region, "us-west-2")
    key = uuid.uuid4().hex
    first, second = await asyncio.gather(
        evacuate(client, region, key, max_parallel=5), evacuate(client, region, key, max_parallel=5)
    )
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    await batch_done(client, first.json()["id"])
    listed = (await client.get("/v1/batches")).json()["items"]
    assert sum(1 for b in listed if b["region"] == region) == 1
    # The same key with another body is refused.
    other = await evacuate(client, region, key, max_parallel=6)
    assert other.status_code == 422 or other.status_code == 409, other.text


async def test_bad_requests_are_problems(client: httpx.AsyncClient) -> None:
    no_key = await client.post(f"/v1/regions/{REGION}/evacuate", json={})
    assert no_key.status_code == 400
    bad_region = await evacuate(client, "Not A Region")
    assert bad_region.status_code == 422
    for body in ({"max_parallel": 0}, {"mode": "forced"}, {"labels": {"": "x"}}):
        refused = await evacuate(client, REGION, **body)
        assert refused.status_code == 422, (body, refused.text)
    assert (await client.get("/v1/batches/bt_nope")).status_code == 404
    nowhere = await evacuate(client, f"nowhere-{uuid.uuid4().hex[:6]}")
    assert nowhere.status_code == 404
    assert "no pair has a site" in nowhere.json()["detail"]
    assert (await client.post("/v1/batches/bt_nope/cancel")).status_code == 404


async def test_operation_created_names_its_batch_or_none(client: httpx.AsyncClient) -> None:
    region = f"ev-{uuid.uuid4().hex[:6]}"
    moved = await register(client, region, "us-west-2")
    batch = await batch_done(client, (await evacuate(client, region)).json()["id"])
    alone = await register(client, "eu-west-1", "us-west-2")
    await wait_done(client, (await start_ok(client, alone["id"]))["id"])

    async def created(cluster_id: str) -> dict[str, Any]:
        page = (await client.get(f"/v1/clusters/{cluster_id}/events")).json()
        [event] = [e for e in page["items"] if e["type"] == "operation.created"]
        return event["data"]  # type: ignore[no-any-return]

    assert (await created(moved["id"]))["batch_id"] == batch["id"]
    assert (await created(alone["id"]))["batch_id"] is None
