"""(e) readiness of many pairs, for `make bench` (also `python -m bench.readiness`).

1,000 pairs (made through the service layer, `app.clusters.service.create`, in a
PostgreSQL database of their own) whose plans each hold one `check` step before the point
of no return, against one loopback health server (bench/runbook_server.py, its own
process, so its CPU is not counted). Tandem: `app.readiness.service.evaluate_due(deps, 0)`
in this process, as the worker's round runs it (every pair due; one probe per pair, 50
at once; each result recorded in a transaction of its own), with the worker's
`ActionDeps`: `app.outbound.client()` (200 connections), the pair secret store,
`Networks.ALL`. Tandem CPU is this process's (user + system) over the round; the database
server's backends and the health server are shown apart.

Beside it, the same number of GETs with the same concurrency (50):
- plain: one `httpx.AsyncClient` (200 connections), status checked;
- evaluate: `evaluate()` of every pair, already loaded, without `record` (the probes);
- sequential: 300 plain GETs one at a time: what one GET costs on this machine.
Every round runs on a new client, made and closed outside the clock: the worker's rounds
are 300 s apart, so they never find an httpx keep-alive connection (5 s) still open, and
with 50 at once a round that must open its connections costs about twice the CPU of one
that finds them open (httpcore's pool bookkeeping grows with its connections). The rounds
are interleaved (ABCD DCBA). Target: under 1 ms of Tandem CPU per check.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
from cryptography.fernet import Fernet, MultiFernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

import app.tables  # noqa: F401  (every table on the metadata)
from app import outbound
from app.access.models import Organization
from app.actions.base import ActionDeps
from app.clusters import service as clusters
from app.clusters.models import Cluster
from app.clusters.schemas import ClusterCreate
from app.columns import new_id
from app.db import create_engine, session_factory, unit_of_work
from app.readiness import service as readiness
from app.secrets.service import SecretStore
from bench.procstat import process_cpu_s, self_cpu_s
from bench.runbook_server import Runbook
from bench.services import create_pg_database, drop_pg_database, migrate
from bench.stats import median, table

PAIRS = int(os.environ.get("BENCH_READINESS_PAIRS", "1000"))
ROUNDS = int(os.environ.get("BENCH_READINESS_ROUNDS", "2"))
WARMUP_GETS = 100
SEQUENTIAL_GETS = 300  # the reference row: enough for a stable figure
CREATE_BATCH = 250  # pairs per transaction when they are made
CONCURRENCY = readiness.CONCURRENCY
POOL = httpx.Limits(max_connections=200)  # as app.context builds the worker's client

TARGET_CPU_MS_PER_CHECK = 1.0


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def plan(health_url: str, promote_url: str) -> dict[str, Any]:
    return {
        "steps": [
            {"name": "preflight", "action": {"kind": "check", "urls": [health_url]}},
            {
                "name": "promote_target",
                "action": {"kind": "http", "url": promote_url},
                "point_of_no_return": True,
            },
        ]
    }


async def make_pairs(sessions: async_sessionmaker[AsyncSession], body: dict[str, Any]) -> str:
    async with unit_of_work(sessions) as session:
        org = Organization(id=new_id("org"), name=f"bench-{uuid.uuid4().hex[:8]}")
        session.add(org)
    for start in range(0, PAIRS, CREATE_BATCH):
        async with unit_of_work(sessions) as session:
            for i in range(start, min(start + CREATE_BATCH, PAIRS)):
                name = f"ready-{i:05d}"
                pair = {
                    **body,
                    "name": name,
                    "primary": {"name": f"{name}-east", "region": "us-east-1", "cloud": "aws"},
                    "secondary": {"name": f"{name}-west", "region": "us-west-2", "cloud": "aws"},
                }
                await clusters.create(session, org.id, ClusterCreate.model_validate(pair))
    return org.id


class Backends:
    """CPU of this database's PostgreSQL backends (the server's side, not Tandem's)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def cpu_s(self) -> dict[int, float]:
        conn = await asyncpg.connect(self.dsn)
        try:
            pids = await conn.fetch(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        return {int(r["pid"]): process_cpu_s(int(r["pid"])) for r in pids}


async def _seen(server: Runbook) -> tuple[int, int]:
    """(requests, connections) the health server has seen: each call opens a connection."""
    async with httpx.AsyncClient() as client:
        seen = (await client.get(server.url("/__count"))).json()
    return int(seen["requests"]), int(seen["connections"])


Work = Callable[[httpx.AsyncClient], Awaitable[int]]


async def timed(
    work: Work, client: httpx.AsyncClient, server: Runbook, backends: Backends
) -> dict[str, Any]:
    """Run `work` (it returns how many checks it meant to make) on a client of its own,
    new and closed outside the clock, and account for it."""
    seen0 = await _seen(server)
    db0 = await backends.cpu_s()
    server0 = process_cpu_s(server.pid)
    async with client:
        cpu0 = self_cpu_s()
        t0 = time.perf_counter()
        checks = await work(client)
        elapsed = time.perf_counter() - t0
        cpu = self_cpu_s() - cpu0
    server_cpu = process_cpu_s(server.pid) - server0
    db1 = await backends.cpu_s()
    db_cpu = sum(v - db0.get(pid, 0.0) for pid, v in db1.items())
    seen1 = await _seen(server)
    received, connections = seen1[0] - seen0[0], seen1[1] - seen0[1] - 1
    if received != checks:
        raise RuntimeError(f"{checks} checks meant, the health server received {received}")
    return {
        "checks": checks,
        "elapsed_s": round(elapsed, 3),
        "cpu_ms_per_check": round(cpu * 1000 / checks, 3),
        "db_cpu_ms_per_check": round(db_cpu * 1000 / checks, 3),
        "server_cpu_ms_per_check": round(server_cpu * 1000 / checks, 3),
        "connections_opened": connections,
    }


async def gets(
    client: httpx.AsyncClient, url: str, n: int, concurrency: int = CONCURRENCY, **kwargs: Any
) -> int:
    limit = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with limit:
            response = await client.get(url, **kwargs)
            if not response.is_success:
                raise RuntimeError(f"GET {url}: {response.status_code}")

    await asyncio.gather(*(one() for _ in range(n)))
    return n


async def measure(database_url: str, dsn: str) -> dict[str, Any]:
    server = await Runbook().start()
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    secrets = SecretStore(sessions, MultiFernet([Fernet(Fernet.generate_key())]))
    backends = Backends(dsn)
    health = server.url("/health")

    def deps(client: httpx.AsyncClient) -> ActionDeps:
        return ActionDeps(
            sessions=sessions, http=client, secrets=secrets, networks=outbound.Networks.ALL
        )

    try:
        t0 = time.perf_counter()
        await make_pairs(sessions, {"plan": plan(health, server.url("/promote"))})
        setup_s = time.perf_counter() - t0
        _progress(f"readiness: {PAIRS} pairs made in {setup_s:.1f} s")

        async def tandem(client: httpx.AsyncClient) -> int:
            evaluated = await readiness.evaluate_due(deps(client), 0.0)
            if evaluated != PAIRS:
                raise RuntimeError(f"evaluate_due evaluated {evaluated} pairs, not {PAIRS}")
            return evaluated

        loaded: list[Cluster] = []

        async def evaluate_only(client: httpx.AsyncClient) -> int:
            limit = asyncio.Semaphore(CONCURRENCY)
            results = await asyncio.gather(
                *(readiness.evaluate(deps(client), cluster, limit) for cluster in loaded)
            )
            bad = [r for r in results if not r["ready"]]
            if bad:
                raise RuntimeError(f"{len(bad)} pairs not ready: {bad[0]}")
            return sum(len(r["checks"]) for r in results)

        async def plain_gets(client: httpx.AsyncClient) -> int:
            return await gets(client, health, PAIRS)

        async def plain_sequential(client: httpx.AsyncClient) -> int:
            return await gets(client, health, SEQUENTIAL_GETS, concurrency=1)

        # Each round on a new client: the worker's rounds are TANDEM_READINESS_INTERVAL_S
        # (300 s) apart, so they never find a keep-alive connection (5 s) still open.
        work: dict[str, tuple[Work, Callable[[], httpx.AsyncClient]]] = {
            "tandem": (tandem, lambda: outbound.client(limits=POOL)),
            "evaluate": (evaluate_only, lambda: outbound.client(limits=POOL)),
            "plain": (plain_gets, lambda: httpx.AsyncClient(limits=POOL)),
            "sequential": (plain_sequential, lambda: httpx.AsyncClient(limits=POOL)),
        }
        # Warm-up: the first evaluation of every pair (the database pool, caches).
        first = await timed(tandem, outbound.client(limits=POOL), server, backends)
        async with unit_of_work(sessions) as session:
            loaded.extend(await session.scalars(select(Cluster).order_by(col(Cluster.id))))
        async with httpx.AsyncClient(limits=POOL) as client:
            await gets(client, health, WARMUP_GETS)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in work}
        order = list(work)
        for round_ in range(ROUNDS):
            for name in order if round_ % 2 == 0 else order[::-1]:
                how, new_client = work[name]
                runs[name].append(await timed(how, new_client(), server, backends))
        ready = await _count_ready(sessions)
        _progress(
            "readiness: Tandem "
            f"{median([r['cpu_ms_per_check'] for r in runs['tandem']]):.2f} ms CPU per check, "
            f"plain GET {median([r['cpu_ms_per_check'] for r in runs['plain']]):.2f} ms"
        )
    finally:
        await engine.dispose()
        await server.stop()
    return {"pairs": PAIRS, "setup_s": setup_s, "first": first, "runs": runs, "ready": ready}


