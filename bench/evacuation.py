"""(i) A region's evacuation, for `make bench` (also `python -m bench.evacuation`).

Each run is a stack of its own (PostgreSQL database, Redis names, an API process and N
worker processes) with 1,000 pairs registered through the service layer (250 per
transaction), all primary in the region, then one `POST /v1/regions/{region}/evacuate`
until `GET /v1/batches/{id}` says done:

- zero-delay simulated steps, max_parallel 1,000, with 1 and then 2 worker processes:
  operations per second (1,000 / the batch's wall time) and the workers' CPU per
  failover (their CPU time over the run / 1,000). Targets: 2 workers >= 1.6x the
  operations per second of 1; <= 15 ms of worker CPU per failover.
- steps of 200 ms (the plan's 7 steps: 1.4 s a failover), max_parallel 100, 2 workers:
  the batch's wall time against the ideal (1,000 / 100 x 1.4 s = 14 s). Target <= 1.5x.

BENCH_EVACUATION_PAIRS changes the 1,000 (a quick look: 200).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import app.tables  # noqa: F401  (every table on the metadata)
from app.clusters import service as clusters
from app.clusters.schemas import ClusterCreate
from app.db import create_engine, session_factory, unit_of_work
from bench.metrics import org_of
from bench.procstat import process_cpu_s
from bench.services import own_stack
from bench.stats import table

PAIRS = int(os.environ.get("BENCH_EVACUATION_PAIRS", "1000"))
CREATE_BATCH = 250
REGION = "bench-east"
STEPS = 7
TARGET_SCALING = 1.6
TARGET_CPU_MS = 15.0
TARGET_WALL_RATIO = 1.5


def _progress(message: str) -> None:
    print(f"[bench.evacuation] {message}", file=sys.stderr, flush=True)


def pair(i: int, step_delay_ms: int) -> ClusterCreate:
    name = f"evac-{i:05d}"
    return ClusterCreate.model_validate(
        {
            "name": name,
            "primary": {"name": f"{name}-a", "region": REGION, "cloud": "aws"},
            "secondary": {"name": f"{name}-b", "region": "bench-west", "cloud": "aws"},
            "driver": {"kind": "simulated", "step_delay_ms": step_delay_ms},
        }
    )


async def make_pairs(
    sessions: async_sessionmaker[AsyncSession], org_id: str, step_delay_ms: int
) -> None:
    for start in range(0, PAIRS, CREATE_BATCH):
        async with unit_of_work(sessions) as session:
            for i in range(start, min(start + CREATE_BATCH, PAIRS)):
                await clusters.create(session, org_id, pair(i, step_delay_ms))


async def evacuate(base_url: str, token: str, max_parallel: int) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=auth, timeout=60) as client:
        t0 = time.perf_counter()
        answer = await client.post(
            f"/v1/regions/{REGION}/evacuate",
            json={"max_parallel": max_parallel, "reason": "bench"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        answer.raise_for_status()
        batch_id = answer.json()["id"]
        while True:
            batch = (await client.get(f"/v1/batches/{batch_id}", params={"page_size": 1})).json()
            if batch["done"]:
                break
            await asyncio.sleep(0.2)
        wall = time.perf_counter() - t0
    if batch["counts"]["succeeded"] != PAIRS:
        raise RuntimeError(f"the batch did not move every pair: {batch['counts']}")
    return {"wall_s": wall, "counts": batch["counts"]}


def one_run(workers: int, step_delay_ms: int, max_parallel: int) -> dict[str, Any]:
    # Every operation of the batch at once if max_parallel allows it.
    with own_stack("evacuation", workers, TANDEM_WORKER_MAX_JOBS="1000") as own:

        async def prepare() -> None:
            engine = create_engine(own.database_url)
            sessions = session_factory(engine)
            await make_pairs(sessions, await org_of(sessions, own.token), step_delay_ms)
            await engine.dispose()

        asyncio.run(prepare())
        cpu0 = sum(process_cpu_s(w.pid) for w in own.stack.workers)
        result = asyncio.run(evacuate(own.stack.base_url, own.token, max_parallel))
        result["worker_cpu_s"] = sum(process_cpu_s(w.pid) for w in own.stack.workers) - cpu0
        return result


def measure() -> dict[str, Any]:
    runs = {}
    for workers in (1, 2):
        _progress(f"{PAIRS} zero-delay failovers, {workers} worker(s)")
        runs[f"zero_{workers}"] = one_run(workers, 0, 1000)
    _progress(f"{PAIRS} failovers of 7 x 200 ms steps, max_parallel 100, 2 workers")
    runs["slow_2"] = one_run(2, 200, 100)
    return runs


def report(raw: dict[str, Any]) -> dict[str, Any]:
    one, two, slow = raw["zero_1"], raw["zero_2"], raw["slow_2"]
    ops = {n: PAIRS / raw[f"zero_{n}"]["wall_s"] for n in (1, 2)}
    cpu_ms = {n: raw[f"zero_{n}"]["worker_cpu_s"] / PAIRS * 1000 for n in (1, 2)}
    ideal = PAIRS / 100 * STEPS * 0.2
    return {
        "pairs": PAIRS,
        "ops_per_s": ops,
        "scaling": ops[2] / ops[1],
        "met_scaling": ops[2] / ops[1] >= TARGET_SCALING,
        "worker_cpu_ms_per_failover": cpu_ms,
        "met_cpu": cpu_ms[1] <= TARGET_CPU_MS,
        "wall_s": {"zero_1": one["wall_s"], "zero_2": two["wall_s"], "slow_2": slow["wall_s"]},
        "slow_ideal_s": ideal,
        "slow_ratio": slow["wall_s"] / ideal,
        "met_wall": slow["wall_s"] / ideal <= TARGET_WALL_RATIO,
    }


def render(fig: dict[str, Any]) -> list[str]:
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    return [
        f"(i) evacuation of {fig['pairs']} pairs",
        table(
            ["workers", "wall s", "operations/s", "worker CPU ms / failover"],
            [
                [
                    str(n),
                    f"{fig['wall_s'][f'zero_{n}']:.1f}",
                    f"{fig['ops_per_s'][n]:.1f}",
                    f"{fig['worker_cpu_ms_per_failover'][n]:.1f}",
                ]
                for n in (1, 2)
            ],
        ),
        f"    2 workers / 1: {fig['scaling']:.2f}x, target >= {TARGET_SCALING}x: "
        + verdict(fig["met_scaling"]),
        f"    worker CPU per failover (1 worker): {fig['worker_cpu_ms_per_failover'][1]:.1f} ms,"
        f" target <= {TARGET_CPU_MS} ms: " + verdict(fig["met_cpu"]),
        f"    7 x 200 ms steps, max_parallel 100: {fig['wall_s']['slow_2']:.1f} s against an "
        f"ideal {fig['slow_ideal_s']:.1f} s = {fig['slow_ratio']:.2f}x, target <= "
        f"{TARGET_WALL_RATIO}x: " + verdict(fig["met_wall"]),
    ]


def main() -> int:
    print("\n".join(render(report(measure()))), flush=True)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up on SIGTERM too
    sys.exit(main())
