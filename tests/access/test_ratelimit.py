"""app.access.ratelimit.hit against a real Redis, and the Retry-After its refusal becomes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from app.access.ratelimit import hit
from app.errors import TooManyRequests


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test:ratelimit:{uuid.uuid4().hex}:"


async def test_the_first_limit_calls_are_allowed_then_refused(
    redis_client: Redis, prefix: str
) -> None:
    key, limit, window = prefix + "a", 5, 60
    for _ in range(limit):
        assert await hit(redis_client, key, limit, window) is None
    for _ in range(2):  # refused, and still refused
        retry_after = await hit(redis_client, key, limit, window)
        assert retry_after is not None
        assert 0 < retry_after <= window


async def test_different_keys_are_independent(redis_client: Redis, prefix: str) -> None:
    limit, window = 2, 60
    for _ in range(limit):
        assert await hit(redis_client, prefix + "a", limit, window) is None
    assert await hit(redis_client, prefix + "a", limit, window) is not None
    for _ in range(limit):
        assert await hit(redis_client, prefix + "b", limit, window) is None
    assert await hit(redis_client, prefix + "b", limit, window) is not None


async def test_the_counter_always_expires_within_the_window(
    redis_client: Redis, prefix: str
) -> None:
    key, window = prefix + "a", 30
    await hit(redis_client, key, 10, window)
    assert 0 < await redis_client.pttl(key) <= window * 1000
    # A counter that lost its expiry (say, written by hand) gets one back on the next hit.
    await redis_client.persist(key)
    await hit(redis_client, key, 10, window)
    assert 0 < await redis_client.pttl(key) <= window * 1000


async def test_limit_and_window_must_be_positive(redis_client: Redis, prefix: str) -> None:
    with pytest.raises(ValueError):
        await hit(redis_client, prefix + "a", 0, 60)
    with pytest.raises(ValueError):
        await hit(redis_client, prefix + "a", 10, 0)


@pytest.mark.parametrize(
    ("retry_after", "header"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.2, "2"), (59.9, "60")]
)
def test_too_many_requests_sends_whole_seconds_of_at_least_one(
    retry_after: float, header: str
) -> None:
    problem = TooManyRequests("slow down", retry_after=retry_after)
    assert problem.status == 429
    assert problem.body()["code"] == "rate_limited"
    assert problem.response_headers() == {"Retry-After": header}


async def test_an_unreachable_redis_lets_the_request_through() -> None:
    """The limiter fails open: a real client against a port where nothing listens."""
    from redis.asyncio import Redis

    from app.access.auth import Principal, Role
    from app.access.limits import check_rate
    from tests.stack import free_port

    principal = Principal(org_id="org_x", token_id="tok_x", token_name="x", role=Role.ADMIN)
    down = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    try:
        await check_rate(down, 1, principal)  # would be refused at once if it counted
        await check_rate(down, 1, principal)
    finally:
        await down.aclose()
