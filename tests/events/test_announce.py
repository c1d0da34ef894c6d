"""Commit announcements (`app.events.notify.announce`) on a real Redis: what is announced
while a message is on its way shares the next one, `deliveries` outranks `committed`, and
an announcement after a quiet spell is sent again."""

from __future__ import annotations

import asyncio
import secrets
import time

from redis.asyncio import Redis

from app.events.notify import COMMITTED_MESSAGE, DELIVERIES_MESSAGE, announce


async def _received(listener: Redis, channel: str, action: object) -> list[str]:
    """The messages on `channel` after `action()` runs, until none came for half a second."""
    pubsub = listener.pubsub()
    await pubsub.subscribe(channel)
    # The subscription is live once Redis has confirmed it.
    confirmed = None
    while confirmed is None or confirmed["type"] != "subscribe":
        confirmed = await pubsub.get_message(timeout=1.0)
    action()  # type: ignore[operator]
    messages: list[str] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 0.5:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            messages.append(message["data"].decode())
            quiet_since = time.monotonic()
    await pubsub.aclose()
    return messages


async def test_announcements_meanwhile_share_one_message_and_deliveries_outranks(
    redis_url: str,
) -> None:
    channel = f"tandem-test-{secrets.token_hex(4)}:events"
    sender, listener = Redis.from_url(redis_url), Redis.from_url(redis_url)
    try:

        def burst() -> None:
            # No await in between: the first starts a send, the rest come while it waits.
            for _ in range(50):
                announce(sender, channel, COMMITTED_MESSAGE)
            announce(sender, channel, DELIVERIES_MESSAGE)
            announce(sender, channel, COMMITTED_MESSAGE)

        assert await _received(listener, channel, burst) == [DELIVERIES_MESSAGE]

        # Quiet again: the next announcement goes out on its own.
        later = await _received(
            listener, channel, lambda: announce(sender, channel, COMMITTED_MESSAGE)
        )
        assert later == [COMMITTED_MESSAGE]
    finally:
        await sender.aclose()
        await listener.aclose()
        await asyncio.sleep(0)
