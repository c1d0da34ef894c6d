"""At least once, and how much more: a dispatcher killed in the middle of a lane sends
again at most the batch it had not recorded (app.webhooks.dispatcher.BATCH)."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.coordination import Lease
from app.webhooks.dispatcher import BATCH
from tests.helpers import create_cluster, events, start_ok, wait_done, wait_for
from tests.receiver import Answer, Receiver
from tests.stack import Stack


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


async def test_a_killed_dispatcher_sends_again_at_most_one_batch_per_lane(
    client: httpx.AsyncClient,
    receiver: Receiver,
    live_stack: Stack,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # The first request is held: the lane's later events pile up behind it meanwhile.
    held = threading.Event()
    receiver.script = [Answer(200, hold=held)]
    receiver.default = Answer(200, delay_s=0.05)  # then each answer takes a while
    hook = await client.post("/v1/webhooks", json={"url": receiver.url})
    assert hook.status_code == 201, hook.text
    try:
        pair = await create_cluster(client)
        # Three round trips: about 90 events, all in the lane (endpoint, pair).
        for kind in ("failover", "failback") * 3:
            op = await start_ok(client, pair["id"], kind)
            assert (await wait_done(client, op["id"]))["status"] == "succeeded"
        logged = await events(client, pair["id"])
        assert len(logged) > BATCH
        held.set()

        async def some_arrived() -> bool:
            return len(receiver.bodies_for_cluster(pair["id"])) >= 10

        await wait_for(some_arrived, timeout_s=60)
        async with sessions() as session:
            owner = await session.scalar(
                select(col(Lease.owner)).where(col(Lease.name) == "webhook-dispatcher")
            )
        assert owner is not None
        live_stack.worker_by_pid(int(owner.split(":")[1])).kill(signal.SIGKILL)
        live_stack.ensure_workers()

        async def all_arrived() -> bool:
            seen = {r.headers["webhook-id"] for r in receiver.bodies_for_cluster(pair["id"])}
            return seen >= {e["id"] for e in logged}

        await wait_for(all_arrived, timeout_s=90)
        sent = Counter(r.headers["webhook-id"] for r in receiver.bodies_for_cluster(pair["id"]))
        # The held first request outlived the attempt timeout: its retries are the retry
        # schedule at work, not a resend after the kill.
        sent.pop(receiver.requests()[0].headers["webhook-id"], None)
        again = sum(n - 1 for n in sent.values())
        assert max(sent.values()) <= 2, sent.most_common(3)
        assert again <= BATCH, again
    finally:
        await client.delete(f"/v1/webhooks/{hook.json()['id']}")
