"""Wake-ups across processes, through Redis pub/sub.

Workers publish an operation's id after each commit that changes it, and any commit
that appends events publishes on the events channel (`deliveries` when it made webhook
deliveries too, which is what wakes the dispatcher; `committed` otherwise). Each process keeps one
subscription and sets the matching waiters' asyncio events. Waiters re-read the
database on a timer too, so a lost message only costs latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import defaultdict
from collections.abc import Iterator

from redis.asyncio import Redis

log = logging.getLogger("tandem.notify")

EVENTS = "events"
DELIVERIES = "deliveries"
# What a commit publishes on the events channel.
COMMITTED_MESSAGE = "committed"
DELIVERIES_MESSAGE = "deliveries"


# Channels start with the deployment's Redis prefix (Settings.redis_prefix): pub/sub
# ignores the database number, so that is what keeps deployments apart.
def operation_channel(prefix: str, operation_id: str) -> str:
    return f"{prefix}:operation:{operation_id}"


def events_channel(prefix: str) -> str:
    return f"{prefix}:events"


async def publish(redis: Redis, prefix: str, operation_id: str) -> None:
    await redis.publish(operation_channel(prefix, operation_id), "changed")


class _Announcer:
    """What one process publishes on one channel: while a message is on its way, the
    commits that come meanwhile share the next one (`deliveries` outranks `committed`).
    A worker busy with hundreds of operations commits far more often than Redis needs
    telling, and every process subscribed reads every message."""

    def __init__(self, redis: Redis, channel: str) -> None:
        # Weakly: the map of announcers is keyed by the client and must not keep it alive.
        self._redis = weakref.ref(redis)
        self._channel = channel
        self._next: str | None = None
        self._sending: asyncio.Task[None] | None = None

    def announce(self, message: str) -> None:
        if self._next != DELIVERIES_MESSAGE:
            self._next = message
        if self._sending is None or self._sending.done():
            self._sending = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while self._next is not None:
            message, self._next = self._next, None
            redis = self._redis()
            if redis is None:
                return
            # Readers also poll; a lost wake-up costs latency only.
            with contextlib.suppress(Exception):
                await redis.publish(self._channel, message)


_announcers: weakref.WeakKeyDictionary[Redis, dict[str, _Announcer]] = weakref.WeakKeyDictionary()


def announce(redis: Redis, channel: str, message: str) -> None:
    """Publish `message` on `channel` soon, coalesced with this process's other messages
    to it (see _Announcer). Called after a commit; never waits, never raises."""
    by_channel = _announcers.setdefault(redis, {})
    announcer = by_channel.get(channel)
    if announcer is None:
        announcer = by_channel[channel] = _Announcer(redis, channel)
    announcer.announce(message)


class Notifier:
    """Keys: an operation id, EVENTS for "new events were committed", or DELIVERIES for
    "new webhook deliveries were committed" (set with EVENTS)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._operations = operation_channel(prefix, "")
        self._events = events_channel(prefix)
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

    def _wake(self, key: str) -> None:
        for event in self._waiters.get(key, ()):
            event.set()

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.psubscribe(self._operations + "*")
                await pubsub.subscribe(self._events)
                async for message in pubsub.listen():
                    channel = message.get("channel")
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    if channel == self._events:
                        self._wake(EVENTS)
                        data = message.get("data")
                        if data in (DELIVERIES_MESSAGE, DELIVERIES_MESSAGE.encode()):
                            self._wake(DELIVERIES)
                    elif isinstance(channel, str) and channel.startswith(self._operations):
                        self._wake(channel[len(self._operations) :])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("notifier lost Redis; resubscribing", exc_info=True)
                await asyncio.sleep(1)

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters[key].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[key]


async def wait(event: asyncio.Event, timeout_s: float) -> None:
    """Until `event` is set or `timeout_s` passes; clears it for the next round."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=timeout_s)
    event.clear()
