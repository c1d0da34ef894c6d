"""A pair's allowed_actions say what its operation really allows: cancel before the point of
no return, nothing past it, retry once a failure left the pair mid-switch."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers import create_cluster, open_gate, start_ok, step_status, wait_done, wait_for


async def pair(client: httpx.AsyncClient, cluster_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/clusters/{cluster_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    listed = await client.get("/v1/clusters", params={"page_size": 100})
    # The list renders the pair the same way (it may be past the first page, or have
    # changed between the two reads, as a rollback ends: then there is nothing to compare).
    same = [
        c
        for c in listed.json()["items"]
        if c["id"] == cluster_id and (c["state"], c["version"]) == (body["state"], body["version"])
    ]
    if same:
        assert same[0]["allowed_actions"] == body["allowed_actions"]
    return body


async def test_running_before_the_point_of_no_return_allows_cancel(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    cluster = await create_cluster(client, gate=["drain_replication"])
    assert (await pair(client, cluster["id"]))["allowed_actions"] == ["failover"]
    op = await start_ok(client, cluster["id"])

    async def draining() -> bool:
        return await step_status(client, op["id"], "drain_replication") == "running"

    await wait_for(draining)
    body = await pair(client, cluster["id"])
    assert body["state"] == "failing-over" and body["allowed_actions"] == ["cancel"]
    # What it says is what the API does.
    assert (await client.post(f"/v1/operations/{op['id']}/cancel")).status_code == 202
    # While it cancels nothing is allowed; the rollback may already be done.
    cancelling = await pair(client, cluster["id"])
    expected = [] if cancelling["state"] == "failing-over" else ["failover"]
    assert cancelling["allowed_actions"] == expected
    assert (await wait_done(client, op["id"]))["status"] == "cancelled"
    await open_gate(sessions, cluster["id"], "drain_replication")
    assert (await pair(client, cluster["id"]))["allowed_actions"] == ["failover"]


async def test_past_the_point_of_no_return_allows_nothing(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    cluster = await create_cluster(client, hold=["promote_target"])
    op = await start_ok(client, cluster["id"])

    async def promoting() -> bool:
        return await step_status(client, op["id"], "promote_target") == "running"

    await wait_for(promoting)
    body = await pair(client, cluster["id"])
    assert body["state"] == "failing-over" and body["allowed_actions"] == []
    assert (await client.post(f"/v1/operations/{op['id']}/cancel")).status_code == 409
    assert (await client.post(f"/v1/operations/{op['id']}/retry")).status_code == 409
    await open_gate(sessions, cluster["id"], "promote_target")
    assert (await wait_done(client, op["id"]))["status"] == "succeeded"
    assert (await pair(client, cluster["id"]))["allowed_actions"] == ["failback"]


async def test_a_failure_needing_attention_allows_retry(client: httpx.AsyncClient) -> None:
    cluster = await create_cluster(client, fail={"promote_target": 2})
    op = await start_ok(client, cluster["id"])
    failed = await wait_done(client, op["id"])
    assert failed["status"] == "failed" and failed["needs_attention"] is True
    body = await pair(client, cluster["id"])
    assert body["state"] == "failing-over" and body["allowed_actions"] == ["retry"]
    assert (await client.post(f"/v1/operations/{op['id']}/cancel")).status_code == 409
    assert (await client.post(f"/v1/operations/{op['id']}/retry")).status_code == 202
    # The simulated step fails twice: the first retry fails again and allows another.
    again = await wait_done(client, op["id"])
    assert again["status"] == "failed" and again["needs_attention"] is True
    assert (await pair(client, cluster["id"]))["allowed_actions"] == ["retry"]
    assert (await client.post(f"/v1/operations/{op['id']}/retry")).status_code == 202
    assert (await wait_done(client, op["id"]))["status"] == "succeeded"
    assert (await pair(client, cluster["id"]))["allowed_actions"] == ["failback"]
