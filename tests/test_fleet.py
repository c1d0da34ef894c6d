"""Many processes on one PostgreSQL and Redis (DESIGN.md section 13): three API processes
and three workers, as a platform team runs Tandem. A fleet of its own (its own database,
its own Redis names), in the PostgreSQL pass only: many processes on one SQLite file is not
a way Tandem is run."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.coordination import Lease
from app.db import create_engine, session_factory
from app.domain.plans import STEP_NAMES
from tests.conftest import (
    ADMIN_TOKEN,
    BACKEND,
    RUN_ID,
    SHARED_REDIS,
    claim_redis_database,
    create_pg_database,
    drop_pg_database,
    migrate,
    release_redis_database,
)
from tests.helpers import open_gate, pair_body, wait_done, wait_for
from tests.operations.test_recovery import applied_per_step, lease_owner
from tests.receiver import Receiver
from tests.stack import TANDEM, Process, Stack, free_port

pytestmark = pytest.mark.skipif(
    BACKEND != "postgresql", reason="many processes on one database: the PostgreSQL pass only"
)
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Fleet:
    def __init__(self, stack: Stack, apis: list[Process], urls: list[str], database_url: str):
        self.stack = stack
        self.apis = apis
        self.urls = urls
        self.database_url = database_url


def _ready(url: str, process: Process) -> None:
    for _ in range(900):
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.alive(), process.tail()
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready:\n{process.tail()}")


@pytest.fixture(scope="module")
def fleet(stack_env: dict[str, str], tmp_root: Path) -> Iterator[Fleet]:
    name, database_url = create_pg_database()
    migrate(database_url)
    log_dir = tmp_root / f"fleet-{secrets.token_hex(2)}"
    log_dir.mkdir()
    # A Redis database of its own too: nothing of the fleet's is left where others look.
    claims = redis.Redis.from_url(f"{SHARED_REDIS}/0")
    run = f"{RUN_ID}:fleet"
    number = claim_redis_database(claims, run)
    redis_url = f"{SHARED_REDIS}/{number}"
    env = {
        **stack_env,
        "TANDEM_DATABASE_URL": database_url,
        "TANDEM_REDIS_URL": redis_url,
        "TANDEM_REDIS_PREFIX": f"tandem-fleet-{secrets.token_hex(4)}",
    }
    stack = Stack(env, log_dir, workers=3)
    apis: list[Process] = []
    try:
        stack.start()
        assert stack.api is not None
        urls = [stack.base_url]
        apis.append(stack.api)
        for n in range(2):
            port = free_port()
            api = Process(
                f"api-{n + 2}",
                [*TANDEM, "serve", "--no-worker", "--no-migrate", "--port", str(port)],
                stack.env,
                log_dir,
            )
            apis.append(api)
            urls.append(f"http://127.0.0.1:{port}")
        for url, api in zip(urls, apis, strict=True):
            _ready(url, api)
        yield Fleet(stack, apis, urls, database_url)
    finally:
        for api in apis[1:]:
            api.kill(signal.SIGTERM)
        stack.stop()
        drop_pg_database(name)
        mine = redis.Redis.from_url(redis_url)
        mine.flushdb()
        mine.close()
        release_redis_database(claims, number, run)
        claims.close()


@pytest_asyncio.fixture
async def clients(fleet: Fleet) -> AsyncIterator[list[httpx.AsyncClient]]:
    fleet.stack.ensure_workers()
    made = [
        httpx.AsyncClient(
            base_url=url, headers=AUTH, timeout=90, limits=httpx.Limits(max_connections=100)
        )
        for url in fleet.urls
    ]
    yield made
    for client in made:
        await client.aclose()


@pytest_asyncio.fixture
async def fleet_sessions(fleet: Fleet) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(fleet.database_url, pool_size=2)
    yield session_factory(engine)
    await engine.dispose()


async def new_pair(client: httpx.AsyncClient, **driver: Any) -> dict[str, Any]:
    response = await client.post("/v1/clusters", json=pair_body(**driver))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_fifty_concurrent_failovers_over_three_apis_start_one(
    clients: list[httpx.AsyncClient],
) -> None:
    pair = await new_pair(clients[0])

    async def failover(n: int) -> tuple[httpx.Response, int]:
        """As a client does: a 503 (no database connection came free in time, which a
        loaded machine may give) is asked again with the same key after its Retry-After."""
        key, busy = uuid.uuid4().hex, 0
        while True:
            answer = await clients[n % 3].post(
                f"/v1/clusters/{pair['id']}/failover",
                json={},
                headers={"Idempotency-Key": key},
            )
            if answer.status_code != 503 or busy == 5:
                return answer, busy
            busy += 1
            await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))

    tries = await asyncio.gather(*(failover(n) for n in range(50)))
    answers = [answer for answer, _ in tries]
    codes = Counter(a.status_code for a in answers)
    assert codes == Counter({202: 1, 409: 49}), (codes, sum(busy for _, busy in tries))
    [accepted] = [a for a in answers if a.status_code == 202]
    done = await wait_done(clients[1], accepted.json()["id"])
    assert done["status"] == "succeeded"
    listed = await clients[2].get("/v1/operations", params={"cluster_id": pair["id"]})
    assert len(listed.json()["items"]) == 1


async def test_a_worker_sigkilled_mid_step_among_three_finishes_the_operation_once(
    fleet: Fleet,
    clients: list[httpx.AsyncClient],
    fleet_sessions: async_sessionmaker[AsyncSession],
) -> None:
    pair = await new_pair(clients[0], hold=["drain_replication"])
    started = await clients[1].post(
        f"/v1/clusters/{pair['id']}/failover", json={}, headers={"Idempotency-Key": "k"}
    )
    op_id = started.json()["id"]

    async def held() -> bool:
        return (await applied_per_step(fleet_sessions, op_id))["drain_replication"] == 1

    await wait_for(held, timeout_s=60)
    owner = await lease_owner(fleet_sessions, op_id)
    assert owner is not None
    fleet.stack.worker_by_pid(int(owner.split(":")[1])).kill(signal.SIGKILL)
    await open_gate(fleet_sessions, pair["id"], "drain_replication")
    done = await wait_done(clients[2], op_id, timeout_s=90)
    assert done["status"] == "succeeded", done
    assert await applied_per_step(fleet_sessions, op_id) == Counter(STEP_NAMES)
    assert {s["name"]: s["attempts"] for s in done["steps"]}["drain_replication"] == 1


async def test_an_event_through_one_api_reaches_a_stream_on_another(
    clients: list[httpx.AsyncClient],
) -> None:
    pair = await new_pair(clients[0])
    seen: list[dict[str, Any]] = []
    open_ = asyncio.Event()

    async def follow() -> None:
        async with clients[2].stream(
            "GET", "/v1/events/stream", params={"cluster_id": pair["id"]}
        ) as stream:
            async for line in stream.aiter_lines():
                open_.set()
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if seen[-1]["type"] == "operation.created":
                        return

    reader = asyncio.ensure_future(follow())
    await asyncio.wait_for(open_.wait(), 30)
    started = await clients[1].post(
        f"/v1/clusters/{pair['id']}/failover", json={}, headers={"Idempotency-Key": "e"}
    )
    await asyncio.wait_for(reader, 30)
    assert seen[-1]["data"]["operation_id"] == started.json()["id"]
    await wait_done(clients[0], started.json()["id"])


async def test_the_webhook_dispatcher_moves_when_its_holder_dies(
    fleet: Fleet,
    clients: list[httpx.AsyncClient],
    fleet_sessions: async_sessionmaker[AsyncSession],
) -> None:
    receiver = Receiver().start()
    try:
        endpoint = await clients[0].post(
            "/v1/webhooks", json={"url": receiver.url, "event_types": ["operation.created"]}
        )
        assert endpoint.status_code == 201, endpoint.text

        async def holder() -> str | None:
            async with fleet_sessions() as session:
                return await session.scalar(
                    select(col(Lease.owner)).where(col(Lease.name) == "webhook-dispatcher")
                )

        first = await wait_for(holder, timeout_s=30)
        fleet.stack.worker_by_pid(int(first.split(":")[1])).kill(signal.SIGKILL)

        async def moved() -> str | None:
            now = await holder()
            return now if now is not None and now != first else None

        second = await wait_for(moved, timeout_s=60)
        assert second.split(":")[1] != first.split(":")[1]
        pair = await new_pair(clients[1])
        started = await clients[2].post(
            f"/v1/clusters/{pair['id']}/failover", json={}, headers={"Idempotency-Key": "w"}
        )

        async def delivered() -> bool:
            return any(
                json.loads(r.body)["data"]["operation_id"] == started.json()["id"]
                for r in receiver.requests()
            )

        await wait_for(delivered, timeout_s=60)
        await wait_done(clients[0], started.json()["id"])
    finally:
        receiver.stop()
