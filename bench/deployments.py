"""(g) validating a pair's deployments, for `make bench` (also `python -m bench.deployments`).

One pair (made through the service layer, `app.clusters.service.create`, in a PostgreSQL
database of its own, migrated to head) with 200 deployments
`{"name": "d<i>", "health": {"url": "http://127.0.0.1:<port>/health/{name}"}}` (the
`{name}` placeholder filled in at call time), against one loopback health server
(bench/runbook_server.py, its own process, answering `200 {}` at once, so its CPU is not
counted). Tandem: `app.deployments.service.validate(deps, call, deployments)` in this
process, as the `deployments` action calls it: every deployment checked at once (one GET
each), then every result recorded in `deployment_results` in one transaction. The deps
are the worker's: `app.outbound.client()` with the worker's 200 connections, the pair
secret store, `Networks.ALL`; the `StepCall` is built as the executor builds it (the
pair's stored deployments, its secondary as the target, a new operation id per round).
The pair's rows exist after the warm-up, so the measured rounds take the update path.

Beside it, each round on a client of its own:
- plain (the baseline): 200 concurrent GETs of the same 200 URLs in one loop, one
  `httpx.AsyncClient` with the same pool limits (200 connections), status checked;
- checks: `asyncio.gather(*(service.check_one(...)))`, what `validate` does before it
  records: the GETs part, nothing written;
- guarded: the plain GETs through `app.outbound.client()` (`extensions=reach(ALL)`): the
  cost of Tandem's guarded transport alone, without the service's code;
- bounded (references): check_one and the plain GETs again, 12 at a time (as readiness
  probes) instead of all at once: httpcore 1.0.9's pool pass, run whenever a request is
  queued or a response closed, walks every connection per queued request and, for each
  idle one, all of them again (encode/httpcore#1035), so 200 at once costs several times
  the CPU (profiled: about 7.5 million `is_idle` calls in one warm round of 200 GETs);
- warm: validate and plain again on a client whose 200 connections are already open
  (opened outside the clock; in one round of 5 only). With 200 idle connections (the
  worker's limits set no keep-alive maximum) the same pool pass hands one idle connection
  to every queued request, all but one fail and queue again (#1035's second bug), and the
  churn lasts until the idle connections' keep-alive (5 s) expires: about 5 s a round.
And with no HTTP at all, `service.record` of a round's 200 results: on the pair (update
path: its rows exist) and on a pair with no results yet (insert path).

Every round runs on a new client, made and closed outside the clock, on both sides: a
worker's client lives as long as the worker, but validations are one step of an
operation, minutes apart, so they never find an httpx keep-alive connection (5 s) still
open; each round opens its 200 connections. The warm rows show what an open pool costs.
The rounds are interleaved, the order rotating from round to round. Per round: wall time,
this process's CPU (user + system: Tandem's), the CPU of the database's backends and of
the health server, connections the server accepted, SQL statements sent.

Target: median validate / median plain <= 1.5x (wall time).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import httpx
from cryptography.fernet import Fernet, MultiFernet
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import app.tables  # noqa: F401  (every table on the metadata)
from app import outbound
from app.access.models import Organization
from app.actions.base import ActionDeps, StepCall
from app.clusters import service as clusters
from app.clusters.models import Cluster
from app.clusters.schemas import ClusterCreate
from app.columns import new_id, utcnow
from app.db import create_engine, session_factory, unit_of_work
from app.deployments import service
from app.deployments.service import Health
from app.secrets.service import SecretStore
from bench.procstat import process_cpu_s, self_cpu_s
from bench.readiness import Backends
from bench.runbook_server import Runbook
from bench.services import create_pg_database, drop_pg_database, migrate
from bench.stats import median, p90, table

DEPLOYMENTS = int(os.environ.get("BENCH_DEPLOYMENTS", "200"))
ROUNDS = int(os.environ.get("BENCH_DEPLOYMENTS_ROUNDS", "20"))
WARMUP = 2
WARM_EVERY = 5  # the rows with connections already open: in one round of 5
# The reference rows: GETs 12 at a time (app.readiness's CONCURRENCY), not all at once.
BOUNDED = 12
POOL = httpx.Limits(max_connections=200)  # as app.context builds the worker's client

TARGET_RATIO = 1.5


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


async def make_pair(sessions: async_sessionmaker[AsyncSession], health_url: str) -> Cluster:
    async with unit_of_work(sessions) as session:
        org = Organization(id=new_id("org"), name=f"bench-{uuid.uuid4().hex[:8]}")
        session.add(org)
    name = f"deploy-{uuid.uuid4().hex[:8]}"
    body = {
        "name": name,
        "primary": {"name": f"{name}-east", "region": "us-east-1", "cloud": "aws"},
        "secondary": {"name": f"{name}-west", "region": "us-west-2", "cloud": "aws"},
        "deployments": [
            {"name": f"d{i}", "health": {"url": health_url}} for i in range(DEPLOYMENTS)
        ],
    }
    async with unit_of_work(sessions) as session:
        return await clusters.create(session, org.id, ClusterCreate.model_validate(body))


def failover_call(cluster: Cluster) -> StepCall:
    """As app.operations.executor builds it for a failover's validate_deployments."""
    operation_id = new_id("op")
    return StepCall(
        cluster_id=cluster.id,
        cluster_name=cluster.name,
        operation_id=operation_id,
        kind="failover",
        mode="planned",
        step="validate_deployments",
        phase="do",
        attempt=1,
        idempotency_key=f"{operation_id}:validate_deployments:1",
        deadline_at=utcnow() + timedelta(seconds=60),
        source=dict(cluster.primary),
        target=dict(cluster.secondary),
        deployments=list(cluster.deployments),
        signing_secrets=cluster.runbook_secrets(),
        operation_created_at=utcnow(),
    )


