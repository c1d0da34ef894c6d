"""(j) the database part of a planned failover: `python -m bench.postgres_failover`.

A primary and its streaming standby (tests/pg_servers.py: initdb, pg_basebackup -R, run
as the postgres user on loopback ports), rebuilt fresh for every round. Tandem: the
`postgres` action in this process (`app.actions.postgres.PostgresAction`, its progress
kept in a SQLite file of its own) doing fence -> drain -> promote, then one write accepted
by the target. Beside it, the same SQL run by hand with `psql` (one psql per statement, as
an operator would): ALTER SYSTEM + pg_reload_conf() + ending the sessions in a
transaction, the replay position polled until it reaches the source's, pg_promote(), one
write. Rounds interleaved (T H H T ...). Target: Tandem <= 1.3x the hand-run time.

Then one more Tandem round under a writer loop that has committed at least 10,000 rows
before the fence and goes on until it is refused: every row whose commit it saw must be
on the promoted target (rows lost: must be 0).
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel import SQLModel

import app.tables  # noqa: F401  (every table on the metadata)
from app.actions.base import ActionDeps, ActionFailed, NotYet, StepCall
from app.actions.postgres import PostgresAction
from app.columns import utcnow
from app.outbound import Networks
from tests.pg_servers import BIN, PgPair, Server

ROUNDS = 4
WRITER_COMMITS = 10_000


def call(step: str, op_id: str) -> StepCall:
    return StepCall(
        cluster_id="bench",
        cluster_name="bench",
        operation_id=op_id,
        kind="failover",
        mode="planned",
        step=step,
        phase="do",
        attempt=1,
        idempotency_key=f"{op_id}:{step}:1",
        deadline_at=utcnow() + timedelta(seconds=600),
        source={"region": "a"},
        target={"region": "b"},
        deployments=[],
    )


async def tandem_round(deps: ActionDeps, pair: PgPair, n: int) -> float:
    settings = {
        "kind": "postgres",
        "primary_dsn": pair.primary.dsn(),
        "secondary_dsn": pair.standby.dsn(),
        "interval_s": 0.05,
    }
    op_id = f"op_bench_{n}_{time.time_ns()}"
    started = time.perf_counter()
    for op in ("fence", "drain", "promote"):
        action = PostgresAction({**settings, "op": op}, deps)
        while True:
            result = await action.do(call(op, op_id))
            if not isinstance(result, NotYet):
                break
            await asyncio.sleep(max((result.at - utcnow()).total_seconds(), 0))
    conn = await asyncpg.connect(pair.standby.dsn())
    try:
        await conn.execute("CREATE TABLE accepted (id int)")
    finally:
        await conn.close()
    return time.perf_counter() - started


def psql(server: Server, sql: str) -> str:
    done = subprocess.run(
        [str(BIN / "psql"), "-X", "-qAt", "-d", server.dsn(), "-c", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def hand_round(pair: PgPair) -> float:
    source, target = pair.primary, pair.standby
    started = time.perf_counter()
    psql(source, "ALTER SYSTEM SET default_transaction_read_only = on")
    psql(source, "SELECT pg_reload_conf()")
    psql(
        source,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        " AND (backend_xid IS NOT NULL OR xact_start IS NOT NULL)",
    )
    wanted = psql(source, "SELECT pg_current_wal_flush_lsn()")
    while psql(target, f"SELECT pg_last_wal_replay_lsn() >= '{wanted}'::pg_lsn") != "t":
        time.sleep(0.05)
    psql(target, "SELECT pg_promote(true, 60)")
    psql(target, "CREATE TABLE accepted (id int)")
    return time.perf_counter() - started


async def writer_round(deps: ActionDeps, pair: PgPair) -> dict[str, Any]:
    conn = await asyncpg.connect(pair.primary.dsn())
    await conn.execute("CREATE TABLE rows (id bigint PRIMARY KEY)")
    committed: list[int] = []
    refused, enough = asyncio.Event(), asyncio.Event()

    async def write() -> None:
        nonlocal conn
        n = 0
        while not refused.is_set():
            try:
                if conn.is_closed():
                    conn = await asyncpg.connect(pair.primary.dsn())
                n += 1
                await conn.execute("INSERT INTO rows VALUES ($1)", n)
                committed.append(n)
                if len(committed) >= WRITER_COMMITS:
                    enough.set()
            except asyncpg.ReadOnlySQLTransactionError:
                refused.set()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
                await asyncio.sleep(0.01)

    task = asyncio.ensure_future(write())
    await enough.wait()
    before_fence = len(committed)
    seconds = await tandem_round(deps, pair, 999)
    await asyncio.wait_for(refused.wait(), 60)
    await task
    conn.terminate()
    target = await asyncpg.connect(pair.standby.dsn())
    try:
        on_target = {r[0] for r in await target.fetch("SELECT id FROM rows")}
    finally:
        await target.close()
    lost = set(committed) - on_target
    return {
        "seconds": seconds,
        "commits": len(committed),
        "before_fence": before_fence,
        "lost": len(lost),
    }


def workspace() -> Path:
    root = Path(tempfile.mkdtemp(prefix="tandem-pg-bench-"))
    root.chmod(0o755)
    return root


async def main() -> None:
    root = workspace()
    pair = PgPair(root)
    engine = create_async_engine(f"sqlite+aiosqlite:///{root / 'progress.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def no_secret(pair_id: str, name: str) -> str:
        raise ActionFailed(f"no secret {name}")

    async with httpx.AsyncClient() as http:
        deps = ActionDeps(sessions=sessions, http=http, secrets=no_secret, networks=Networks.ALL)
        try:
            pair.init_template()
            tandem: list[float] = []
            hand: list[float] = []
            for n in range(ROUNDS):
                for side in ("T", "H") if n % 2 == 0 else ("H", "T"):
                    pair.rebuild()
                    if side == "T":
                        tandem.append(await tandem_round(deps, pair, n))
                    else:
                        hand.append(await asyncio.to_thread(hand_round, pair))
            pair.rebuild()
            written = await writer_round(deps, pair)
        finally:
            pair.stop()
            await engine.dispose()
            shutil.rmtree(root, ignore_errors=True)
    t, h = statistics.median(tandem), statistics.median(hand)
    print("database part of a planned failover (fence -> drain -> promote -> a write)")
    print(f"  tandem (postgres action): median {t * 1000:.0f} ms  {[round(x, 3) for x in tandem]}")
    print(f"  by hand (psql):           median {h * 1000:.0f} ms  {[round(x, 3) for x in hand]}")
    print(f"  ratio tandem / hand: {t / h:.2f} (target <= 1.3)")
    print(
        f"  under a writer: {written['seconds'] * 1000:.0f} ms; {written['commits']} commits "
        f"({written['before_fence']} before the fence), rows lost: {written['lost']}"
    )


if __name__ == "__main__":
    asyncio.run(main())
