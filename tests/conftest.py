"""Fixtures: a real database (PostgreSQL or SQLite), a real Redis, real processes.

TANDEM_TEST_DB picks the database (`make test` runs both where it can);
TANDEM_TEST_REQUIRE_SERVICES=1 (CI) forbids falling back to embedded services.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import create_engine, session_factory
from tests.airflow import airflow  # noqa: F401  (a real Airflow 3, session fixture)
from tests.backends import backends, reachable
from tests.runbook import runbook, second_runbook  # noqa: F401  (loopback services)
from tests.stack import ROOT, Stack

BACKEND = os.environ.get("TANDEM_TEST_DB") or backends()[0]
REQUIRE_SERVICES = os.environ.get("TANDEM_TEST_REQUIRE_SERVICES") == "1"
ADMIN_TOKEN = "tdm_" + secrets.token_urlsafe(32)
PG_ADMIN_DSN = os.environ.get("TANDEM_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
RUN_ID = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
SHARED_REDIS = "redis://127.0.0.1:6379"
# Claims on database 0 of the shared Redis: tandem:test-db:<n> = the run that uses database n.
REDIS_CLAIM = "tandem:test-db:{}"
REDIS_CLAIM_TTL_S = 2 * 3600
# Deletes a claim only if it is still the given run's (it may have expired and been retaken).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def pytest_report_header() -> list[str]:
    return [f"tandem: database backend {BACKEND}"]


# `make test` runs the suite in two processes (pytest-xdist, `--dist loadgroup`); every
# test that needs one of these starts it in the same process, so it starts once per run:
# fixtures of the whole run (a real Airflow, PostgreSQL servers, Chromium, many processes)...
ONCE_PER_RUN_FIXTURES = ("airflow", "pg_servers", "browser", "fleet")
# ...and modules whose module-wide fixture is costly (a virtualenv built, a client generated).
ONCE_PER_RUN_MODULES = ("test_container", "test_generated_client", "test_chart")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = next((f for f in ONCE_PER_RUN_FIXTURES if f in item.fixturenames), None)
        module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        if group is None and module in ONCE_PER_RUN_MODULES:
            group = module
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tandem")


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_pg_database() -> tuple[str, str]:
    name = f"tandem_test_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return name, f"{base}/{name}"


def drop_pg_database(name: str) -> None:
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def migrate(database_url: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env={**os.environ, "TANDEM_DATABASE_URL": database_url},
        cwd=ROOT,
        check=True,
    )


@pytest.fixture(scope="session")
def database_url(tmp_root: Path) -> Iterator[str]:
    if BACKEND == "postgresql":
        if not reachable("127.0.0.1", 5432):
            pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432")
        name, url = create_pg_database()
        migrate(url)
        yield url
        drop_pg_database(name)
    else:
        url = f"sqlite+aiosqlite:///{tmp_root / 'tandem.db'}"
        migrate(url)
        yield url


def claim_redis_database(claims: redis.Redis, run_id: str = RUN_ID) -> int:
    """The first of databases 1-15 that no other test run holds, claimed for `run_id`."""
    for n in range(1, 16):
        if claims.set(REDIS_CLAIM.format(n), run_id, nx=True, ex=REDIS_CLAIM_TTL_S):
            return n
    held = {n: claims.get(REDIS_CLAIM.format(n)) for n in range(1, 16)}
    pytest.fail(f"Redis databases 1-15 on {SHARED_REDIS} are all claimed by other runs: {held}")


def release_redis_database(claims: redis.Redis, n: int, run_id: str = RUN_ID) -> None:
    claims.eval(_RELEASE, 1, REDIS_CLAIM.format(n), run_id)


@pytest.fixture(scope="session")
def redis_url(tmp_root: Path) -> Iterator[str]:
    if reachable("127.0.0.1", 6379):
        # A database of this run's own on the shared server, so that FLUSHDB in a test
        # touches only it and no other run (the claim expires if this one dies).
        claims = redis.Redis.from_url(f"{SHARED_REDIS}/0")
        n = claim_redis_database(claims)
        url = f"{SHARED_REDIS}/{n}"
        mine = redis.Redis.from_url(url)
        try:
            mine.flushdb()  # whatever a run that died left behind
            yield url
        finally:
            mine.flushdb()
            mine.close()
            release_redis_database(claims, n)
            claims.close()
        return
    if REQUIRE_SERVICES:
        pytest.fail("Redis is not reachable on 127.0.0.1:6379")
    from app.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_root / "redis")
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def stack_env(database_url: str, redis_url: str, tmp_root: Path) -> dict[str, str]:
    return {
        "TANDEM_DATABASE_URL": database_url,
        "TANDEM_REDIS_URL": redis_url,
        # Pub/sub channels ignore the database number: this run's own names (and queue).
        "TANDEM_REDIS_PREFIX": f"tandem-test-{secrets.token_hex(4)}",
        "TANDEM_DATA_DIR": str(tmp_root / "data"),
        # Short leases so recovery after a SIGKILL is quick in the tests.
        "TANDEM_LEASE_TTL_S": "3",
        # Several workers on one machine: each takes a free health port.
        "TANDEM_WORKER_HEALTH_PORT": "0",
        "TANDEM_SWEEP_INTERVAL_S": "1",
        "TANDEM_LOG_LEVEL": "info",
        # The first API start registers this admin token (for the `client` fixture).
        "TANDEM_BOOTSTRAP_TOKEN": ADMIN_TOKEN,
        # Generous, so that schemathesis and bursts of 50 are not limited; the rate-limit
        # test gives its token a limit of its own.
        "TANDEM_RATE_LIMIT_PER_MINUTE": "100000",
        # Webhook receivers in the tests listen on loopback.
        "TANDEM_WEBHOOK_ALLOW_PRIVATE": "1",
        # Runbooks and checks in the tests listen on loopback.
        "TANDEM_ACTION_NETWORKS": "all",
        "TANDEM_DISPATCHER_LEASE_TTL_S": "3",
        # A quick retry schedule, and a short span before a dead endpoint is disabled.
        "TANDEM_WEBHOOK_RETRY_SCHEDULE_S": "[0.3, 0.6, 1, 2, 2, 2, 2, 2]",
        "TANDEM_WEBHOOK_RETRY_JITTER": "0.1",
        "TANDEM_WEBHOOK_DISABLE_AFTER_S": "8",
        "TANDEM_WEBHOOK_TIMEOUT_S": "2",
    }


@pytest.fixture(scope="session")
def stack(stack_env: dict[str, str], tmp_root: Path) -> Iterator[Stack]:
    log_dir = tmp_root / "logs"
    log_dir.mkdir(exist_ok=True)
    running = Stack(stack_env, log_dir)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def live_stack(stack: Stack) -> Stack:
    """The stack, with its worker pool topped up after a test that killed workers."""
    stack.ensure_workers()
    return stack


@pytest_asyncio.fixture
async def client(live_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(
        base_url=live_stack.base_url,
        timeout=90,
        limits=limits,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as c:
        yield c


@pytest_asyncio.fixture(scope="session")
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Direct database access, for checking what the API does not show."""
    engine = create_engine(database_url, **({"pool_size": 2} if BACKEND == "postgresql" else {}))
    yield session_factory(engine)
    await engine.dispose()
