"""Changes to a webhook endpoint racing its DELETE: a 404 or a win, never a 5xx."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.receiver import Receiver

ROUNDS = 25


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


async def race_delete(client: httpx.AsyncClient, url: str, method: str, path: str) -> None:
    for _ in range(ROUNDS):
        created = await client.post("/v1/webhooks", json={"url": url})
        assert created.status_code == 201, created.text
        endpoint = f"/v1/webhooks/{created.json()['id']}"
        body = {"description": "changed"} if method == "PATCH" else None
        change, delete = await asyncio.gather(
            client.request(method, f"{endpoint}{path}", json=body),
            client.delete(endpoint),
        )
        # The change came first and the delete then removed it, or the delete came first.
        assert change.status_code in (200, 404), change.text
        assert delete.status_code == 204, delete.text
        if change.status_code == 404:
            assert change.json()["code"] == "not_found"
        gone = await client.get(endpoint)
        assert gone.status_code == 404, gone.text


async def test_patch_racing_delete(client: httpx.AsyncClient, receiver: Receiver) -> None:
    await race_delete(client, receiver.url, "PATCH", "")


async def test_rotate_secret_racing_delete(client: httpx.AsyncClient, receiver: Receiver) -> None:
    await race_delete(client, receiver.url, "POST", "/rotate-secret")
