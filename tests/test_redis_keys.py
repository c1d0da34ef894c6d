"""Redis is shared: each deployment (and each test run) keeps to its own keys and channels."""

from __future__ import annotations

import asyncio
import secrets

import httpx
import pytest
import redis
from redis.asyncio import Redis

from app.config import Settings
from app.events.notify import Notifier, events_channel, publish
from tests.backends import reachable
from tests.conftest import (
    RUN_ID,
    SHARED_REDIS,
    claim_redis_database,
    release_redis_database,
)
from tests.helpers import create_cluster, start_ok, wait_done, wait_for


def test_the_queue_is_named_after_the_prefix() -> None:
    assert Settings(redis_prefix="blue").queue_name == "blue:queue"
    assert Settings(redis_prefix="blue", queue_name="jobs").queue_name == "jobs"
    assert Settings().queue_name == "tandem:queue"
    with pytest.raises(ValueError, match="redis_prefix"):
        Settings(redis_prefix="blue*")  # it goes into a PSUBSCRIBE pattern


@pytest.mark.skipif(not reachable("127.0.0.1", 6379), reason="needs the shared Redis on 6379")
def test_two_runs_never_share_a_redis_database(redis_url: str) -> None:
    claims = redis.Redis.from_url(f"{SHARED_REDIS}/0")
    other_run = f"other:{secrets.token_hex(4)}"
    theirs = claim_redis_database(claims, other_run)
    try:
        ours = int(redis_url.rsplit("/", 1)[1])
        assert theirs != ours
        assert claims.get(f"tandem:test-db:{ours}") == RUN_ID.encode()
        assert 0 < claims.ttl(f"tandem:test-db:{ours}") <= 2 * 3600
        # Releasing only deletes a claim that is still the releasing run's.
        release_redis_database(claims, theirs)  # this run's id: not its claim
        assert claims.get(f"tandem:test-db:{theirs}") == other_run.encode()
    finally:
        release_redis_database(claims, theirs, other_run)
        assert claims.get(f"tandem:test-db:{theirs}") is None
        claims.close()


async def test_pubsub_channels_carry_the_prefix(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    blue, green = (f"{colour}-{secrets.token_hex(4)}" for colour in ("blue", "green"))
    notifier = Notifier(client, blue)
    notifier.start()
    try:
        with notifier.watch("op_1") as changed:

            async def subscribed() -> bool:
                # The events channel is subscribed to after the operations pattern.
                return bool((await client.pubsub_numsub(events_channel(blue)))[0][1])

            await wait_for(subscribed, timeout_s=10)
            await publish(client, green, "op_1")  # another deployment's operation
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=1)
            await publish(client, blue, "op_1")
            await asyncio.wait_for(changed.wait(), timeout=5)
    finally:
        await notifier.stop()
        await client.aclose()


async def test_every_key_tandem_makes_carries_the_prefix(
    client: httpx.AsyncClient, stack_env: dict[str, str], redis_url: str
) -> None:
    prefix = stack_env["TANDEM_REDIS_PREFIX"]
    cluster = await create_cluster(client)
    op = await start_ok(client, cluster["id"])
    assert (await wait_done(client, op["id"]))["status"] == "succeeded"
    raw = Redis.from_url(redis_url)
    try:
        keys = [key.decode() async for key in raw.scan_iter(count=1000)]
    finally:
        await raw.aclose()
    assert any(key.startswith(f"{prefix}:rate:") for key in keys), keys
    # arq names its own job keys (arq:job:..., arq:in-progress:...): no prefix to give them.
    strays = [key for key in keys if not key.startswith((f"{prefix}:", "arq:"))]
    assert strays == []
