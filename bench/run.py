"""`make bench`: one run against PostgreSQL + a real Redis, real API and worker processes.

(a) failover latency: `POST /v1/clusters/{id}/failover` (a fresh simulated pair per sample,
    step_delay_ms 0) until `GET /v1/operations/{id}?wait=30` says done, beside the round
    trip of a no-op arq job (enqueue, then `job.result()`) on the same Redis, with the same
    poll delay as Tandem's worker. Target: ratio at most 5x.
(b) throughput: `GET /v1/operations/{op}` beside `GET /healthz` on the same server, with the
    same concurrent client, runs interleaved. Target: at least 50%.
(c) webhooks: delivery throughput beside a plain loop of signed POSTs, and commit ->
    receipt latency beside (a)'s no-op round trip (see bench/webhooks.py).
(d) http steps: an operation of 7 `http` steps against a loopback runbook beside 7 signed
    httpx POSTs in a loop (see bench/http_step.py). Target: ratio at most 1.5x.
(e) readiness: one evaluation round of 1,000 pairs with one `check` each, in-process, on
    a database of its own, beside plain httpx GETs (see bench/readiness.py). Target:
    under 1 ms of Tandem CPU per check.
(f) metrics: `GET /metrics` with 1,000 pairs beside `GET /healthz`, and the bytes of a
    scrape (see bench/metrics.py).
(g) deployments: validating 200 deployments of one pair against a loopback health server,
    in-process, on a database of its own, beside 200 concurrent httpx GETs of the same URLs
    in one loop (see bench/deployments.py). Target: ratio at most 1.5x.
(h) the web page: a step's change, commit -> shown on the DR tab in Chromium, beside a
    plain SSE client on the same stream; and the tab's first-load bytes (see
    bench/ui_live.py). Targets: ratio at most 2x; under 100 KB.

Bounded in count and time; loopback only; prints a table and writes bench/results/latest.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from redis.asyncio import Redis

from app.config import Settings
from bench import deployments, http_step, metrics, readiness, ui_live, webhooks
from bench.procstat import MachineCpu, process_cpu_s, self_cpu_s
from bench.services import (
    clean_redis,
    create_pg_database,
    drop_pg_database,
    migrate,
    pick_redis_url,
    tandem_env,
)
from bench.stats import median, p95, summary_ms, table
from tests.stack import ROOT, Process, Stack

RESULTS = ROOT / "bench" / "results" / "latest.json"
# In the environment, so that `bench.webhooks` (which imports this module again when it
# runs as __main__) sees the same token.
BENCH_TOKEN = os.environ.setdefault("TANDEM_BENCH_TOKEN", "tdm_" + secrets.token_urlsafe(32))
AUTH = {"Authorization": f"Bearer {BENCH_TOKEN}"}

WARMUP = 3
LATENCY_SAMPLES = int(os.environ.get("BENCH_SAMPLES", "40"))
THROUGHPUT_REQUESTS = int(os.environ.get("BENCH_REQUESTS", "3000"))
THROUGHPUT_ROUNDS = 3
CONCURRENCY = 32
# Time bounds: sampling stops early (never below MIN_SAMPLES) when a budget is spent, and
# a throughput run ends at its request count or its budget, whichever comes first.
LATENCY_BUDGET_S = 55
MIN_SAMPLES = 10
RUN_BUDGET_S = 8
PHASE_TIMEOUT_S = 120  # hard stop for each phase

TARGET_LATENCY_RATIO = 5.0
TARGET_THROUGHPUT_RATIO = 0.5


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def pair_body() -> dict[str, Any]:
    name = f"bench-{uuid.uuid4().hex[:10]}"
    return {
        "name": name,
        "primary": {"name": f"{name}-east", "region": "us-east-1", "cloud": "aws"},
        "secondary": {"name": f"{name}-west", "region": "us-west-2", "cloud": "aws"},
        "driver": {"kind": "simulated", "step_delay_ms": 0},
        "deployments": [{"name": "api"}, {"name": "billing"}],
    }


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- (a) latency ----------------------------------------------------------------------


async def failover_sample(client: httpx.AsyncClient, pids: dict[str, int]) -> dict[str, Any]:
    response = await client.post("/v1/clusters", json=pair_body())
    response.raise_for_status()
    cluster_id = response.json()["id"]
    cpu0 = {name: process_cpu_s(pid) for name, pid in pids.items()}

    wall0, t0 = time.time(), time.perf_counter()
    response = await client.post(
        f"/v1/clusters/{cluster_id}/failover",
        json={"mode": "planned", "reason": "bench"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    if response.status_code != 202:
        raise RuntimeError(f"failover: {response.status_code} {response.text}")
    t_post = time.perf_counter()
    op_id = response.json()["id"]
    polls = 0
    while True:
        polls += 1
        response = await client.get(f"/v1/operations/{op_id}", params={"wait": 30})
        response.raise_for_status()
        operation = response.json()
        if operation["done"]:
            break
        if time.perf_counter() - t0 > 60:
            raise RuntimeError(f"operation {op_id} not done in 60 s: {operation['status']}")
    t_done = time.perf_counter()
    cpu = {f"cpu_{name}_s": process_cpu_s(pid) - cpu0[name] for name, pid in pids.items()}
    if operation["status"] != "succeeded":
        raise RuntimeError(f"operation {op_id} ended {operation['status']}: {operation['error']}")
    return {
        "op_id": op_id,
        "total_s": t_done - t0,
        "post_s": t_post - t0,
        "polls": polls,
        **cpu,
        "breakdown": _breakdown(operation, wall0, wall0 + (t_done - t0)),
    }


def _breakdown(op: dict[str, Any], wall0: float, wall_done: float) -> dict[str, float]:
    """Split POST..done into phases from the operation's own timestamps (same clock)."""
    steps = [s for s in op["steps"] if s["started_at"]]
    created, started, finished = (
        _ts(op["created_at"]),
        _ts(op["started_at"]),
        _ts(op["finished_at"]),
    )
    assert created and started and finished and steps
    runs = [_ts(s["finished_at"]) - _ts(s["started_at"]) for s in steps]  # type: ignore[operator]
    gaps = [
        _ts(b["started_at"]) - _ts(a["finished_at"])  # type: ignore[operator]
        for a, b in zip(steps, steps[1:], strict=False)
    ]
    return {
        "request_to_created": created - wall0,
        "created_to_started": started - created,
        "started_to_first_step": _ts(steps[0]["started_at"]) - started,  # type: ignore[operator]
        "step_runs": sum(runs),
        "between_steps": sum(gaps),
        "last_step_to_finished": finished - _ts(steps[-1]["finished_at"]),  # type: ignore[operator]
        "finished_to_client": wall_done - finished,
        "steps": len(steps),
    }


