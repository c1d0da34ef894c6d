"""Per-token rate limit on mutating requests."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from app.access import ratelimit
from app.errors import TooManyRequests

if TYPE_CHECKING:
    from app.access.auth import Principal

log = logging.getLogger("tandem.limits")


async def check_rate(redis: Redis, default_per_minute: int, principal: Principal) -> None:
    """Raise TooManyRequests past the token's limit. When Redis cannot be reached the
    request goes through: a limiter outage must not stop a failover at 3 a.m."""
    limit = principal.rate_limit_per_minute or default_per_minute
    try:
        retry_after = await ratelimit.hit(redis, f"tandem:rate:{principal.token_id}", limit, 60)
    except Exception as exc:  # redis.RedisError, OSError: fail open, and say so
        log.warning("rate limit not checked (Redis unreachable: %s)", type(exc).__name__)
        return
    if retry_after is not None:
        raise TooManyRequests(
            f"more than {limit} changes a minute with this token; retry later",
            retry_after=retry_after,
        )
