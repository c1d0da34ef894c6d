"""The shared context: built once at start-up, handed to requests and jobs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import outbound
from app.config import Settings
from app.db import create_engine, session_factory
from app.events.capacity import StreamSlots
from app.events.hub import EventHub
from app.events.notify import Notifier, events_channel
from app.queue import enqueue_run
from app.secrets import crypto
from app.secrets.service import SecretStore


@dataclass(frozen=True)
class Context:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    notifier: Notifier
    http: httpx.AsyncClient
    # API processes start the hub (app.main); its live streams read through it.
    hub: EventHub
    slots: StreamSlots
    # Pair secrets for actions (the SecretResolver of app.actions.base) and readiness.
    secrets: SecretStore
    # The same keys, for the web page's sessions (the token each one acts with).
    cipher: crypto.MultiFernet
    # Set when the process begins to shut down (SIGTERM): long polls answer at once and
    # event streams end, so that the requests in flight finish within the grace period.
    draining: asyncio.Event = field(default_factory=asyncio.Event)

    def begin_drain(self) -> None:
        self.draining.set()
        self.hub.drain()

    async def enqueue(
        self, operation_id: str, lease_epoch: int, at: datetime | None = None
    ) -> None:
        await enqueue_run(self.redis, self.settings.queue_name, operation_id, lease_epoch, at)

    async def close(self) -> None:
        await self.hub.stop()
        await self.notifier.stop()
        await self.http.aclose()
        await self.redis.aclose()
        await self.engine.dispose()


def redis_settings(settings: Settings) -> RedisSettings:
    if not settings.redis_url:
        raise RuntimeError("TANDEM_REDIS_URL is not set and no embedded Redis was started")
    return RedisSettings.from_dsn(settings.redis_url)


async def build_context(settings: Settings) -> Context:
    # First: a key that cannot be read stops the start before anything is opened.
    keys = crypto.cipher(settings)
    engine = create_engine(settings.resolved_database_url())
    redis = await create_pool(redis_settings(settings), default_queue_name=settings.queue_name)
    # Sessions carry Redis so that a commit which appends events can announce it.
    sessions = session_factory(
        engine, info={"redis": redis, "events_channel": events_channel(settings.redis_prefix)}
    )
    notifier = Notifier(redis, settings.redis_prefix)
    return Context(
        settings=settings,
        engine=engine,
        sessions=sessions,
        redis=redis,
        notifier=notifier,
        # Every outbound call goes to an address it checked (public ones unless a call
        # says otherwise: see app/outbound.py).
        # Idle keep-alive connections bounded: 200 idle ones to one origin stalled the
        # next burst to it until they expired.
        http=outbound.client(
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=20)
        ),
        hub=EventHub(sessions, notifier),
        slots=StreamSlots(settings.streams_per_token, settings.streams_per_process),
        secrets=SecretStore(sessions, keys),
        cipher=keys,
    )