async def noop_sample(
    arq: ArqRedis, queue: str, job_prefix: str, n: int, pid: int
) -> dict[str, Any]:
    cpu0 = process_cpu_s(pid)
    t0 = time.perf_counter()
    job = await arq.enqueue_job("noop", _job_id=f"{job_prefix}{n}", _queue_name=queue)
    assert job is not None
    await job.result(timeout=30, poll_delay=Settings().worker_poll_delay_s)
    t1 = time.perf_counter()
    cpu = process_cpu_s(pid) - cpu0
    info = await job.result_info()
    pickup = (info.start_time - info.enqueue_time).total_seconds() if info else float("nan")
    return {"total_s": t1 - t0, "enqueue_to_start_s": pickup, "cpu_noop_worker_s": cpu}


async def probes(dsn: str, redis_url: str, rounds: int = 50) -> dict[str, Any]:
    """Round trips of the primitives an operation is built from."""
    out: dict[str, list[float]] = {"pg_select1": [], "pg_write_commit": [], "redis_ping": []}
    out["redis_publish"] = []
    conn = await asyncpg.connect(dsn)
    redis = Redis.from_url(redis_url)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_probe (id serial PRIMARY KEY, v int)")
        for i in range(rounds):
            t = time.perf_counter()
            await conn.execute("SELECT 1")
            out["pg_select1"].append(time.perf_counter() - t)
            t = time.perf_counter()
            await conn.execute("INSERT INTO bench_probe (v) VALUES ($1)", i)  # own commit
            out["pg_write_commit"].append(time.perf_counter() - t)
            t = time.perf_counter()
            await redis.ping()
            out["redis_ping"].append(time.perf_counter() - t)
            t = time.perf_counter()
            await redis.publish("bench:probe", "x")
            out["redis_publish"].append(time.perf_counter() - t)
        await conn.execute("DROP TABLE bench_probe")
    finally:
        await conn.close()
        await redis.aclose()
    return {name: summary_ms(values) for name, values in out.items()}


