"""One reader of new events per API process, fanning them out to every live stream.

A database read per stream per second starved the connection pool once streams ran
into the thousands. Instead one task per process reads what was committed after the
highest position it has seen — when the Notifier says events were committed, or every
POLL_S in case a wake-up was lost — renders each event once, and puts it on the queue
of every subscription of its organization (and pair, if the stream asked for one).

Positions (global, and per organization) are handed out under row locks in commit
order, so nothing is ever committed behind the highest position read, and within an
organization both orders agree. A subscription whose queue is full has fallen too far
behind: it is closed, and its client resumes from the Last-Event-ID it last got.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.db import finish_even_if_cancelled, unit_of_work
from app.events import service
from app.events.models import Event
from app.events.notify import EVENTS, Notifier, wait

log = logging.getLogger("tandem.events")

POLL_S = 1.0
BATCH = 500
# Frames a stream may lag behind before it is closed (its client resumes).
QUEUE_SIZE = 2000


@dataclass(frozen=True)
class Frame:
    position: int  # global: how far the reader got
    cursor: int  # the organization's position: the stream's `id:`
    cluster_id: str | None
    text: str


def sse_frame(event: Event) -> Frame:
    body = json.dumps(service.render(event).model_dump(mode="json"))
    return Frame(
        position=event.position,
        cursor=event.org_position,
        cluster_id=event.cluster_id,
        text=f"id: {event.org_position}\nevent: {event.type}\ndata: {body}\n\n",
    )


class Subscription:
    """A stream's inbox. `closed`: no more frames will come (after those queued)."""

    def __init__(self, org_id: str, cluster_id: str | None, size: int) -> None:
        self.org_id = org_id
        self.cluster_id = cluster_id
        self.queue: asyncio.Queue[Frame | None] = asyncio.Queue(maxsize=size)
        self.closed = False
        self.overflowed = False

    def offer(self, frame: Frame) -> None:
        if self.closed or (self.cluster_id is not None and frame.cluster_id != self.cluster_id):
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            # The consumer is not blocked on an empty queue: it drains it, then sees `closed`.
            self.closed = self.overflowed = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)


class EventHub:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        notifier: Notifier,
        *,
        poll_s: float = POLL_S,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._sessions = sessions
        self._notifier = notifier
        self._poll_s = poll_s
        self._queue_size = queue_size
        self._by_org: dict[str, set[Subscription]] = defaultdict(set)
        self._position = 0
        # When the position was last brought up to date with nobody listening.
        self._kept_up_at = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self.draining = False

    @property
    def position(self) -> int:
        """The highest position handed to subscriptions (or known, while none are open)."""
        return self._position

    @property
    def subscriptions(self) -> int:
        return sum(len(subs) for subs in self._by_org.values())

    async def start(self) -> None:
        if self._task is None:
            self._position = await self._latest()
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for subs in self._by_org.values():
            for sub in subs:
                sub.close()

    def drain(self) -> None:
        """The process is shutting down: every stream ends once it has sent what it has
        queued (its client resumes elsewhere with Last-Event-ID), and a new one at once."""
        self.draining = True
        for subs in self._by_org.values():
            for sub in subs:
                sub.close()

    @contextlib.contextmanager
    def subscribe(self, org_id: str, cluster_id: str | None) -> Iterator[tuple[Subscription, int]]:
        """A subscription, and the global position after which it gets every event it wants."""
        sub = Subscription(org_id, cluster_id, self._queue_size)
        if self.draining:
            sub.close()
        self._by_org[org_id].add(sub)
        try:
            yield sub, self._position
        finally:
            subs = self._by_org.get(org_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_org[org_id]

    async def _run(self) -> None:
        with self._notifier.watch(EVENTS) as committed:
            while True:
                try:
                    await self._read_new()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("event hub: reading new events failed; retrying", exc_info=True)
                await wait(committed, self._poll_s)

    async def _read_new(self) -> None:
        if not self._by_org:
            # Nobody listens: keep up with the log, once per POLL_S and not on every
            # commit (a worker busy with a batch commits hundreds of times a second). A
            # stream that subscribes meanwhile starts at a position up to that old: the
            # hub then reads from there and the stream drops what it already has.
            # Checked again after the read (a stream may subscribe during it).
            now = asyncio.get_running_loop().time()
            if now - self._kept_up_at < self._poll_s:
                return
            latest = await finish_even_if_cancelled(self._latest())
            if not self._by_org:
                self._position = max(self._position, latest)
                self._kept_up_at = now
                return
        while True:
            batch = await finish_even_if_cancelled(self._after(self._position))
            for event in batch:
                frame = sse_frame(event)
                self._position = event.position
                for sub in tuple(self._by_org.get(event.org_id, ())):
                    sub.offer(frame)
            if len(batch) < BATCH:
                return

    async def _latest(self) -> int:
        async with unit_of_work(self._sessions) as session:
            return await service.latest_position(session)

    async def _after(self, position: int) -> list[Event]:
        async with unit_of_work(self._sessions) as session:
            query = (
                select(Event)
                .where(col(Event.position) > position)
                .order_by(col(Event.position))
                .limit(BATCH)
            )
            return list(await session.scalars(query))
