"""Async engine, sessions, and the per-request unit of work.

Services flush and never commit. The request's session commits once when the route
returns and rolls back when it raises; jobs queued during the request are enqueued only
after that commit (DESIGN.md section 4).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

AFTER_COMMIT = "tandem_after_commit"
T = TypeVar("T")


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    # A failed statement's error names its parameters, and they can be secrets (whsec_...).
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        _sqlite_immediate_transactions(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    # No pre-ping: it costs three round trips per checkout. Connections are recycled
    # instead; a dropped one fails one request or job (the sweeper re-runs jobs).
    kwargs.setdefault("pool_recycle", 300)
    return create_async_engine(url, **kwargs)


def _sqlite_immediate_transactions(engine: AsyncEngine) -> None:
    """SQLite: WAL, and BEGIN IMMEDIATE so two writers queue instead of failing to upgrade."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(
    engine: AsyncEngine, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, info=info or {})


def after_commit(session: AsyncSession, callback: Callable[[], Awaitable[None]]) -> None:
    """Run `callback` once the session's transaction has committed (never on rollback)."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


async def run_after_commit(session: AsyncSession) -> None:
    callbacks = session.info.pop(AFTER_COMMIT, [])
    for callback in callbacks:
        await callback()


@asynccontextmanager
async def unit_of_work(
    factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session that commits on success, rolls back on error, then runs after-commit work."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            session.info.pop(AFTER_COMMIT, None)
            raise
        await run_after_commit(session)


@asynccontextmanager
async def statement_by_statement(
    factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session for work that needs no transaction around its statements: each one
    commits by itself on PostgreSQL (no BEGIN and COMMIT round trips); on SQLite it is a
    unit of work (one writer at a time there anyway)."""
    async with factory() as session:
        if session.get_bind().dialect.name == "postgresql":
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            yield session
            return
    async with unit_of_work(factory) as unit:
        yield unit


async def finish_even_if_cancelled(work: Awaitable[T]) -> T:
    """Run `work` (a whole unit of work) in a task of its own and wait for it.

    When the request is cancelled — a client hanging up on a stream or a long poll —
    the caller gets CancelledError at once, but the unit still ends with its commit or
    rollback. Cancelled half-way, it could leave a transaction open on a pooled
    connection, and on SQLite an open write transaction locks out every other writer.
    """
    return await asyncio.shield(asyncio.ensure_future(work))