async def pg_counters(dsn: str, name: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted,"
            " tup_updated FROM pg_stat_database WHERE datname = $1",
            name,
        )
    finally:
        await conn.close()
    return dict(row) if row else {}


async def redis_publish_calls(redis_url: str) -> int:
    redis = Redis.from_url(redis_url)
    try:
        stats = await redis.info("commandstats")
    finally:
        await redis.aclose()
    return int(stats.get("cmdstat_publish", {}).get("calls", 0))


async def phase_latency(
    client: httpx.AsyncClient,
    redis_url: str,
    noop_queue: str,
    job_prefix: str,
    pg: dict[str, str],
    pids: dict[str, int],
) -> dict[str, Any]:
    tandem_pids = {"api": pids["api"], "worker": pids["worker"]}
    arq = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        # Warm-up (and wait for both workers to be up): not counted.
        await noop_sample(arq, noop_queue, job_prefix, -1, pids["noop"])
        for i in range(WARMUP):
            await failover_sample(client, tandem_pids)
            await noop_sample(arq, noop_queue, job_prefix, -2 - i, pids["noop"])

        await asyncio.sleep(1.2)  # let PostgreSQL flush its per-backend statistics
        pg_before = await pg_counters(pg["dsn"], pg["name"])
        pub_before = await redis_publish_calls(redis_url)
        failovers: list[dict[str, Any]] = []
        noops: list[dict[str, Any]] = []
        deadline = time.monotonic() + LATENCY_BUDGET_S
        for i in range(LATENCY_SAMPLES):
            if i >= MIN_SAMPLES and time.monotonic() > deadline:
                _progress(f"latency budget spent after {i} samples")
                break
            # Alternate which goes first, so drift on this noisy machine hits both alike.
            if i % 2 == 0:
                failovers.append(await failover_sample(client, tandem_pids))
                noops.append(await noop_sample(arq, noop_queue, job_prefix, i, pids["noop"]))
            else:
                noops.append(await noop_sample(arq, noop_queue, job_prefix, i, pids["noop"]))
                failovers.append(await failover_sample(client, tandem_pids))
        f_ms = median([s["total_s"] for s in failovers]) * 1000
        n_ms = median([s["total_s"] for s in noops]) * 1000
        _progress(f"{len(failovers)} failovers: median {f_ms:.1f} ms; arq no-op {n_ms:.1f} ms")
        pub_after = await redis_publish_calls(redis_url)
        await asyncio.sleep(1.2)
        pg_after = await pg_counters(pg["dsn"], pg["name"])
    finally:
        await arq.aclose()

    n = len(failovers)
    per_failover = {k: round((pg_after.get(k, 0) - pg_before.get(k, 0)) / n, 1) for k in pg_after}
    per_failover["redis_publish"] = round((pub_after - pub_before) / n, 1)
    return {"failovers": failovers, "noops": noops, "per_failover": per_failover}


# -- (b) throughput -------------------------------------------------------------------


