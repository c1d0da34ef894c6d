"""An error response is a problem that leaves the client's connection usable, and a database
out of reach is a 503 problem with Retry-After, not a 500.

A stand-in app with the real handlers and middlewares, served by a real uvicorn on loopback:
no Tandem route fails on purpose, and the shared stack's database must stay up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI, Request
from sqlalchemy import text

from app.db import create_engine
from app.errors import install_handlers
from app.middleware import BodyLimitMiddleware, RequestIdMiddleware
from tests.stack import free_port


def stand_in_app(database_url: str) -> FastAPI:
    app = FastAPI()
    install_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=100)
    app.add_middleware(RequestIdMiddleware)
    engine = create_engine(database_url)

    @app.get("/peer")
    async def peer(request: Request) -> dict[str, int]:
        # The client's port: the same on two requests when they shared one connection.
        assert request.client is not None
        return {"port": request.client.port}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/query")
    async def query() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def failing_middleware(scope, receive, send):  # type: ignore[no-untyped-def]
        # A database outage met in a middleware (as authentication would), outside the routes.
        if scope["type"] == "http" and scope["path"] == "/middleware-query":
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        await inner(scope, receive, send)

    inner = app.router
    app.router = failing_middleware  # type: ignore[assignment]
    return app


async def _serve(app: FastAPI) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):  # polled: uvicorn offers nothing to wait on
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest_asyncio.fixture(params=["postgresql", "sqlite"])
async def outage_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database that cannot be reached: a closed port, or a file in no directory."""
    if request.param == "postgresql":
        dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none"
    else:
        dead = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'dir' / 'tandem.db'}"
    async for base in _serve(stand_in_app(dead)):
        yield base


async def peer_port(client: httpx.AsyncClient) -> int:
    response = await client.get("/peer")
    assert response.status_code == 200
    return int(response.json()["port"])


async def test_a_500_leaves_the_connection_open(outage_url: str) -> None:
    async with httpx.AsyncClient(base_url=outage_url, limits=httpx.Limits(max_connections=1)) as c:
        before = await peer_port(c)
        response = await c.get("/boom")
        assert response.status_code == 500
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "internal"
        assert "x-request-id" in response.headers
        assert response.headers.get("connection", "").lower() != "close"
        assert await peer_port(c) == before  # the same connection served the next request


@pytest.mark.parametrize("path", ["/query", "/middleware-query"])
async def test_a_database_outage_is_a_503_problem(outage_url: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=outage_url, limits=httpx.Limits(max_connections=1)) as c:
        before = await peer_port(c)
        response = await c.get(path)
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert body["code"] == "database_unavailable" and body["status"] == 503
        assert int(response.headers["retry-after"]) >= 1
        assert "x-request-id" in response.headers
        assert await peer_port(c) == before
