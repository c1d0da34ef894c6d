"""Wake `GET /v1/operations/{op}?wait=N` callers when their operation changes.

Workers publish the operation id on a Redis channel after each commit; each API process
keeps one pattern subscription and sets the matching waiters' events. Waiters also
re-read the database every second, so a lost message only costs latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from redis.asyncio import Redis

log = logging.getLogger("tandem.notify")

CHANNEL_PREFIX = "tandem:operation:"


async def publish(redis: Redis, operation_id: str) -> None:
    await redis.publish(CHANNEL_PREFIX + operation_id, "changed")


class OperationWatcher:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                async for message in pubsub.listen():
                    channel = message.get("channel")
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    if isinstance(channel, str):
                        for event in self._waiters.get(channel[len(CHANNEL_PREFIX) :], ()):
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("operation watcher lost Redis; retrying", exc_info=True)
                await asyncio.sleep(1)

    @contextlib.contextmanager
    def watch(self, operation_id: str):  # type: ignore[no-untyped-def]
        event = asyncio.Event()
        self._waiters[operation_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(operation_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[operation_id]
