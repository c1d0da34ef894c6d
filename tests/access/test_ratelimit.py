"""app.access.ratelimit against a real Redis: the counter, the Retry-After its refusal
becomes, and the limit that lets requests through when Redis is down."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from app.access.ratelimit import check_token, hit
from app.errors import TooManyRequests
from tests.stack import free_port


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


async def test_a_token_past_its_limit_is_refused_with_retry_after(
    redis_client: Redis, prefix: str
) -> None:
    await check_token(redis_client, prefix, "tok", 1)
    with pytest.raises(TooManyRequests) as refused:
        await check_token(redis_client, prefix, "tok", 1)
    assert 0 < refused.value.retry_after <= 60
    assert "more than 1 changes a minute" in refused.value.detail
    # The counter is named after the prefix and the token.
    assert 0 < await redis_client.pttl(f"{prefix}:rate:tok") <= 60_000
    await redis_client.delete(f"{prefix}:rate:tok")


async def test_an_unreachable_redis_lets_the_request_through() -> None:
    """The limiter fails open: a real client against a port where nothing listens."""
    down = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    try:
        await check_token(down, "tandem", "tok_x", 1)  # would be refused at once if it counted
        await check_token(down, "tandem", "tok_x", 1)
    finally:
        await down.aclose()
