"""At most one unfinished operation per pair, enforced by the database."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from tests.helpers import create_cluster, start, wait_done


async def test_fifty_concurrent_failovers_exactly_one_accepted(client: httpx.AsyncClient) -> None:
    cluster = await create_cluster(client)
    responses = await asyncio.gather(*(start(client, cluster["id"]) for _ in range(50)))
    codes = Counter(r.status_code for r in responses)
    assert codes == {202: 1, 409: 49}, codes
    for response in responses:
        if response.status_code == 409:
            assert response.headers["content-type"].startswith("application/problem+json")
            # The winner may already have finished when a late loser is refused.
            assert response.json()["current_state"] in {"failing-over", "secondary-active"}
    winner = next(r for r in responses if r.status_code == 202).json()
    page = (await client.get("/v1/operations", params={"cluster_id": cluster["id"]})).json()
    assert [op["id"] for op in page["items"]] == [winner["id"]]
    assert (await wait_done(client, winner["id"]))["status"] == "succeeded"
