"""A request that waits too long for a pooled database connection (what thousands of
streams once caused) is answered 503 with Retry-After, never 500: raised in a route or in
a middleware. A test app on a pool of one connection that the test holds: no timing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

from app.db import create_engine
from app.errors import install_handlers
from app.middleware import RequestIdMiddleware


@pytest_asyncio.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    tiny = create_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    yield tiny
    await tiny.dispose()


class CheckoutMiddleware:
    """Reads the database before the app, as an auditing middleware would."""

    def __init__(self, app: ASGIApp, engine: AsyncEngine) -> None:
        self.app, self.engine = app, engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/in-middleware":
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        await self.app(scope, receive, send)


def make_app(engine: AsyncEngine) -> FastAPI:
    app = FastAPI()
    install_handlers(app)
    app.add_middleware(CheckoutMiddleware, engine=engine)
    app.add_middleware(RequestIdMiddleware)

    @app.get("/in-route")
    async def in_route() -> dict[str, int]:
        async with engine.connect() as conn:
            return {"one": int((await conn.execute(text("SELECT 1"))).scalar_one())}

    @app.get("/in-middleware")
    async def in_middleware() -> dict[str, int]:
        return {"one": 1}

    return app


async def test_a_pool_timeout_is_a_503_with_retry_after(engine: AsyncEngine) -> None:
    transport = httpx.ASGITransport(app=make_app(engine), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/in-route")).json() == {"one": 1}  # the pool works
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))  # the pool's only connection, held
            for path in ("/in-route", "/in-middleware"):
                response = await client.get(path)
                assert response.status_code == 503, (path, response.text)
                assert response.headers["content-type"].startswith("application/problem+json")
                assert int(response.headers["Retry-After"]) >= 1
                problem = json.loads(response.text)
                assert problem["status"] == 503, problem
        assert (await client.get("/in-middleware")).status_code == 200  # given back