async def hammer(
    client: httpx.AsyncClient, path: str, requests: int, budget_s: float
) -> dict[str, Any]:
    """GET `path` `requests` times over CONCURRENCY lanes, or until budget_s has passed."""
    remaining = requests
    done = errors = retried = 0
    t0 = time.perf_counter()
    deadline = t0 + budget_s

    async def one_lane() -> None:
        nonlocal remaining, done, errors, retried
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            try:
                response = await client.get(path)
            except httpx.TransportError:
                # A keep-alive connection the server closed as we sent on it: once more.
                retried += 1
                response = await client.get(path)
            done += 1
            if response.status_code != 200:
                errors += 1

    cpu_machine = MachineCpu.read()
    cpu_client = self_cpu_s()
    await asyncio.gather(*(one_lane() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - t0
    return {
        "requests": done,
        "errors": errors,
        "transport_retries": retried,
        "elapsed_s": round(elapsed, 3),
        "rps": round(done / elapsed, 1),
        "client_cpu_s": round(self_cpu_s() - cpu_client, 3),
        "machine_busy": round(MachineCpu.read().busy_fraction_since(cpu_machine), 3),
    }


async def phase_throughput(base_url: str, api_pid: int, op_id: str) -> dict[str, Any]:
    paths = {"healthz": "/healthz", "operation": f"/v1/operations/{op_id}"}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    runs: dict[str, list[dict[str, Any]]] = {"healthz": [], "operation": []}
    async with httpx.AsyncClient(
        base_url=base_url, timeout=30, limits=limits, headers=AUTH
    ) as client:
        for path in paths.values():  # warm-up: connections, caches
            await hammer(client, path, 200, RUN_BUDGET_S / 4)
        order = ["healthz", "operation"]
        for round_ in range(THROUGHPUT_ROUNDS):
            for name in order if round_ % 2 == 0 else order[::-1]:  # ABBAAB
                server_cpu = process_cpu_s(api_pid)
                result = await hammer(client, paths[name], THROUGHPUT_REQUESTS, RUN_BUDGET_S)
                result["server_cpu_ms_per_req"] = round(
                    (process_cpu_s(api_pid) - server_cpu) * 1000 / max(result["requests"], 1), 3
                )
                runs[name].append(result)
                _progress(f"{name}: {result['rps']:.0f} req/s ({result['elapsed_s']:.1f} s)")
    return runs


# -- the run --------------------------------------------------------------------------


async def measure(stack: Stack, env: dict[str, str], pg: dict[str, str], noop: Process) -> dict:
    redis_url = env["TANDEM_REDIS_URL"]
    results: dict[str, Any] = {"probes": await probes(pg["dsn"], redis_url)}
    assert stack.api is not None
    pids = {"api": stack.api.pid, "worker": stack.workers[0].pid, "noop": noop.pid}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, headers=AUTH) as client:
        results["latency"] = await asyncio.wait_for(
            phase_latency(client, redis_url, env["BENCH_QUEUE"], env["BENCH_JOB_PREFIX"], pg, pids),
            PHASE_TIMEOUT_S,
        )
    noop.kill(signal.SIGTERM)  # its 10 ms polling should not cost (b) anything
    assert stack.api is not None
    op_id = results["latency"]["failovers"][-1]["op_id"]
    results["throughput"] = await asyncio.wait_for(
        phase_throughput(stack.base_url, stack.api.pid, op_id), PHASE_TIMEOUT_S
    )
    # Before (c): (c) leaves a webhook endpoint that every later event would be sent to.
    results["http_step"] = await asyncio.wait_for(
        http_step.measure(stack.base_url, AUTH, stack.api.pid, pids["worker"], pg["dsn"]),
        PHASE_TIMEOUT_S,
    )
    results["webhooks"] = await asyncio.wait_for(
        webhooks.measure(
            stack.base_url, env["TANDEM_DATABASE_URL"], pg["dsn"], redis_url, pids["worker"]
        ),
        PHASE_TIMEOUT_S,
    )
    results["ui"] = await asyncio.wait_for(
        ui_live.measure(stack.base_url, BENCH_TOKEN), PHASE_TIMEOUT_S
    )
    # Last: it leaves 1,000 pairs in the database.
    results["metrics"] = await asyncio.wait_for(
        metrics.measure(stack.base_url, AUTH, env["TANDEM_DATABASE_URL"], stack.api.pid),
        PHASE_TIMEOUT_S,
    )
    return results


def report(raw: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    failovers, noops = raw["latency"]["failovers"], raw["latency"]["noops"]
    f_total = [s["total_s"] for s in failovers]
    n_total = [s["total_s"] for s in noops]
    ratio_median = median(f_total) / median(n_total)
    ratio_p95 = p95(f_total) / p95(n_total)

    runs = raw["throughput"]
    rps = {name: [r["rps"] for r in rs] for name, rs in runs.items()}
    per_round = [o / h for o, h in zip(rps["operation"], rps["healthz"], strict=True)]
    ratio_b = median(rps["operation"]) / median(rps["healthz"])

    phases = [k for k in failovers[0]["breakdown"] if k != "steps"]
    breakdown = {k: summary_ms([s["breakdown"][k] for s in failovers]) for k in phases}
    steps = failovers[0]["breakdown"]["steps"]

    cpu = {
        "api_per_failover_ms": round(
            sum(s["cpu_api_s"] for s in failovers) * 1000 / len(failovers), 1
        ),
        "worker_per_failover_ms": round(
            sum(s["cpu_worker_s"] for s in failovers) * 1000 / len(failovers), 1
        ),
        "arq_noop_worker_per_job_ms": round(
            sum(s["cpu_noop_worker_s"] for s in noops) * 1000 / len(noops), 1
        ),
    }
    figures = {
        "meta": meta,
        "a_latency": {
            "failover_post_to_done": summary_ms(f_total),
            "failover_post_202": summary_ms([s["post_s"] for s in failovers]),
            "arq_noop_round_trip": summary_ms(n_total),
            "arq_noop_enqueue_to_start": summary_ms([s["enqueue_to_start_s"] for s in noops]),
            "ratio_median": round(ratio_median, 2),
            "ratio_p95": round(ratio_p95, 2),
            "target_max_ratio": TARGET_LATENCY_RATIO,
            "meets_target": ratio_median <= TARGET_LATENCY_RATIO,
            "steps_per_failover": steps,
            "polls_per_failover_median": median([s["polls"] for s in failovers]),
        },
        "b_throughput": {
            "requests_per_run": THROUGHPUT_REQUESTS,
            "run_budget_s": RUN_BUDGET_S,
            "runs_each": THROUGHPUT_ROUNDS,
            "concurrency": CONCURRENCY,
            "healthz_rps_median": round(median(rps["healthz"]), 1),
            "operation_rps_median": round(median(rps["operation"]), 1),
            "ratio": round(ratio_b, 3),
            "ratio_per_round": [round(r, 3) for r in per_round],
            "target_min_ratio": TARGET_THROUGHPUT_RATIO,
            "meets_target": ratio_b >= TARGET_THROUGHPUT_RATIO,
            "runs": runs,
        },
        "c_webhooks": webhooks.report(raw["webhooks"], n_total),
        "d_http_step": http_step.report(raw["http_step"]),
        "e_readiness": readiness.report(raw["readiness"]),
        "f_metrics": metrics.report(raw["metrics"]),
        "g_deployments": deployments.report(raw["deployments"]),
        "h_ui": ui_live.report(raw["ui"]),
        "profile": {
            "failover_phases": breakdown,
            "per_failover_counters": raw["latency"]["per_failover"],
            "cpu": cpu,
            "primitives": raw["probes"],
        },
        "samples": {
            "failover_total_ms": [round(v * 1000, 3) for v in f_total],
            "arq_noop_total_ms": [round(v * 1000, 3) for v in n_total],
        },
    }
    return figures


def render(fig: dict[str, Any]) -> str:
    a, b, prof = fig["a_latency"], fig["b_throughput"], fig["profile"]
    meta = fig["meta"]

    def ms(summary: dict[str, Any], key: str) -> str:
        return f"{summary[key]:.1f} ms"

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    out = [
        f"Tandem bench  {meta['finished_at']}  ({meta['elapsed_s']:.0f} s, "
        f"{meta['cpus']} CPUs, PostgreSQL {meta['postgres']}, Redis db {meta['redis_db']}, "
        "1 API + 1 worker process)",
        "",
        "(a) latency",
        table(
            ["", "n", "median", "p95"],
            [
                [
                    f"failover POST -> done ({a['steps_per_failover']} steps)",
                    a["failover_post_to_done"]["n"],
                    ms(a["failover_post_to_done"], "median_ms"),
                    ms(a["failover_post_to_done"], "p95_ms"),
                ],
                [
                    "arq no-op: enqueue -> job.result()",
                    a["arq_noop_round_trip"]["n"],
                    ms(a["arq_noop_round_trip"], "median_ms"),
                    ms(a["arq_noop_round_trip"], "p95_ms"),
                ],
                [
                    "ratio failover / no-op",
                    "",
                    f"{a['ratio_median']:.1f}x",
                    f"{a['ratio_p95']:.1f}x",
                ],
            ],
        ),
        f"target: ratio <= {a['target_max_ratio']:.0f}x (median) -> {verdict(a['meets_target'])}",
        "",
        f"(b) throughput ({b['runs_each']} runs each of {b['requests_per_run']} requests or "
        f"{b['run_budget_s']} s, {b['concurrency']} concurrent, interleaved ABBAAB)",
        table(
            ["", "requests", "req/s median", "req/s per run", "server CPU/req"],
            [
                [
                    "GET /healthz",
                    sum(r["requests"] for r in b["runs"]["healthz"]),
                    f"{b['healthz_rps_median']:.0f}",
                    " ".join(f"{r['rps']:.0f}" for r in b["runs"]["healthz"]),
                    f"{median([r['server_cpu_ms_per_req'] for r in b['runs']['healthz']]):.2f} ms",
                ],
                [
                    "GET /v1/operations/{op}",
                    sum(r["requests"] for r in b["runs"]["operation"]),
                    f"{b['operation_rps_median']:.0f}",
                    " ".join(f"{r['rps']:.0f}" for r in b["runs"]["operation"]),
                    f"{median([r['server_cpu_ms_per_req'] for r in b['runs']['operation']]):.2f}"
                    " ms",
                ],
                [
                    "ratio operation / healthz",
                    "",
                    f"{b['ratio'] * 100:.0f}%",
                    " ".join(f"{r * 100:.0f}%" for r in b["ratio_per_round"]),
                    "",
                ],
            ],
        ),
        f"target: ratio >= {b['target_min_ratio'] * 100:.0f}% -> {verdict(b['meets_target'])}",
        "",
        *webhooks.render(fig["c_webhooks"]),
        "",
        *http_step.render(fig["d_http_step"]),
        "",
        *readiness.render(fig["e_readiness"]),
        "",
        *metrics.render(fig["f_metrics"]),
        "",
        *deployments.render(fig["g_deployments"]),
        "",
        *ui_live.render(fig["h_ui"]),
        "",
        "profile of one failover (medians over the samples, from the operation's timestamps)",
        table(
            ["phase", "median", "p95"],
            [[k, ms(v, "median_ms"), ms(v, "p95_ms")] for k, v in prof["failover_phases"].items()]
            + [
                ["(POST until 202 received)", ms(a["failover_post_202"], "median_ms"), ""],
                [
                    "(arq no-op enqueue -> start)",
                    ms(a["arq_noop_enqueue_to_start"], "median_ms"),
                    "",
                ],
            ],
        ),
        "",
        "per failover: "
        + ", ".join(f"{k} {v:g}" for k, v in prof["per_failover_counters"].items())
        + "  (PostgreSQL counters include the API's reads)",
        "CPU (from /proc): "
        + ", ".join(f"{k} {v:g}" for k, v in prof["cpu"].items())
        + "  (includes each arq worker's 10 ms queue polling during the sample)",
        "primitives (median, from the bench process): "
        + ", ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in prof["primitives"].items()),
        "",
        f"figures written to {RESULTS.relative_to(ROOT)}",
    ]
    return "\n".join(out)


def main() -> int:
    started = time.monotonic()
    token = secrets.token_hex(4)
    tmp = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    log_dir = tmp / "logs"
    log_dir.mkdir()
    print(f"bench: creating a PostgreSQL database, logs in {log_dir}", file=sys.stderr)
    db_name, dsn, database_url = create_pg_database()
    ok = False
    try:
        migrate(database_url)
        redis_url = pick_redis_url()
        queue = f"tandem:bench:{token}"
        env = {
            **tandem_env(database_url, redis_url, queue, tmp / "data", BENCH_TOKEN),
            "BENCH_REDIS_URL": redis_url,
            "BENCH_QUEUE": f"{queue}:noop",
            "BENCH_JOB_PREFIX": f"bench-{token}-",
            "BENCH_POLL_DELAY_S": str(Settings().worker_poll_delay_s),
        }
        stack = Stack(env, log_dir, workers=1)
        noop = Process(
            "noop-worker", [sys.executable, "-m", "bench.noop_worker"], stack.env, log_dir
        )
        try:
            stack.start()
            print(f"bench: stack up on {stack.base_url}; measuring", file=sys.stderr)
            raw = asyncio.run(measure(stack, env, {"dsn": dsn, "name": db_name}, noop))
        finally:
            noop.kill(signal.SIGTERM)
            stack.stop()
            clean_redis(redis_url, [f"{queue}*", f"arq:*{env['BENCH_JOB_PREFIX']}*"])
        # In this process with the stack stopped (its worker would evaluate these pairs
        # too, and its queue polling would cost CPU), on a database of its own.
        print("bench: readiness of many pairs", file=sys.stderr)
        raw["readiness"] = readiness.run()
        print("bench: deployments of one pair", file=sys.stderr)
        raw["deployments"] = deployments.run()
        meta = {
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "elapsed_s": round(time.monotonic() - started, 1),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "postgres": asyncio.run(_pg_version(dsn)),
            "redis_db": int(redis_url.rsplit("/", 1)[1]),
            "queue_name": queue,
            "worker_poll_delay_s": Settings().worker_poll_delay_s,
            "warmup_samples": WARMUP,
        }
        figures = report(raw, meta)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
        print(render(figures), flush=True)
        ok = True
        return 0
    finally:
        drop_pg_database(db_name)
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bench: failed; process logs kept in {log_dir}", file=sys.stderr)


async def _pg_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version")).split()[0]
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
