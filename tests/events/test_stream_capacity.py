"""Event streams and ?wait long polls are capped per token and per API process: past a
cap, 429 with Retry-After; a stream or wait that ends (the client hanging up included)
gives its slot back. An API process of the test's own, with small caps."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import ADMIN_TOKEN
from tests.events.processes import api_process
from tests.helpers import create_cluster, open_gate, start_ok, wait_done, wait_for
from tests.stack import Stack

PER_TOKEN = 2
PER_PROCESS = 3


@pytest_asyncio.fixture
async def capped(live_stack: Stack, tmp_path: Path) -> AsyncIterator[str]:
    with api_process(
        live_stack,
        tmp_path,
        "api-capped",
        TANDEM_STREAMS_PER_TOKEN=str(PER_TOKEN),
        TANDEM_STREAMS_PER_PROCESS=str(PER_PROCESS),
    ) as base_url:
        yield base_url


async def viewer_token(client: httpx.AsyncClient) -> str:
    response = await client.post("/v1/tokens", json={"name": "streams", "role": "viewer"})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def connect(base_url: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url, timeout=90, headers={"Authorization": f"Bearer {token}"}
    )


async def open_stream(client: httpx.AsyncClient) -> httpx.Response:
    request = client.build_request("GET", "/v1/events/stream")
    return await client.send(request, stream=True)


def assert_too_many(response: httpx.Response, body: bytes) -> None:
    assert response.status_code == 429, body
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["Retry-After"]) >= 1
    problem = json.loads(body)
    assert problem["status"] == 429 and problem["code"] == "too_many_streams", problem


async def refused_stream(client: httpx.AsyncClient) -> None:
    response = await open_stream(client)
    body = await response.aread()
    await response.aclose()
    assert_too_many(response, body)


async def test_streams_past_either_cap_get_429_and_a_closed_stream_gives_its_slot_back(
    client: httpx.AsyncClient, capped: str
) -> None:
    other = await viewer_token(client)
    async with connect(capped, ADMIN_TOKEN) as admin, connect(capped, other) as viewer:
        first = await open_stream(admin)
        second = await open_stream(admin)
        assert first.status_code == second.status_code == 200
        # Per token: the admin token holds its two.
        await refused_stream(admin)
        # Another token may still open one: the process holds three then.
        third = await open_stream(viewer)
        assert third.status_code == 200
        # Per process: the viewer token holds one of its two, but the process is full.
        await refused_stream(viewer)

        await first.aclose()  # hang up: the slot comes back once the server sees it

        async def reopened() -> httpx.Response | None:
            response = await open_stream(viewer)
            if response.status_code == 200:
                return response
            assert_too_many(response, await response.aread())
            await response.aclose()
            return None

        fourth = await wait_for(reopened, timeout_s=30, interval_s=0.2)
        await refused_stream(admin)  # full again
        for response in (second, third, fourth):
            await response.aclose()

        # All given back: the admin token has its two again.
        async def admin_reopens() -> bool:
            response = await open_stream(admin)
            await response.aclose()
            return response.status_code == 200

        await wait_for(admin_reopens, timeout_s=30, interval_s=0.2)


async def test_long_polls_share_the_caps_and_a_hung_up_one_gives_its_slot_back(
    client: httpx.AsyncClient, capped: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # drain_replication waits for its gate: the operation stays unfinished meanwhile.
    cluster = await create_cluster(client, gate=["drain_replication"])
    op = await start_ok(client, cluster["id"])
    path = f"/v1/operations/{op['id']}"
    async with connect(capped, ADMIN_TOKEN) as admin:
        # Not waiting takes no slot.
        for _ in range(PER_TOKEN + 1):
            assert (await admin.get(path)).status_code == 200

        def poll() -> asyncio.Task[httpx.Response]:
            return asyncio.create_task(admin.get(path, params={"wait": 60}))

        polls = [poll(), poll()]

        async def full() -> bool:
            # A poll that lost the race for a slot to the previous probe is sent again.
            for i, pending in enumerate(polls):
                if pending.done():
                    lost = pending.result()
                    assert_too_many(lost, lost.content)
                    polls[i] = poll()
            response = await admin.get(path, params={"wait": 1})
            if response.status_code == 200:  # the polls were not both waiting yet
                return False
            assert_too_many(response, response.content)
            return True

        await wait_for(full, timeout_s=30, interval_s=0.2)
        # A stream counts against the same cap.
        await refused_stream(admin)

        polls[0].cancel()  # the client hangs up on one long poll
        await asyncio.gather(polls[0], return_exceptions=True)

        async def waits_again() -> bool:
            response = await admin.get(path, params={"wait": 1})
            if response.status_code == 429:
                return False
            assert response.status_code == 200, response.text
            return True

        await wait_for(waits_again, timeout_s=30, interval_s=0.2)

        await open_gate(sessions, cluster["id"], "drain_replication")
        # The remaining poll is answered when the operation is done, not when its wait ends.
        done = await polls[1]
        assert done.status_code == 200, done.text
        assert done.json()["done"] is True
    assert (await wait_done(client, op["id"]))["status"] == "succeeded"
