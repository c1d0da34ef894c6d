"""Requests racing a DELETE of the same pair: never a 5xx, and never both winning."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers import create_cluster, open_gate, start_ok, wait_done

ROUNDS = 25


async def test_failover_racing_delete(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    for _ in range(ROUNDS):
        # Held at preflight: the failover cannot finish (and the pair become deletable
        # again) before the delete has been answered.
        pair = await create_cluster(client, gate=["preflight"])
        failover, delete = await asyncio.gather(
            client.post(
                f"/v1/clusters/{pair['id']}/failover",
                json={},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            ),
            client.delete(f"/v1/clusters/{pair['id']}"),
        )
        outcome = (failover.status_code, delete.status_code)
        # Either the failover won (the delete is refused mid-switch) or the delete did.
        assert outcome in {(202, 409), (404, 204)}, (outcome, failover.text, delete.text)
        if failover.status_code == 202:
            await open_gate(sessions, pair["id"], "preflight")
            await wait_done(client, failover.json()["id"])


async def test_failback_racing_delete(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    for _ in range(ROUNDS):
        pair = await create_cluster(client)
        over = await start_ok(client, pair["id"])
        assert (await wait_done(client, over["id"]))["status"] == "succeeded"
        # The failback is held at preflight, as the failover above.
        gated = await client.patch(
            f"/v1/clusters/{pair['id']}",
            json={"driver": {"kind": "simulated", "gate": ["preflight"]}},
        )
        assert gated.status_code == 200, gated.text
        failback, delete = await asyncio.gather(
            client.post(
                f"/v1/clusters/{pair['id']}/failback",
                json={},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            ),
            client.delete(f"/v1/clusters/{pair['id']}"),
        )
        outcome = (failback.status_code, delete.status_code)
        assert outcome in {(202, 409), (404, 204)}, (outcome, failback.text, delete.text)
        if failback.status_code == 202:
            await open_gate(sessions, pair["id"], "preflight")
            await wait_done(client, failback.json()["id"])


async def test_patch_racing_delete(client: httpx.AsyncClient) -> None:
    for _ in range(ROUNDS):
        pair = await create_cluster(client)
        patch, delete = await asyncio.gather(
            client.patch(f"/v1/clusters/{pair['id']}", json={"deployments": []}),
            client.delete(f"/v1/clusters/{pair['id']}"),
        )
        outcome = (patch.status_code, delete.status_code)
        assert outcome in {(200, 204), (404, 204)}, (outcome, patch.text, delete.text)


async def test_two_deletes_of_one_pair(client: httpx.AsyncClient) -> None:
    for _ in range(ROUNDS):
        pair = await create_cluster(client)
        first, second = await asyncio.gather(
            client.delete(f"/v1/clusters/{pair['id']}"),
            client.delete(f"/v1/clusters/{pair['id']}"),
        )
        assert sorted([first.status_code, second.status_code]) == [204, 404], (
            first.text,
            second.text,
        )
        assert (await client.get(f"/v1/clusters/{pair['id']}")).status_code == 404