class Statements:
    """SQL statements the engine sent (each one a round trip to PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._one)

    def _one(self, *_: Any) -> None:
        self.count += 1


async def _seen(server: Runbook) -> tuple[int, int]:
    """(requests, connections) the health server has seen: each call opens a connection."""
    async with httpx.AsyncClient() as client:
        seen = (await client.get(server.url("/__count"))).json()
    return int(seen["requests"]), int(seen["connections"])


# A variant's work: it is given a client (None: it makes no HTTP call) and returns how
# many GETs it meant to make.
Work = Callable[[httpx.AsyncClient | None], Awaitable[int]]


@dataclass
class Variant:
    work: Work
    # A new client per round (None: no client); warm: its connections opened first.
    new_client: Callable[[], httpx.AsyncClient] | None
    warm: bool = False
    # Run in one round of `every` only (the warm rows take seconds each).
    every: int = 1


async def timed(
    variant: Variant, server: Runbook, backends: Backends, statements: Statements
) -> dict[str, Any]:
    client = variant.new_client() if variant.new_client is not None else None
    try:
        if client is not None and variant.warm:
            await variant.work(client)  # opens the pool's connections, outside the clock
        seen0 = await _seen(server)
        db0 = await backends.cpu_s()
        server0 = process_cpu_s(server.pid)
        sql0 = statements.count
        cpu0 = self_cpu_s()
        t0 = time.perf_counter()
        gets = await variant.work(client)
        elapsed = time.perf_counter() - t0
        cpu = self_cpu_s() - cpu0
        sql = statements.count - sql0
    finally:
        if client is not None:
            await client.aclose()
    server_cpu = process_cpu_s(server.pid) - server0
    db1 = await backends.cpu_s()
    db_cpu = sum(v - db0.get(pid, 0.0) for pid, v in db1.items())
    seen1 = await _seen(server)
    received, connections = seen1[0] - seen0[0], seen1[1] - seen0[1] - 1
    if received != gets:
        raise RuntimeError(f"{gets} GETs meant, the health server received {received}")
    return {
        "gets": gets,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "db_cpu_s": db_cpu,
        "server_cpu_s": server_cpu,
        "connections_opened": connections,
        "sql_statements": sql,
    }


def _all_healthy(results: list[Health]) -> None:
    bad = [r for r in results if not r.healthy]
    if len(results) != DEPLOYMENTS or bad:
        raise RuntimeError(f"{len(results)} results, {len(bad)} unhealthy: {bad[:1]}")


async def measure(database_url: str, dsn: str) -> dict[str, Any]:
    server = await Runbook().start()
    engine = create_engine(database_url)
    statements = Statements(engine)
    sessions = session_factory(engine)
    secrets = SecretStore(sessions, MultiFernet([Fernet(Fernet.generate_key())]))
    backends = Backends(dsn)
    idle = outbound.client(limits=POOL)  # record() takes deps but makes no call

    def deps(client: httpx.AsyncClient | None) -> ActionDeps:
        return ActionDeps(
            sessions=sessions,
            http=client or idle,
            secrets=secrets,
            networks=outbound.Networks.ALL,
        )

    try:
        t0 = time.perf_counter()
        cluster = await make_pair(sessions, server.url("/health/{name}"))
        setup_s = time.perf_counter() - t0
        urls = [server.url(f"/health/{d['name']}") for d in cluster.deployments]
        region = str(cluster.secondary["region"])
        last: list[Health] = []

        async def validate(client: httpx.AsyncClient | None) -> int:
            call = failover_call(cluster)
            got_region, results = await service.validate(deps(client), call, call.deployments)
            if got_region != region:
                raise RuntimeError(f"validated in {got_region}, not {region}")
            _all_healthy(results)
            last[:] = results
            return len(results)

        async def checks(client: httpx.AsyncClient | None) -> int:
            call = failover_call(cluster)
            results = list(
                await asyncio.gather(
                    *(service.check_one(deps(client), call, d, region) for d in call.deployments)
                )
            )
            _all_healthy(results)
            return len(results)

        async def checks_bounded(client: httpx.AsyncClient | None) -> int:
            call = failover_call(cluster)
            limit = asyncio.Semaphore(BOUNDED)

            async def one(deployment: dict[str, Any]) -> Health:
                async with limit:
                    return await service.check_one(deps(client), call, deployment, region)

            results = list(await asyncio.gather(*(one(d) for d in call.deployments)))
            _all_healthy(results)
            return len(results)

        async def plain(client: httpx.AsyncClient | None, at_once: int = DEPLOYMENTS) -> int:
            assert client is not None
            limit = asyncio.Semaphore(at_once)

            async def one(url: str) -> None:
                async with limit:
                    response = await client.get(url)
                if not response.is_success:
                    raise RuntimeError(f"GET {url}: {response.status_code}")

            await asyncio.gather(*(one(url) for url in urls))
            return len(urls)

        async def plain_bounded(client: httpx.AsyncClient | None) -> int:
            return await plain(client, BOUNDED)

        async def guarded(client: httpx.AsyncClient | None) -> int:
            assert client is not None
            reach = outbound.reach(outbound.Networks.ALL)

            async def one(url: str) -> None:
                response = await client.get(url, extensions=reach)
                if not response.is_success:
                    raise RuntimeError(f"GET {url}: {response.status_code}")

            await asyncio.gather(*(one(url) for url in urls))
            return len(urls)

        async def record(_: httpx.AsyncClient | None) -> int:
            await service.record(deps(None), failover_call(cluster), region, last)
            return 0

        async def record_new(_: httpx.AsyncClient | None) -> int:
            call = failover_call(cluster)
            fresh = replace(call, cluster_id=new_id("cl"))
            await service.record(deps(None), fresh, region, last)
            return 0

        def tandem_client() -> httpx.AsyncClient:
            return outbound.client(limits=POOL)

        def plain_client() -> httpx.AsyncClient:
            return httpx.AsyncClient(limits=POOL)

        variants = {
            "validate": Variant(validate, tandem_client),
            "plain": Variant(plain, plain_client),
            "checks": Variant(checks, tandem_client),
            "guarded": Variant(guarded, tandem_client),
            "checks_bounded": Variant(checks_bounded, tandem_client),
            "plain_bounded": Variant(plain_bounded, plain_client),
            "validate_warm": Variant(validate, tandem_client, warm=True, every=WARM_EVERY),
            "plain_warm": Variant(plain, plain_client, warm=True, every=WARM_EVERY),
            "record": Variant(record, None),
            "record_new": Variant(record_new, None),
        }
        # Warm-up: the first validation inserts the pair's rows; caches, the pool.
        first = await timed(variants["validate"], server, backends, statements)
        for _ in range(WARMUP):
            for variant in variants.values():
                if variant.every == 1:  # not the warm rows: seconds each, the same code
                    await timed(variant, server, backends, statements)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        order = list(variants)
        for round_ in range(ROUNDS):
            shift = round_ % len(order)  # each variant takes each place in turn
            for name in order[shift:] + order[:shift]:
                if round_ % variants[name].every:
                    continue
                runs[name].append(await timed(variants[name], server, backends, statements))
        _progress(
            f"deployments: validate of {DEPLOYMENTS} "
            f"{median([r['elapsed_s'] for r in runs['validate']]) * 1000:.1f} ms, plain GETs "
            f"{median([r['elapsed_s'] for r in runs['plain']]) * 1000:.1f} ms"
        )
    finally:
        await idle.aclose()
        await engine.dispose()
        await server.stop()
    return {"deployments": DEPLOYMENTS, "setup_s": setup_s, "first": first, "runs": runs}


def run() -> dict[str, Any]:
    """A database of its own, migrated to head."""
    name, dsn, database_url = create_pg_database()
    try:
        migrate(database_url)
        return asyncio.run(measure(database_url, dsn))
    finally:
        drop_pg_database(name)


def _summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    def of(key: str) -> float:
        return median([r[key] for r in rs])

    return {
        "rounds": len(rs),
        "gets": rs[0]["gets"],
        "wall_median_ms": round(of("elapsed_s") * 1000, 2),
        "wall_p90_ms": round(p90([r["elapsed_s"] for r in rs]) * 1000, 2),
        "cpu_median_ms": round(of("cpu_s") * 1000, 1),
        "cpu_p90_ms": round(p90([r["cpu_s"] for r in rs]) * 1000, 1),
        "db_cpu_median_ms": round(of("db_cpu_s") * 1000, 1),
        "server_cpu_median_ms": round(of("server_cpu_s") * 1000, 1),
        "connections_opened_median": of("connections_opened"),
        "sql_statements_median": of("sql_statements"),
        "wall_ms_per_round": [round(r["elapsed_s"] * 1000, 1) for r in rs],
    }


def report(raw: dict[str, Any]) -> dict[str, Any]:
    s = {name: _summary(rs) for name, rs in raw["runs"].items()}

    def ratio(a: str, b: str, key: str = "wall_median_ms") -> float:
        return round(s[a][key] / s[b][key], 2)

    wall_ratio = ratio("validate", "plain")
    return {
        "deployments": raw["deployments"],
        "rounds_each": s["validate"]["rounds"],
        "pair_setup_s": round(raw["setup_s"], 2),
        "first_validation": {
            "wall_ms": round(raw["first"]["elapsed_s"] * 1000, 1),
            "cpu_ms": round(raw["first"]["cpu_s"] * 1000, 1),
            "sql_statements": raw["first"]["sql_statements"],
        },
        "ratio_median": wall_ratio,
        "ratio_p90": ratio("validate", "plain", "wall_p90_ms"),
        "cpu_ratio": ratio("validate", "plain", "cpu_median_ms"),
        "checks_ratio": ratio("checks", "plain"),
        "checks_cpu_ratio": ratio("checks", "plain", "cpu_median_ms"),
        "warm_ratio": ratio("validate_warm", "plain_warm"),
        "target_max_ratio": TARGET_RATIO,
        "meets_target": wall_ratio <= TARGET_RATIO,
        "variants": s,
    }


LABELS = {
    "validate": "Tandem: validate (GETs + record)",
    "checks": "  check_one x N only (no record)",
    "guarded": "  plain GETs through outbound.client()",
    "plain": "baseline: plain httpx GETs, one loop",
    "checks_bounded": f"  (reference: check_one x N, {BOUNDED} at a time)",
    "plain_bounded": f"  (reference: plain GETs, {BOUNDED} at a time)",
    "validate_warm": "validate, connections already open",
    "plain_warm": "plain GETs, connections already open",
    "record": "record() only: the pair's rows exist",
    "record_new": "record() only: a pair with no rows",
}


def render(fig: dict[str, Any]) -> list[str]:
    v = fig["variants"]
    rows: list[list[object]] = []
    for name, label in LABELS.items():
        r = v[name]
        rows.append(
            [
                label,
                r["gets"],
                f"{r['wall_median_ms']:.1f} ms",
                f"{r['wall_p90_ms']:.1f} ms",
                f"{r['cpu_median_ms']:.1f} ms",
                f"{r['db_cpu_median_ms']:.1f} ms",
                f"{r['server_cpu_median_ms']:.1f} ms",
                f"{r['connections_opened_median']:g}",
                f"{r['sql_statements_median']:g}",
            ]
        )
    rows.append(
        [
            "ratio validate / plain",
            "",
            f"{fig['ratio_median']:.2f}x",
            f"{fig['ratio_p90']:.2f}x",
            f"{fig['cpu_ratio']:.2f}x",
            "",
            "",
            "",
            "",
        ]
    )
    rows.append(
        [
            "ratio check_one only / plain",
            "",
            f"{fig['checks_ratio']:.2f}x",
            "",
            f"{fig['checks_cpu_ratio']:.2f}x",
            "",
            "",
            "",
            "",
        ]
    )
    first = fig["first_validation"]
    verdict = "met" if fig["meets_target"] else "MISSED"
    return [
        f"(g) deployments ({fig['deployments']} deployments of one pair, one GET each against "
        f"a loopback health server, all at once; {fig['rounds_each']} rounds each, "
        f"{fig['variants']['validate_warm']['rounds']} with connections already open; a new "
        "client per round on both sides, order rotating)",
        table(
            [
                "",
                "GETs",
                "wall median",
                "wall p90",
                "CPU/round",
                "PG server CPU",
                "health server CPU",
                "connections",
                "SQL",
            ],
            rows,
        ),
        f"target: validate / plain <= {fig['target_max_ratio']:g}x (median wall) -> {verdict} "
        f"({fig['ratio_median']:.2f}x; with connections already open "
        f"{fig['warm_ratio']:.2f}x)",
        f"first validation of the pair (warm-up, inserts its rows): {first['wall_ms']:.1f} ms, "
        f"{first['cpu_ms']:.1f} ms CPU, {first['sql_statements']} SQL statements; pair made "
        f"in {fig['pair_setup_s']:.2f} s",
    ]


def main() -> int:
    """`python -m bench.deployments`: (g) alone."""
    print("\n".join(render(report(run()))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
