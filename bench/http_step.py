"""(d) the overhead of an `http` step, for `make bench` (also `python -m bench.http_step`).

Tandem: a failover of a pair whose plan is 7 `http` steps (the 4th the point of no
return, the three before it with an `http` undo, never called here), each POSTing to one
keep-alive loopback runbook (bench/runbook_server.py, its own process) that answers
`200 {}` at once. Run as in (a): the real API and worker processes on PostgreSQL + Redis,
a fresh pair per sample, timed from `POST /v1/clusters/{id}/failover` until
`GET /v1/operations/{op}?wait=30` says done. The pair's readiness is evaluated before the
clock starts (`GET .../readiness`), as the worker's periodic round would have done.

Beside it: 7 POSTs in one loop from one `httpx.AsyncClient` to the same runbook, each
body shaped and sized as the action's and signed with `app.webhooks.signing.headers`
(plus `Idempotency-Key` and `X-Tandem-Deadline`), each response parsed as JSON; timed
from the first send to the 7th response. Samples alternate which goes first.

Target: median operation / median loop <= 1.5x. The runbook's arrival times (one clock
for both) split the operation: POST -> first hook, first -> last hook (6 step-to-step
intervals, set against the loop's), last hook -> the client knows it is done.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.columns import new_id, utcnow
from app.webhooks import signing
from bench.procstat import process_cpu_s
from bench.runbook_server import Runbook
from bench.services import (
    clean_redis,
    create_pg_database,
    drop_pg_database,
    migrate,
    pick_redis_url,
    tandem_env,
)
from bench.stats import median, p90, summary_ms, table
from tests.stack import Stack

STEPS = 7
POINT_OF_NO_RETURN = 4  # 1-based; the steps before it have an undo
WARMUP = 3
SAMPLES = int(os.environ.get("BENCH_HTTP_STEP_SAMPLES", "30"))
MIN_SAMPLES = 10
BUDGET_S = 45  # sampling stops early (never below MIN_SAMPLES) once this is spent
OPERATION_TIMEOUT_S = 30

TARGET_RATIO = 1.5


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def plan(runbook: Runbook) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for n in range(1, STEPS + 1):
        step: dict[str, Any] = {
            "name": f"hook_{n}",
            "action": {"kind": "http", "url": runbook.url(f"/step/{n}")},
        }
        if n < POINT_OF_NO_RETURN:
            step["undo"] = {"kind": "http", "url": runbook.url(f"/undo/{n}")}
        if n == POINT_OF_NO_RETURN:
            step["point_of_no_return"] = True
        steps.append(step)
    return {"steps": steps}


async def new_pair(api: httpx.AsyncClient, runbook: Runbook) -> dict[str, Any]:
    name = f"bench-http-{uuid.uuid4().hex[:10]}"
    response = await api.post(
        "/v1/clusters",
        json={
            "name": name,
            "primary": {"name": f"{name}-east", "region": "us-east-1", "cloud": "aws"},
            "secondary": {"name": f"{name}-west", "region": "us-west-2", "cloud": "aws"},
            "plan": plan(runbook),
        },
    )
    if response.status_code != 201:
        raise RuntimeError(f"POST /v1/clusters: {response.status_code} {response.text}")
    pair: dict[str, Any] = response.json()
    response = await api.get(f"/v1/clusters/{pair['id']}/readiness")
    response.raise_for_status()
    if not response.json()["ready"]:
        raise RuntimeError(f"pair {pair['id']} is not ready: {response.text}")
    return pair


def _intervals(arrivals: list[float]) -> list[float]:
    return [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]


async def tandem_sample(
    api: httpx.AsyncClient, runbook: Runbook, pids: dict[str, int]
) -> dict[str, Any]:
    pair = await new_pair(api, runbook)
    cpu0 = {name: process_cpu_s(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    response = await api.post(
        f"/v1/clusters/{pair['id']}/failover",
        json={"mode": "planned", "reason": "bench"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    if response.status_code != 202:
        raise RuntimeError(f"failover: {response.status_code} {response.text}")
    t_post = time.monotonic()
    op_id = response.json()["id"]
    while True:
        response = await api.get(f"/v1/operations/{op_id}", params={"wait": 30})
        response.raise_for_status()
        operation = response.json()
        if operation["done"] or time.monotonic() - t0 > OPERATION_TIMEOUT_S:
            break
    t_done = time.monotonic()
    cpu = {name: process_cpu_s(pid) - cpu0[name] for name, pid in pids.items()}
    if operation["status"] != "succeeded":
        raise RuntimeError(f"operation {op_id} ended {operation['status']}: {operation['error']}")
    hooks = await runbook.wait_for(STEPS, f"{op_id}:", 5)
    if len(hooks) != STEPS or any(method != "POST" for method, *_ in hooks):
        raise RuntimeError(f"operation {op_id}: the runbook received {hooks}")
    arrivals = sorted(at for *_, at, _ in hooks)
    return {
        "op_id": op_id,
        "total_s": t_done - t0,
        "post_s": t_post - t0,
        "to_first_hook_s": arrivals[0] - t0,
        "hooks_span_s": arrivals[-1] - arrivals[0],
        "last_hook_to_done_s": t_done - arrivals[-1],
        "intervals_s": _intervals(arrivals),
        "body_bytes": median([size for *_, size in hooks]),
        "cpu_s": cpu,
        "pair": pair,
    }


def _body(op_id: str, pair: dict[str, Any], step: str) -> str:
    """What the action sends (app/actions/http.py), with this loop's values."""
    return json.dumps(
        {
            "operation_id": op_id,
            "pair_id": pair["id"],
            "pair": pair["name"],
            "step": step,
            "action": "do",
            "attempt": 1,
            "kind": "failover",
            "mode": "planned",
            "source": pair["primary"],
            "target": pair["secondary"],
            "params": None,
        },
        separators=(",", ":"),
    )


