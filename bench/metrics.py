"""(f) `GET /metrics` with 1,000 pairs, for `make bench` (also `python -m bench.metrics`).

1,000 pairs made through the service layer (`app.clusters.service.create`, 250 per
transaction) in the bench token's organization, each with RTO and RPO targets and a
readiness evaluation on record (one UPDATE, the shape the worker records). Then
`GET /metrics` beside `GET /healthz` on the same API process, one request at a time
from one keep-alive client, in runs interleaved ABBA...: latency per request, the API
process's CPU per request, and the size of a scrape (bytes, samples). In this process,
`app.metrics.service.read` (the database's part: two queries), the writing of what it read
(`exposition`) and, for comparison, the same families written by prometheus-client's
`generate_latest` are timed apart. The issue sets no target: the figures are reported.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

import app.tables  # noqa: F401  (every table on the metadata)
from app.access.auth import hash_token
from app.access.models import ApiToken
from app.clusters import service as clusters
from app.clusters.models import Cluster
from app.clusters.schemas import ClusterCreate
from app.columns import utcnow
from app.db import create_engine, session_factory, unit_of_work
from app.metrics import service as metrics
from bench.procstat import process_cpu_s
from bench.services import (
    clean_redis,
    create_pg_database,
    drop_pg_database,
    migrate,
    pick_redis_url,
)
from bench.stats import median, p95, table
from tests.stack import Stack

PAIRS = int(os.environ.get("BENCH_METRICS_PAIRS", "1000"))
CREATE_BATCH = 250  # pairs per transaction
ROUNDS = int(os.environ.get("BENCH_METRICS_ROUNDS", "4"))  # runs of each, ABBA
REQUESTS = int(os.environ.get("BENCH_METRICS_REQUESTS", "25"))  # per run
IN_PROCESS = 20  # reads and renderings timed in this process


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def pair(i: int) -> ClusterCreate:
    name = f"metrics-{i:05d}"
    return ClusterCreate.model_validate(
        {
            "name": name,
            "primary": {"name": f"{name}-east", "region": "us-east-1", "cloud": "aws"},
            "secondary": {"name": f"{name}-west", "region": "us-west-2", "cloud": "gcp"},
            "driver": {"kind": "simulated"},
            "deployments": [{"name": "api"}, {"name": "billing"}],
            "rto_target_s": 900,
            "rpo_target_s": 60,
        }
    )


async def org_of(sessions: async_sessionmaker[AsyncSession], token: str) -> str:
    async with unit_of_work(sessions) as session:
        org_id = await session.scalar(
            select(col(ApiToken.org_id)).where(col(ApiToken.token_hash) == hash_token(token))
        )
    assert org_id is not None, "the bench token is not registered"
    return str(org_id)


async def make_pairs(sessions: async_sessionmaker[AsyncSession], org_id: str) -> float:
    t0 = time.perf_counter()
    for start in range(0, PAIRS, CREATE_BATCH):
        async with unit_of_work(sessions) as session:
            for i in range(start, min(start + CREATE_BATCH, PAIRS)):
                await clusters.create(session, org_id, pair(i))
    checks = [
        {"step": "preflight", "name": f"check:{n}", "ok": True, "detail": None, "duration_ms": 3}
        for n in range(2)
    ]
    async with unit_of_work(sessions) as session:
        now = utcnow()
        await session.execute(
            update(Cluster)
            .where(col(Cluster.org_id) == org_id)
            .values(
                readiness={"ready": True, "checked_at": now.isoformat(), "checks": checks},
                readiness_checked_at=now,
            )
            .execution_options(synchronize_session=False)
        )
    return time.perf_counter() - t0


async def run_of(client: httpx.AsyncClient, path: str, api_pid: int) -> dict[str, Any]:
    latencies = []
    size = 0
    cpu0 = process_cpu_s(api_pid)
    for _ in range(REQUESTS):
        t = time.perf_counter()
        response = await client.get(path)
        latencies.append(time.perf_counter() - t)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")
        size = len(response.content)
    cpu = process_cpu_s(api_pid) - cpu0
    return {
        "median_ms": round(median(latencies) * 1000, 3),
        "p95_ms": round(p95(latencies) * 1000, 3),
        "server_cpu_ms_per_req": round(cpu * 1000 / REQUESTS, 3),
        "bytes": size,
    }


def with_prometheus_client(text: str) -> float:
    """Seconds prometheus-client's `generate_latest` takes to write the same families."""
    families = list(text_string_to_metric_families(text))

    class Parsed:
        def collect(self) -> list[Metric]:
            return families

    t = time.perf_counter()
    generate_latest(Parsed())
    return time.perf_counter() - t


