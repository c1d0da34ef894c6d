"""A throwaway PostgreSQL database and Redis database number for one bench run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import redis

from tests.stack import ROOT, Stack

PG_ADMIN_DSN = os.environ.get("TANDEM_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("TANDEM_BENCH_REDIS", "redis://127.0.0.1:6379")


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_pg_database() -> tuple[str, str, str]:
    """Returns (name, asyncpg DSN, SQLAlchemy URL)."""
    name = f"tandem_bench_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    dsn = f"{base}/{name}"
    return name, dsn, dsn.replace("postgresql://", "postgresql+asyncpg://")


def drop_pg_database(name: str) -> None:
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def migrate(database_url: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env={**os.environ, "TANDEM_DATABASE_URL": database_url, "TANDEM_LOG_LEVEL": "warning"},
        cwd=ROOT,
        check=True,
        timeout=120,
    )


def pick_redis_url() -> str:
    """A random database number, preferring an empty one (others share this server)."""
    numbers = list(range(1, 16))
    random.shuffle(numbers)
    for number in numbers:
        client = redis.Redis.from_url(f"{REDIS_BASE}/{number}")
        try:
            if client.dbsize() == 0:
                return f"{REDIS_BASE}/{number}"
        finally:
            client.close()
    return f"{REDIS_BASE}/{numbers[0]}"


def clean_redis(url: str, patterns: list[str]) -> int:
    """Delete only this run's keys, so another user of the same database number is unharmed."""
    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        for pattern in patterns:
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                deleted += int(client.delete(*keys))
    finally:
        client.close()
    return deleted


def tandem_env(
    database_url: str, redis_url: str, queue: str, data_dir: Path, token: str
) -> dict[str, str]:
    """The environment of the bench's API and worker processes."""
    return {
        "TANDEM_DATABASE_URL": database_url,
        "TANDEM_REDIS_URL": redis_url,
        "TANDEM_QUEUE_NAME": queue,
        "TANDEM_DATA_DIR": str(data_dir),
        "TANDEM_LOG_LEVEL": "info",
        "TANDEM_WEBHOOK_ALLOW_PRIVATE": "1",
        # The runbooks of (d) are on loopback.
        "TANDEM_ACTION_NETWORKS": "all",
        # The first API start registers it as the admin token the bench uses.
        "TANDEM_BOOTSTRAP_TOKEN": token,
        "TANDEM_RATE_LIMIT_PER_MINUTE": "1000000",
    }


@dataclass
class OwnStack:
    """A stack of its own for one bench: its database, its Redis names, its admin token."""

    stack: Stack
    token: str
    database_url: str


@contextlib.contextmanager
def own_stack(name: str, workers: int = 1, **env: str) -> Iterator[OwnStack]:
    """An API process and `workers` workers on a fresh PostgreSQL database and Redis names
    of their own; everything is removed afterwards (the process logs are kept, and their
    folder printed, when the bench failed)."""
    token = "tdm_" + secrets.token_urlsafe(32)
    tmp = Path(tempfile.mkdtemp(prefix=f"tandem-bench-{name}-"))
    log_dir = tmp / "logs"
    log_dir.mkdir()
    db_name, _dsn, database_url = create_pg_database()
    ok = False
    try:
        migrate(database_url)
        redis_url = pick_redis_url()
        prefix = f"tandem-bench-{secrets.token_hex(4)}"
        stack = Stack(
            {
                "TANDEM_DATABASE_URL": database_url,
                "TANDEM_REDIS_URL": redis_url,
                "TANDEM_REDIS_PREFIX": prefix,
                "TANDEM_DATA_DIR": str(tmp / "data"),
                "TANDEM_LOG_LEVEL": "warning",
                # The first API start registers it as the admin token the bench uses.
                "TANDEM_BOOTSTRAP_TOKEN": token,
                "TANDEM_RATE_LIMIT_PER_MINUTE": "1000000",
                # Each worker's health server on a port of its own: on the default port
                # every worker after the first would fail to bind and exit.
                "TANDEM_WORKER_HEALTH_PORT": "0",
                **env,
            },
            log_dir,
            workers=workers,
        )
        try:
            stack.start()
            yield OwnStack(stack, token, database_url)
            # A figure measured with fewer workers than it says would be wrong.
            gone = [w for w in stack.workers if not w.alive()]
            if gone:
                raise RuntimeError(
                    f"{len(gone)} worker(s) exited during the run:\n{gone[0].tail()}"
                )
        finally:
            stack.stop()
            clean_redis(redis_url, [f"{prefix}*"])
        ok = True
    finally:
        drop_pg_database(db_name)
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bench {name}: failed; process logs kept in {log_dir}", file=sys.stderr)
