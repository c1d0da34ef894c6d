"""Test pings to a slow receiver hold no database connection while they wait for it: 40 at
once leave the pool (10 + 20 connections per API process) free for other requests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.helpers import pair_body
from tests.receiver import Answer, Receiver
from tests.stack import Stack

PINGS = 40


@pytest.fixture
def slow_api(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    """An API process of its own that waits up to 30 s for a receiver (the shared stack's
    2 s would end the pings before they are all in flight on a loaded machine)."""
    api = Stack({**stack_env, "TANDEM_WEBHOOK_TIMEOUT_S": "30"}, tmp_path, workers=0)
    api.start()
    yield api
    api.stop()


async def test_forty_pings_to_a_slow_receiver_leave_the_pool_free(slow_api: Stack) -> None:
    release = threading.Event()
    receiver = Receiver().start()
    receiver.default = Answer(hold=release)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    limits = httpx.Limits(max_connections=PINGS + 10)
    try:
        async with httpx.AsyncClient(
            base_url=slow_api.base_url, headers=headers, timeout=90, limits=limits
        ) as client:
            hook = await client.post("/v1/webhooks", json={"url": receiver.url})
            assert hook.status_code == 201, hook.text
            test_url = f"/v1/webhooks/{hook.json()['id']}/test"
            pings = [asyncio.create_task(client.post(test_url)) for _ in range(PINGS)]

            # Every ping reaches the receiver, which holds them all: none waits for a connection.
            for _ in range(600):  # up to a minute, polled
                if len(receiver.received) >= PINGS:
                    break
                await asyncio.sleep(0.1)
            assert len(receiver.received) == PINGS

            # Meanwhile other requests, reads and writes, are answered.
            started = time.monotonic()
            created = await client.post("/v1/clusters", json=pair_body())
            assert created.status_code == 201, created.text
            for path in ("/v1/clusters", "/v1/webhooks", f"/v1/clusters/{created.json()['id']}"):
                response = await client.get(path)
                assert response.status_code == 200, response.text
            assert not any(p.done() for p in pings)  # all answered while the pings were held
            assert time.monotonic() - started < 20

            release.set()
            results = await asyncio.gather(*pings)
            assert [r.status_code for r in results] == [200] * PINGS
            assert all(r.json()["ok"] and r.json()["status_code"] == 200 for r in results)
    finally:
        release.set()
        receiver.stop()