async def loop_sample(
    client: httpx.AsyncClient, runbook: Runbook, pair: dict[str, Any]
) -> dict[str, Any]:
    op_id = new_id("op")
    secret = pair["runbook_secret"]
    deadline = (datetime.now(UTC) + timedelta(seconds=300)).isoformat().replace("+00:00", "Z")
    t0 = time.monotonic()
    for n in range(1, STEPS + 1):
        key = f"{op_id}:hook_{n}:1"
        body = _body(op_id, pair, f"hook_{n}")
        headers = {
            **signing.headers(key, utcnow(), body, [secret]),
            "Idempotency-Key": key,
            "X-Tandem-Deadline": deadline,
            "user-agent": "Tandem-Runbook/1",
        }
        response = await client.post(runbook.url(f"/step/{n}"), content=body, headers=headers)
        response.raise_for_status()
        response.json()
    total = time.monotonic() - t0
    hooks = await runbook.wait_for(STEPS, f"{op_id}:", 5)
    if len(hooks) != STEPS:
        raise RuntimeError(f"loop {op_id}: the runbook received {len(hooks)} of {STEPS}")
    arrivals = sorted(at for *_, at, _ in hooks)
    return {
        "total_s": total,
        "hooks_span_s": arrivals[-1] - arrivals[0],
        "intervals_s": _intervals(arrivals),
        "body_bytes": median([size for *_, size in hooks]),
    }


async def _pg_commits(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return int(value or 0)


async def measure(
    base_url: str, auth: dict[str, str], api_pid: int, worker_pid: int, pg_dsn: str
) -> dict[str, Any]:
    runbook = await Runbook(log=True).start()
    pids = {"api": api_pid, "worker": worker_pid, "runbook": runbook.pid}
    tandem: list[dict[str, Any]] = []
    loop: list[dict[str, Any]] = []
    try:
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=60, headers=auth) as api,
            httpx.AsyncClient(timeout=30) as client,
        ):
            for _ in range(WARMUP):  # connections, caches, the worker's first jobs
                sample = await tandem_sample(api, runbook, pids)
                await loop_sample(client, runbook, sample["pair"])
            await asyncio.sleep(1.2)  # let PostgreSQL flush its per-backend statistics
            commits0 = await _pg_commits(pg_dsn)
            deadline = time.monotonic() + BUDGET_S
            for i in range(SAMPLES):
                if i >= MIN_SAMPLES and time.monotonic() > deadline:
                    _progress(f"http step budget spent after {i} samples")
                    break
                if i % 2 == 0:
                    tandem.append(await tandem_sample(api, runbook, pids))
                    loop.append(await loop_sample(client, runbook, tandem[-1]["pair"]))
                else:
                    pair = await new_pair(api, runbook)
                    loop.append(await loop_sample(client, runbook, pair))
                    tandem.append(await tandem_sample(api, runbook, pids))
            await asyncio.sleep(1.2)
            commits = await _pg_commits(pg_dsn) - commits0
    finally:
        await runbook.stop()
    _progress(
        f"http steps: {len(tandem)} operations, median "
        f"{median([s['total_s'] for s in tandem]) * 1000:.1f} ms; loop of {STEPS} POSTs "
        f"{median([s['total_s'] for s in loop]) * 1000:.1f} ms"
    )
    return {"tandem": tandem, "loop": loop, "pg_commits": commits}