async def in_process(database_url: str, org_id: str) -> dict[str, Any]:
    """The database's part and the writing's, timed apart in this process."""
    engine = create_engine(database_url, pool_size=2)
    sessions = session_factory(engine)
    reads, writes, baseline = [], [], []
    try:
        for _ in range(IN_PROCESS):
            async with unit_of_work(sessions) as session:
                t = time.perf_counter()
                snapshot = await metrics.read(session, org_id)
                reads.append(time.perf_counter() - t)
            t = time.perf_counter()
            text = metrics.exposition(snapshot)
            writes.append(time.perf_counter() - t)
            baseline.append(with_prometheus_client(text))
    finally:
        await engine.dispose()
    return {
        "read_median_ms": round(median(reads) * 1000, 3),
        "render_median_ms": round(median(writes) * 1000, 3),
        "generate_latest_median_ms": round(median(baseline) * 1000, 3),
    }


async def measure(
    base_url: str, headers: dict[str, str], database_url: str, api_pid: int
) -> dict[str, Any]:
    engine = create_engine(database_url, pool_size=2)
    sessions = session_factory(engine)
    try:
        org_id = await org_of(sessions, headers["Authorization"].removeprefix("Bearer "))
        setup_s = await make_pairs(sessions, org_id)
    finally:
        await engine.dispose()
    _progress(f"{PAIRS} pairs made in {setup_s:.1f} s; /metrics beside /healthz")

    runs: dict[str, list[dict[str, Any]]] = {"metrics": [], "healthz": []}
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=headers) as client:
        text = (await client.get("/metrics")).text
        for path in ("/metrics", "/healthz"):  # warm-up
            for _ in range(5):
                await client.get(path)
        order = ["metrics", "healthz"]
        for round_ in range(ROUNDS):
            for name in order if round_ % 2 == 0 else order[::-1]:
                runs[name].append(await run_of(client, f"/{name}", api_pid))
    families = list(text_string_to_metric_families(text))
    return {
        "pairs": PAIRS,
        "setup_s": round(setup_s, 2),
        "runs": runs,
        "families": len(families),
        "samples": sum(len(f.samples) for f in families),
        "pair_samples": sum(len(f.samples) for f in families if f.name.startswith("tandem_pair")),
        "in_process": await in_process(database_url, org_id),
    }


def report(raw: dict[str, Any]) -> dict[str, Any]:
    runs = raw["runs"]

    def of(name: str, key: str) -> float:
        return median([r[key] for r in runs[name]])

    return {
        "pairs": raw["pairs"],
        "requests_per_run": REQUESTS,
        "runs_each": len(runs["metrics"]),
        "metrics_median_ms": of("metrics", "median_ms"),
        "metrics_p95_ms": of("metrics", "p95_ms"),
        "healthz_median_ms": of("healthz", "median_ms"),
        "healthz_p95_ms": of("healthz", "p95_ms"),
        "ratio_median": round(of("metrics", "median_ms") / of("healthz", "median_ms"), 1),
        "metrics_server_cpu_ms_per_req": of("metrics", "server_cpu_ms_per_req"),
        "healthz_server_cpu_ms_per_req": of("healthz", "server_cpu_ms_per_req"),
        "metrics_bytes": runs["metrics"][-1]["bytes"],
        "healthz_bytes": runs["healthz"][-1]["bytes"],
        "families": raw["families"],
        "samples": raw["samples"],
        "pair_samples": raw["pair_samples"],
        "read_median_ms": raw["in_process"]["read_median_ms"],
        "render_median_ms": raw["in_process"]["render_median_ms"],
        "generate_latest_median_ms": raw["in_process"]["generate_latest_median_ms"],
        "pairs_setup_s": raw["setup_s"],
        "runs": runs,
    }


