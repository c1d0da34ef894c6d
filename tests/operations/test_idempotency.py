"""Idempotency-Key on failover/failback (IETF draft semantics, DESIGN.md section 3)."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.helpers import create_cluster, start, wait_done


async def operations_of(client: httpx.AsyncClient, cluster_id: str) -> list[dict]:
    page = (await client.get("/v1/operations", params={"cluster_id": cluster_id})).json()
    return page["items"]  # type: ignore[no-any-return]


async def test_same_key_ten_times_returns_one_operation(client: httpx.AsyncClient) -> None:
    cluster = await create_cluster(client)
    key = uuid.uuid4().hex
    responses = [await start(client, cluster["id"], key=key, reason="drill") for _ in range(10)]
    assert {r.status_code for r in responses} == {202}
    assert len({r.text for r in responses}) == 1, "replays must be byte-identical"
    assert len({r.headers["Location"] for r in responses}) == 1
    assert "Idempotent-Replayed" not in responses[0].headers
    assert all(r.headers.get("Idempotent-Replayed") == "true" for r in responses[1:])
    ops = await operations_of(client, cluster["id"])
    assert [op["id"] for op in ops] == [responses[0].json()["id"]]
    await wait_done(client, ops[0]["id"])
    # Still the stored response once the operation has finished.
    again = await start(client, cluster["id"], key=key, reason="drill")
    assert again.status_code == 202 and again.text == responses[0].text


async def test_same_key_ten_times_concurrently(client: httpx.AsyncClient) -> None:
    cluster = await create_cluster(client)
    key = uuid.uuid4().hex
    responses = await asyncio.gather(
        *(start(client, cluster["id"], key=key, reason="drill") for _ in range(10))
    )
    assert {r.status_code for r in responses} == {202}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len({r.text for r in responses}) == 1
    ops = await operations_of(client, cluster["id"])
    assert len(ops) == 1
    await wait_done(client, ops[0]["id"])


async def test_same_key_with_another_body_or_path_is_422(client: httpx.AsyncClient) -> None:
    cluster = await create_cluster(client)
    other = await create_cluster(client)
    key = uuid.uuid4().hex
    first = await start(client, cluster["id"], key=key, reason="drill")
    assert first.status_code == 202

    other_body = await start(client, cluster["id"], key=key, reason="something else")
    assert other_body.status_code == 422
    assert other_body.headers["content-type"].startswith("application/problem+json")
    assert other_body.json()["code"] == "idempotency_key_reused"

    other_path = await start(client, other["id"], key=key, reason="drill")
    assert other_path.status_code == 422
    assert other_path.json()["code"] == "idempotency_key_reused"
    assert await operations_of(client, other["id"]) == []
    await wait_done(client, first.json()["id"])


async def test_missing_key_is_400_and_starts_nothing(client: httpx.AsyncClient) -> None:
    cluster = await create_cluster(client)
    response = await client.post(f"/v1/clusters/{cluster['id']}/failover", json={})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "idempotency_key_missing"
    assert await operations_of(client, cluster["id"]) == []
    state = (await client.get(f"/v1/clusters/{cluster['id']}")).json()["state"]
    assert state == "primary-active"


async def test_refused_request_does_not_burn_its_key(client: httpx.AsyncClient) -> None:
    """A 409 stores nothing: the same key works once the pair allows the action."""
    cluster = await create_cluster(client)
    key = uuid.uuid4().hex
    refused = await start(client, cluster["id"], "failback", key=key)
    assert refused.status_code == 409
    body = refused.json()
    assert body["code"] == "invalid_transition"
    assert body["current_state"] == "primary-active"
    assert body["allowed_actions"] == ["failover"]
    op = (await start(client, cluster["id"], "failover")).json()
    await wait_done(client, op["id"])
    accepted = await start(client, cluster["id"], "failback", key=key)
    assert accepted.status_code == 202, accepted.text
    await wait_done(client, accepted.json()["id"])


async def test_deleting_a_pair_forgets_its_keys(client: httpx.AsyncClient) -> None:
    """A replay after the pair is gone is answered as the request would be now (404), not
    with the stored 202 whose Location no longer exists. Other pairs' keys stay."""
    gone, kept = await create_cluster(client), await create_cluster(client)
    key, other_key = uuid.uuid4().hex, uuid.uuid4().hex
    first = await start(client, gone["id"], key=key, reason="drill")
    kept_first = await start(client, kept["id"], key=other_key, reason="drill")
    assert first.status_code == kept_first.status_code == 202
    await wait_done(client, first.json()["id"])
    deleted = await client.delete(f"/v1/clusters/{gone['id']}")
    assert deleted.status_code == 204, deleted.text

    replay = await start(client, gone["id"], key=key, reason="drill")
    assert replay.status_code == 404, replay.text
    assert replay.json()["code"] == "not_found"
    assert "Location" not in replay.headers
    kept_replay = await start(client, kept["id"], key=other_key, reason="drill")
    assert kept_replay.status_code == 202
    assert kept_replay.headers.get("Idempotent-Replayed") == "true"
    assert kept_replay.text == kept_first.text