async def _count_ready(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with unit_of_work(sessions) as session:
        rows = await session.scalars(select(col(Cluster.readiness)))
        return sum(1 for r in rows if r and r.get("ready"))


def run() -> dict[str, Any]:
    """A database of its own (the stack's worker would evaluate these pairs too)."""
    name, dsn, database_url = create_pg_database()
    try:
        migrate(database_url)
        return asyncio.run(measure(database_url, dsn))
    finally:
        drop_pg_database(name)


def report(raw: dict[str, Any]) -> dict[str, Any]:
    runs = raw["runs"]

    def of(name: str, key: str) -> float:
        return median([r[key] for r in runs[name]])

    cpu = of("tandem", "cpu_ms_per_check")
    baseline = of("plain", "cpu_ms_per_check")
    return {
        "pairs": raw["pairs"],
        "checks_per_round": runs["tandem"][0]["checks"],
        "rounds_each": len(runs["tandem"]),
        "concurrency": CONCURRENCY,
        "pairs_setup_s": round(raw["setup_s"], 2),
        "pairs_ready_after": raw["ready"],
        "tandem_cpu_ms_per_check": cpu,
        "tandem_wall_s": of("tandem", "elapsed_s"),
        "plain_cpu_ms_per_get": baseline,
        "plain_wall_s": of("plain", "elapsed_s"),
        "cpu_ratio": round(cpu / baseline, 2),
        # This machine's speed: one GET at a time, from the same client.
        "sequential_cpu_ms_per_get": of("sequential", "cpu_ms_per_check"),
        "wall_ratio": round(of("tandem", "elapsed_s") / of("plain", "elapsed_s"), 2),
        "target_max_cpu_ms_per_check": TARGET_CPU_MS_PER_CHECK,
        "meets_target": cpu < TARGET_CPU_MS_PER_CHECK,
        "first_evaluation": raw["first"],
        "runs": runs,
    }


LABELS = {
    "tandem": "Tandem: evaluate_due (probe + record)",
    "evaluate": "  evaluate() only, pairs loaded",
    "plain": "baseline: plain httpx GETs",
    "sequential": "  (reference: plain GETs one at a time)",
}


def render(fig: dict[str, Any]) -> list[str]:
    runs = fig["runs"]

    def of(name: str, key: str) -> float:
        return median([r[key] for r in runs[name]])

    rows: list[list[object]] = []
    for name in LABELS:
        rows.append(
            [
                LABELS[name],
                runs[name][0]["checks"],
                f"{of(name, 'elapsed_s'):.2f} s",
                " ".join(f"{r['elapsed_s']:.2f}" for r in runs[name]),
                f"{of(name, 'cpu_ms_per_check'):.3f} ms",
                " ".join(f"{r['cpu_ms_per_check']:.3f}" for r in runs[name]),
                f"{of(name, 'db_cpu_ms_per_check'):.3f} ms",
                f"{of(name, 'server_cpu_ms_per_check'):.3f} ms",
                " ".join(str(r["connections_opened"]) for r in runs[name]),
            ]
        )
    rows.append(
        [
            "ratio Tandem / baseline",
            "",
            f"{fig['wall_ratio']:.1f}x",
            "",
            f"{fig['cpu_ratio']:.1f}x",
            "",
            "",
            "",
            "",
        ]
    )
    first = fig["first_evaluation"]
    verdict = "met" if fig["meets_target"] else "MISSED"
    return [
        f"(e) readiness ({fig['pairs']} pairs, one check each against a loopback health "
        f"server, {fig['concurrency']} at once, {fig['rounds_each']} rounds each, interleaved)",
        table(
            [
                "",
                "checks",
                "wall median",
                "wall per run",
                "CPU/check",
                "CPU/check per run",
                "PG server CPU/check",
                "health server CPU/check",
                "connections opened",
            ],
            rows,
        ),
        f"target: Tandem CPU per check < {fig['target_max_cpu_ms_per_check']:g} ms "
        f"-> {verdict} ({fig['tandem_cpu_ms_per_check']:.3f} ms, in "
        f"{fig['tandem_wall_s']:.2f} s of wall time for {fig['checks_per_round']} checks; "
        f"{fig['tandem_cpu_ms_per_check'] / fig['sequential_cpu_ms_per_get']:.1f}x the CPU of "
        "one plain GET at a time)",
        f"first evaluation of every pair (warm-up): {first['elapsed_s']:.2f} s, "
        f"{first['cpu_ms_per_check']:.3f} ms CPU per check; pairs made in "
        f"{fig['pairs_setup_s']:.1f} s; {fig['pairs_ready_after']} ready afterwards",
    ]


def main() -> int:
    """`python -m bench.readiness`: (e) alone."""
    print("\n".join(render(report(run()))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
