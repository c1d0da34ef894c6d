"""A worker rides out a Redis outage and says so on its health port. Real processes, a real
Redis, and a TCP proxy the test owns between the worker and Redis."""

from __future__ import annotations

import asyncio
import signal
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.backends import backends
from tests.conftest import ADMIN_TOKEN, BACKEND
from tests.helpers import (
    create_cluster,
    effects_of,
    open_gate,
    start_ok,
    step_status,
    wait_done,
    wait_for,
)
from tests.proxy import Proxy
from tests.stack import Stack, free_port

_FIRST_BACKEND = backends()[0]
pytestmark = pytest.mark.skipif(
    _FIRST_BACKEND != BACKEND,
    reason=f"independent of the database backend; runs in the {_FIRST_BACKEND} pass only",
)


async def readyz(port: int) -> int:
    try:
        async with httpx.AsyncClient(timeout=3) as client:
            return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.parametrize("outage_s", [1, 30])
async def test_a_worker_rides_out_a_redis_outage(
    client: httpx.AsyncClient,
    live_stack: Stack,
    sessions: async_sessionmaker[AsyncSession],
    redis_url: str,
    outage_s: int,
) -> None:
    url = urlsplit(redis_url)
    proxy = await Proxy(url.hostname or "127.0.0.1", url.port or 6379).start()
    health = free_port()
    for worker in live_stack.live_workers():
        worker.kill(signal.SIGTERM)
    worker = live_stack.start_worker(
        TANDEM_REDIS_URL=urlunsplit(url._replace(netloc=f"127.0.0.1:{proxy.port}")),
        TANDEM_WORKER_HEALTH_PORT=str(health),
    )
    try:

        async def ready() -> bool:
            return await readyz(health) == 200

        await wait_for(ready, timeout_s=60)
        # The failover applies drain_replication's effect, then waits in the call.
        cluster = await create_cluster(client, hold=["drain_replication"])
        op = await start_ok(client, cluster["id"])

        async def draining() -> bool:
            return any(e.step == "drain_replication" for e in await effects_of(sessions, op["id"]))

        await wait_for(draining, timeout_s=60)
        await proxy.cut()

        async def not_ready() -> bool:
            return await readyz(health) == 503

        await wait_for(not_ready, timeout_s=30)
        await asyncio.sleep(outage_s)
        assert worker.alive(), worker.tail()
        await proxy.restore()
        await wait_for(ready, timeout_s=60)

        await open_gate(sessions, cluster["id"], "drain_replication")
        done = await wait_done(client, op["id"], timeout_s=60)
        assert done["status"] == "succeeded", done
        # The same process did it all: it is the only worker, and it is still alive.
        assert worker.alive() and live_stack.live_workers() == [worker]
        # And it takes new work after the outage.
        after = await start_ok(client, (await create_cluster(client))["id"])
        assert (await wait_done(client, after["id"], timeout_s=60))["status"] == "succeeded"
        assert await step_status(client, after["id"], "resume_schedulers") == "succeeded"
    finally:
        worker.kill(signal.SIGTERM)
        await proxy.stop()


async def test_a_worker_serves_its_health_port(live_stack: Stack) -> None:
    health = free_port()
    worker = live_stack.start_worker(TANDEM_WORKER_HEALTH_PORT=str(health))
    try:

        async def ready() -> bool:
            return await readyz(health) == 200

        await wait_for(ready, timeout_s=60)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{health}") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            body = (await client.get("/readyz")).json()
            assert body["worker"] == "ok" and body["database"] == body["redis"] == "ok"
            # Its own metrics, as on the API: with a token (tests/metrics has the rest).
            assert (await client.get("/metrics")).status_code == 401
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            metrics = await client.get("/metrics", headers=auth)
            assert metrics.status_code == 200
            assert "process_cpu_seconds_total" in metrics.text
            assert "# TYPE tandem_step_duration_seconds histogram" in metrics.text
    finally:
        worker.kill(signal.SIGTERM)
