"""SIGTERM to an API process (DESIGN.md section 13): it stops accepting, answers its long
polls and ends its event streams politely, and exits within the grace period. The API is a
real `tandem serve` process of its own beside the test stack's."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import ADMIN_TOKEN
from tests.helpers import create_cluster, open_gate, start_ok, wait_done, wait_for
from tests.operations.test_recovery import applied_per_step
from tests.stack import TANDEM, Process, Stack, free_port

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def second_api(stack_env: dict[str, str], tmp_root: Path) -> Iterator[tuple[Process, str]]:
    port = free_port()
    env = {**stack_env, "TANDEM_SHUTDOWN_GRACE_S": "20"}
    api = Process(
        f"api-{port}",
        [*TANDEM, "serve", "--port", str(port), "--no-worker", "--no-migrate"],
        env,
        tmp_root / "logs",
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base_url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert api.alive(), api.tail()
            time.sleep(0.1)
        yield api, base_url
    finally:
        api.kill(signal.SIGKILL)


async def test_sigterm_answers_long_polls_ends_streams_and_exits(
    client: httpx.AsyncClient,
    live_stack: Stack,
    sessions: async_sessionmaker[AsyncSession],
    second_api: tuple[Process, str],
) -> None:
    api, base_url = second_api
    cluster = await create_cluster(client, hold=["drain_replication"])
    op = await start_ok(client, cluster["id"])

    async def held() -> bool:
        return (await applied_per_step(sessions, op["id"]))["drain_replication"] == 1

    await wait_for(held, timeout_s=60)
    frames: list[str] = []
    streaming = asyncio.Event()

    async with httpx.AsyncClient(base_url=base_url, headers=AUTH, timeout=90) as other:

        async def follow() -> None:
            async with other.stream(
                "GET", "/v1/events/stream", params={"cluster_id": cluster["id"]}
            ) as stream:
                assert stream.status_code == 200
                async for text in stream.aiter_text():
                    frames.append(text)
                    streaming.set()

        stream_task = asyncio.ensure_future(follow())
        poll_task = asyncio.ensure_future(
            other.get(f"/v1/operations/{op['id']}", params={"wait": 60})
        )
        await asyncio.wait_for(streaming.wait(), 30)
        await asyncio.sleep(0.5)  # the long poll is waiting by now
        assert not poll_task.done()

        api.popen.send_signal(signal.SIGTERM)
        # The long poll is answered with the operation as it is (held: not done).
        polled = await asyncio.wait_for(poll_task, 30)
        assert polled.status_code == 200
        assert polled.json()["done"] is False
        # The stream ends cleanly (no error): its client would resume elsewhere.
        await asyncio.wait_for(stream_task, 30)
        assert frames[0].startswith("retry:")

    # And the process exits, as SIGTERM ends a process, within the grace period.
    returncode = await asyncio.to_thread(api.popen.wait, 30)
    assert returncode == -signal.SIGTERM, api.tail()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as after:
            await after.get(base_url + "/healthz", timeout=2)

    await open_gate(sessions, cluster["id"], "drain_replication")
    assert (await wait_done(client, op["id"]))["status"] == "succeeded"