def render(fig: dict[str, Any]) -> list[str]:
    runs = fig["runs"]
    rows: list[list[object]] = [
        [
            f"GET /metrics ({fig['pairs']} pairs)",
            f"{fig['metrics_median_ms']:.2f} ms",
            f"{fig['metrics_p95_ms']:.2f} ms",
            " ".join(f"{r['median_ms']:.1f}" for r in runs["metrics"]),
            f"{fig['metrics_server_cpu_ms_per_req']:.2f} ms",
            f"{fig['metrics_bytes']:,}",
        ],
        [
            "GET /healthz",
            f"{fig['healthz_median_ms']:.2f} ms",
            f"{fig['healthz_p95_ms']:.2f} ms",
            " ".join(f"{r['median_ms']:.1f}" for r in runs["healthz"]),
            f"{fig['healthz_server_cpu_ms_per_req']:.2f} ms",
            f"{fig['healthz_bytes']:,}",
        ],
        ["ratio /metrics / /healthz", f"{fig['ratio_median']:.1f}x", "", "", "", ""],
    ]
    return [
        f"(f) /metrics with {fig['pairs']} pairs ({fig['runs_each']} runs each of "
        f"{fig['requests_per_run']} requests, one at a time, interleaved ABBA)",
        table(
            ["", "median", "p95", "median per run", "server CPU/req", "bytes"],
            rows,
        ),
        f"a scrape: {fig['families']} families, {fig['samples']} samples "
        f"({fig['pair_samples']} per pair); in this process: read (2 queries) "
        f"{fig['read_median_ms']:.1f} ms, written {fig['render_median_ms']:.1f} ms "
        f"(by prometheus-client's generate_latest: {fig['generate_latest_median_ms']:.1f} ms); "
        f"pairs made in {fig['pairs_setup_s']:.1f} s",
    ]


def main() -> int:
    """`python -m bench.metrics`: (f) alone, on a stack of its own."""
    token = "tdm_" + secrets.token_urlsafe(32)
    tmp = Path(tempfile.mkdtemp(prefix="tandem-bench-metrics-"))
    log_dir = tmp / "logs"
    log_dir.mkdir()
    _progress(f"creating a PostgreSQL database, logs in {log_dir}")
    db_name, _dsn, database_url = create_pg_database()
    ok = False
    try:
        migrate(database_url)
        redis_url = pick_redis_url()
        queue = f"tandem:bench:{secrets.token_hex(4)}"
        env = {
            "TANDEM_DATABASE_URL": database_url,
            "TANDEM_REDIS_URL": redis_url,
            "TANDEM_QUEUE_NAME": queue,
            "TANDEM_DATA_DIR": str(tmp / "data"),
            "TANDEM_LOG_LEVEL": "info",
            # The first API start registers it as the admin token the bench uses.
            "TANDEM_BOOTSTRAP_TOKEN": token,
            "TANDEM_RATE_LIMIT_PER_MINUTE": "1000000",
        }
        stack = Stack(env, log_dir, workers=1)
        try:
            stack.start()
            assert stack.api is not None
            raw = asyncio.run(
                measure(
                    stack.base_url,
                    {"Authorization": f"Bearer {token}"},
                    database_url,
                    stack.api.pid,
                )
            )
        finally:
            stack.stop()
            clean_redis(redis_url, [f"{queue}*"])
        print("\n".join(render(report(raw))), flush=True)
        ok = True
        return 0
    finally:
        drop_pg_database(db_name)
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _progress(f"failed; process logs kept in {log_dir}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up on SIGTERM too
    sys.exit(main())