def report(raw: dict[str, Any]) -> dict[str, Any]:
    tandem, loop = raw["tandem"], raw["loop"]
    n = len(tandem)
    t_total = [s["total_s"] for s in tandem]
    l_total = [s["total_s"] for s in loop]
    t_step = [i for s in tandem for i in s["intervals_s"]]
    l_step = [i for s in loop for i in s["intervals_s"]]
    ratio = median(t_total) / median(l_total)

    def cpu_ms(name: str) -> float:
        return round(sum(float(s["cpu_s"][name]) for s in tandem) * 1000 / n, 1)

    return {
        "steps": STEPS,
        "samples": n,
        "body_bytes": {"tandem": tandem[0]["body_bytes"], "loop": loop[0]["body_bytes"]},
        "operation_post_to_done": summary_ms(t_total),
        "loop_of_posts": summary_ms(l_total),
        "ratio_median": round(ratio, 2),
        "ratio_p90": round(p90(t_total) / p90(l_total), 2),
        "target_max_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "step_to_step": {
            "tandem": summary_ms(t_step),
            "loop": summary_ms(l_step),
            "ratio_median": round(median(t_step) / median(l_step), 2),
        },
        "phases": {
            "post_until_202": summary_ms([s["post_s"] for s in tandem]),
            "post_to_first_hook": summary_ms([s["to_first_hook_s"] for s in tandem]),
            "first_to_last_hook": summary_ms([s["hooks_span_s"] for s in tandem]),
            "last_hook_to_client_done": summary_ms([s["last_hook_to_done_s"] for s in tandem]),
        },
        "per_operation": {
            "worker_cpu_ms": cpu_ms("worker"),
            "api_cpu_ms": cpu_ms("api"),
            "runbook_cpu_ms": cpu_ms("runbook"),
            # Every commit in the database while sampling (the loop makes none) over the
            # operations: pair creation, readiness, API reads and the worker's sweeps too.
            "pg_commits_incl_pair_setup": round(raw["pg_commits"] / n, 1),
        },
        "samples_ms": {
            "tandem": [round(v * 1000, 3) for v in t_total],
            "loop": [round(v * 1000, 3) for v in l_total],
        },
    }


def render(fig: dict[str, Any]) -> list[str]:
    op, lp, steps, ph = (
        fig["operation_post_to_done"],
        fig["loop_of_posts"],
        fig["step_to_step"],
        fig["phases"],
    )
    per = fig["per_operation"]

    def row(label: str, s: dict[str, Any]) -> list[object]:
        return [label, s["n"], f"{s['median_ms']:.1f} ms", f"{s['p90_ms']:.1f} ms"]

    verdict = "met" if fig["meets_target"] else "MISSED"
    return [
        f"(d) http steps ({fig['samples']} samples each, {fig['steps']} steps, one loopback "
        f"runbook answering 200 {{}}, keep-alive, {fig['body_bytes']['tandem']:.0f}-byte "
        f"bodies (loop {fig['body_bytes']['loop']:.0f}), alternating)",
        table(
            ["", "n", "median", "p90"],
            [
                row(f"operation of {fig['steps']} http steps: POST -> done", op),
                row(f"loop: {fig['steps']} signed httpx POSTs", lp),
                ["ratio operation / loop", "", f"{fig['ratio_median']:.1f}x", ""],
                row("  operation: POST -> 202", ph["post_until_202"]),
                row("  operation: POST -> first hook received", ph["post_to_first_hook"]),
                row("  operation: first -> last hook received", ph["first_to_last_hook"]),
                row("  operation: last hook -> client sees done", ph["last_hook_to_client_done"]),
                row("step to step (hook arrivals): operation", steps["tandem"]),
                row("step to step (hook arrivals): loop", steps["loop"]),
                ["ratio step to step", "", f"{steps['ratio_median']:.1f}x", ""],
            ],
        ),
        f"target: ratio <= {fig['target_max_ratio']:g}x (median) -> {verdict}",
        f"per operation: worker CPU {per['worker_cpu_ms']:g} ms, API CPU {per['api_cpu_ms']:g}"
        f" ms, runbook CPU {per['runbook_cpu_ms']:g} ms, PostgreSQL commits "
        f"{per['pg_commits_incl_pair_setup']:g} (every commit in the database while sampling: "
        "the pair's creation and readiness, the API's reads and the worker's sweeps too)",
    ]


def main() -> int:
    """`python -m bench.http_step`: (d) alone, on a stack of its own."""
    token = "tdm_" + secrets.token_urlsafe(32)
    tmp = Path(tempfile.mkdtemp(prefix="tandem-bench-http-"))
    log_dir = tmp / "logs"
    log_dir.mkdir()
    _progress(f"creating a PostgreSQL database, logs in {log_dir}")
    db_name, dsn, database_url = create_pg_database()
    ok = False
    try:
        migrate(database_url)
        redis_url = pick_redis_url()
        queue = f"tandem:bench:{secrets.token_hex(4)}"
        env = tandem_env(database_url, redis_url, queue, tmp / "data", token)
        stack = Stack(env, log_dir, workers=1)
        try:
            stack.start()
            assert stack.api is not None
            raw = asyncio.run(
                measure(
                    stack.base_url,
                    {"Authorization": f"Bearer {token}"},
                    stack.api.pid,
                    stack.workers[0].pid,
                    dsn,
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
