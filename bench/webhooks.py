"""(c) webhook delivery, for `make bench` (called from bench/run.py).

One receiver for everything: a minimal asyncio HTTP/1.1 server with keep-alive in a
subprocess (`python -m bench.webhooks`), which writes `<webhook-id> <time.monotonic()>
<body bytes>` to a pipe for every request it has read whole. CLOCK_MONOTONIC is one clock
for the whole machine, so its arrival times compare with the bench process's own.

1. throughput: N events appended through the service layer (`emit_event`, batches, one
   commit each) on one pair, delivered by the worker's dispatcher to one standard
   endpoint; first commit -> last receipt. Beside: a plain loop of signed httpx POSTs
   (one AsyncClient, sequential `await client.post`, same body size) to the same
   receiver; first POST -> last receipt. Interleaved ABBA. Target: at least 50%.
2. latency: one event per commit, time from right after the commit to its receipt,
   beside the median arq no-op round trip measured in (a). Target: median under 5x.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis
from sqlalchemy import select
from sqlmodel import col

from app.columns import new_id, utcnow
from app.config import Settings
from app.db import create_engine, run_after_commit, session_factory
from app.events.models import Event
from app.events.notify import events_channel
from app.events.service import emit_event
from app.webhooks import signing
from app.webhooks.delivery import standard_body
from app.webhooks.models import WebhookAttempt, WebhookDelivery
from bench.procstat import process_cpu_s, self_cpu_s
from bench.stats import median, summary_ms, table
from tests.stack import ROOT

EVENTS_PER_RUN = int(os.environ.get("BENCH_WEBHOOK_EVENTS", "1000"))
BATCH = 100  # events per commit
ROUNDS = 2  # each of Tandem and the loop, ABBA
RUN_TIMEOUT_S = 20  # per run: whatever arrived by then counts
LATENCY_SAMPLES = int(os.environ.get("BENCH_WEBHOOK_SAMPLES", "40"))
LATENCY_PAUSE_S = 0.05
LATENCY_BUDGET_S = 15
MIN_SAMPLES = 10

TARGET_THROUGHPUT_RATIO = 0.5
TARGET_LATENCY_RATIO = 5.0

_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- the receiver (its own process) --------------------------------------------------


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    out = sys.stdout.buffer
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length, message_id = 0, "-"
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"webhook-id":
                    message_id = value.strip().decode()
            body = await reader.readexactly(length) if length else b""
            at = time.monotonic()
            writer.write(_RESPONSE)
            out.write(f"{message_id} {at!r} {len(body)}\n".encode())
            out.flush()
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve() -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.buffer.write(f"port {port}\n".encode())
    sys.stdout.buffer.flush()
    loop = asyncio.get_running_loop()
    stdin_closed = asyncio.Event()  # the bench went away: so do we
    loop.add_reader(sys.stdin.fileno(), stdin_closed.set)
    async with server:
        await stdin_closed.wait()


class Arrivals:
    """The receiver subprocess, and what it has seen: webhook-id -> (monotonic, bytes)."""

    def __init__(self) -> None:
        self.at: dict[str, tuple[float, int]] = {}
        self.port = 0
        self._changed = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def start(self) -> Arrivals:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.webhooks",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 30)
        self.port = int(line.split()[1])
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for line in self._proc.stdout:
            message_id, at, size = line.decode().split()
            self.at[message_id] = (float(at), int(size))
            self._changed.set()

    async def wait_all(self, ids: list[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        pending = [i for i in ids if i not in self.at]
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
            pending = [i for i in pending if i not in self.at]
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()


# -- the bench side ------------------------------------------------------------------


def _data(i: int) -> dict[str, Any]:
    """Shaped like the executor's operation.step_changed."""
    return {
        "operation_id": f"op_bench{i:018d}",
        "step": "promote_secondary",
        "status": "succeeded",
        "attempt": 1,
        "error": None,
    }


async def _commit(session: Any) -> float:
    """Commit, take the time right after, then the after-commit work (the Redis publish)."""
    await session.commit()
    at = time.monotonic()
    await run_after_commit(session)
    return at


async def tandem_run(
    sessions: Any, cluster_id: str, arrivals: Arrivals, n: int, worker_pid: int, pg_dsn: str
) -> dict[str, Any]:
    ids: list[str] = []
    first_commit: float | None = None
    counters0 = await _pg_commits(pg_dsn)
    cpu0 = process_cpu_s(worker_pid)
    t_emit = time.monotonic()
    for start in range(0, n, BATCH):
        async with sessions() as session:
            for i in range(start, min(start + BATCH, n)):
                event = await emit_event(session, cluster_id, "operation.step_changed", _data(i))
                ids.append(event.id)
            at = await _commit(session)
        first_commit = first_commit or at
    emit_s = time.monotonic() - t_emit
    assert first_commit is not None
    complete = await arrivals.wait_all(ids, RUN_TIMEOUT_S)
    got = [arrivals.at[i] for i in ids if i in arrivals.at]
    elapsed = max(t for t, _ in got) - first_commit if got else float("nan")
    cpu = process_cpu_s(worker_pid) - cpu0
    await asyncio.sleep(0.6)  # let PostgreSQL flush its statistics
    commits = await _pg_commits(pg_dsn) - counters0
    return {
        "events": n,
        "received": len(got),
        "complete": complete,
        "elapsed_s": round(elapsed, 3),
        "per_s": round(len(got) / elapsed, 1),
        "emit_s": round(emit_s, 3),
        "body_bytes": median([size for _, size in got]),
        "worker_cpu_ms_per_delivery": round(cpu * 1000 / max(len(got), 1), 3),
        "pg_commits_per_delivery": round(commits / max(len(got), 1), 2),
    }


async def loop_run(
    client: httpx.AsyncClient, url: str, body: str, secret: str, arrivals: Arrivals, n: int
) -> dict[str, Any]:
    prefix = f"msg_bench{uuid.uuid4().hex[:12]}_"
    ids = [f"{prefix}{i}" for i in range(n)]
    cpu0 = self_cpu_s()
    t0 = time.monotonic()
    for message_id in ids:
        headers = signing.headers(message_id, utcnow(), body, [secret])
        response = await client.post(url, content=body.encode(), headers=headers)
        response.raise_for_status()
    complete = await arrivals.wait_all(ids, RUN_TIMEOUT_S)
    got = [arrivals.at[i] for i in ids if i in arrivals.at]
    elapsed = max(t for t, _ in got) - t0
    return {
        "requests": n,
        "received": len(got),
        "complete": complete,
        "elapsed_s": round(elapsed, 3),
        "per_s": round(len(got) / elapsed, 1),
        "body_bytes": median([size for _, size in got]),
        "client_cpu_ms_per_request": round((self_cpu_s() - cpu0) * 1000 / n, 3),
    }


async def latency_samples(
    sessions: Any, cluster_id: str, arrivals: Arrivals
) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + LATENCY_BUDGET_S
    for i in range(LATENCY_SAMPLES):
        if i >= MIN_SAMPLES and time.monotonic() > deadline:
            _progress(f"webhook latency budget spent after {i} samples")
            break
        async with sessions() as session:
            event = await emit_event(session, cluster_id, "operation.step_changed", _data(i))
            committed = await _commit(session)
            wall = time.time() - (time.monotonic() - committed)
        if not await arrivals.wait_all([event.id], 15):
            raise RuntimeError(f"webhook for {event.id} not received in 15 s")
        samples.append(
            {"event_id": event.id, "total_s": arrivals.at[event.id][0] - committed, "wall": wall}
        )
        await asyncio.sleep(LATENCY_PAUSE_S)
    # Where the time went, from the delivery rows (the worker's wall clock, ms resolution).
    async with sessions() as session:
        rows = (
            await session.execute(
                select(
                    col(WebhookDelivery.event_id),
                    col(WebhookDelivery.delivered_at),
                    col(WebhookAttempt.duration_ms),
                )
                .join(WebhookAttempt, col(WebhookAttempt.delivery_id) == col(WebhookDelivery.id))
                .where(col(WebhookDelivery.event_id).in_([s["event_id"] for s in samples]))
            )
        ).all()
    by_event = {event_id: (delivered, ms) for event_id, delivered, ms in rows}
    for s in samples:
        delivered, ms = by_event[s["event_id"]]
        s["commit_to_send_s"] = delivered.timestamp() - ms / 1000 - s["wall"]
        s["send_s"] = ms / 1000
    return samples


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
    base_url: str, database_url: str, pg_dsn: str, redis_url: str, worker_pid: int
) -> dict[str, Any]:
    arrivals = await Arrivals().start()
    engine = create_engine(database_url, pool_size=2)
    redis = Redis.from_url(redis_url)
    # As the API's and worker's sessions: a commit that appends events publishes on Redis.
    # As the app's own sessions: a commit that appends events wakes the dispatcher.
    channel = events_channel(Settings().redis_prefix)
    sessions = session_factory(engine, info={"redis": redis, "events_channel": channel})
    try:
        from bench.run import AUTH, pair_body  # noqa: PLC0415 (run.py imports this module)

        async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=AUTH) as api:
            response = await api.post("/v1/clusters", json=pair_body())
            response.raise_for_status()
            cluster_id = response.json()["id"]
            response = await api.post("/v1/webhooks", json={"url": arrivals.url})
            if response.status_code != 201:
                raise RuntimeError(f"POST /v1/webhooks: {response.status_code} {response.text}")
            endpoint = response.json()

        # The loop's body: what Tandem sends for the same event.
        sample = Event(
            id=new_id("evt"),
            cluster_id=cluster_id,
            sequence=1,
            position=1,
            type="operation.step_changed",
            data=_data(0),
            created_at=utcnow() - timedelta(seconds=1),
        )
        body = standard_body(sample)
        runs: dict[str, list[dict[str, Any]]] = {"tandem": [], "loop": []}
        async with httpx.AsyncClient(timeout=30) as client:
            # Warm-up: connections, the dispatcher's lease and lanes, the receiver.
            await loop_run(client, arrivals.url, body, endpoint["secret"], arrivals, 50)
            await tandem_run(sessions, cluster_id, arrivals, 50, worker_pid, pg_dsn)
            for round_ in range(ROUNDS):
                order = ["loop", "tandem"] if round_ % 2 == 0 else ["tandem", "loop"]
                for name in order:
                    if name == "loop":
                        result = await loop_run(
                            client, arrivals.url, body, endpoint["secret"], arrivals, EVENTS_PER_RUN
                        )
                    else:
                        result = await tandem_run(
                            sessions, cluster_id, arrivals, EVENTS_PER_RUN, worker_pid, pg_dsn
                        )
                    runs[name].append(result)
                    _progress(
                        f"webhooks {name}: {result['received']} in {result['elapsed_s']:.2f} s,"
                        f" {result['per_s']:.0f}/s"
                    )
        samples = await latency_samples(sessions, cluster_id, arrivals)
        _progress(
            f"webhook latency: median {median([s['total_s'] for s in samples]) * 1000:.1f} ms"
        )
    finally:
        await arrivals.stop()
        await redis.aclose()
        await engine.dispose()
    return {"runs": runs, "latency": samples}


def report(raw: dict[str, Any], noop_round_trip_s: list[float]) -> dict[str, Any]:
    runs = raw["runs"]
    tandem_rate = median([r["per_s"] for r in runs["tandem"]])
    loop_rate = median([r["per_s"] for r in runs["loop"]])
    ratio = tandem_rate / loop_rate
    totals = [s["total_s"] for s in raw["latency"]]
    noop_median = median(noop_round_trip_s)
    latency_ratio = median(totals) / noop_median
    return {
        "throughput": {
            "events_per_run": EVENTS_PER_RUN,
            "events_per_commit": BATCH,
            "runs_each": ROUNDS,
            "tandem_per_s_median": round(tandem_rate, 1),
            "loop_per_s_median": round(loop_rate, 1),
            "ratio": round(ratio, 3),
            "target_min_ratio": TARGET_THROUGHPUT_RATIO,
            "meets_target": ratio >= TARGET_THROUGHPUT_RATIO,
            "runs": runs,
        },
        "latency": {
            "commit_to_receipt": summary_ms(totals),
            "commit_to_send_start": summary_ms([s["commit_to_send_s"] for s in raw["latency"]]),
            "send": summary_ms([s["send_s"] for s in raw["latency"]]),
            "arq_noop_round_trip_median_ms": round(noop_median * 1000, 3),
            "ratio_median": round(latency_ratio, 2),
            "target_max_ratio": TARGET_LATENCY_RATIO,
            "meets_target": latency_ratio <= TARGET_LATENCY_RATIO,
            "samples_ms": [round(v * 1000, 3) for v in totals],
        },
    }


def render(fig: dict[str, Any]) -> list[str]:
    t, lat = fig["throughput"], fig["latency"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    def per_run(name: str) -> str:
        return " ".join(f"{r['per_s']:.0f}" for r in t["runs"][name])

    def received(name: str) -> str:
        return f"{sum(r['received'] for r in t['runs'][name])}"

    def of(name: str, key: str) -> float:
        return median([r[key] for r in t["runs"][name]])

    per_delivery = (
        "per delivery (Tandem, median of runs): worker CPU "
        + f"{of('tandem', 'worker_cpu_ms_per_delivery'):.2f} ms, "
        + f"PostgreSQL commits {of('tandem', 'pg_commits_per_delivery'):g}; "
        + f"loop client CPU per request {of('loop', 'client_cpu_ms_per_request'):.2f} ms"
    )
    tandem0 = t["runs"]["tandem"][0]
    c = lat["commit_to_receipt"]
    return [
        f"(c) webhooks ({t['runs_each']} runs each of {t['events_per_run']} events, "
        f"{tandem0['body_bytes']:.0f}-byte bodies, one receiver: asyncio HTTP/1.1 keep-alive, "
        "interleaved ABBA)",
        table(
            ["", "received", "per s median", "per s per run"],
            [
                [
                    f"Tandem: emit_event ({t['events_per_commit']}/commit) -> receiver",
                    received("tandem"),
                    f"{t['tandem_per_s_median']:.0f}",
                    per_run("tandem"),
                ],
                [
                    "loop: signed httpx POSTs, sequential",
                    received("loop"),
                    f"{t['loop_per_s_median']:.0f}",
                    per_run("loop"),
                ],
                ["ratio Tandem / loop", "", f"{t['ratio'] * 100:.0f}%", ""],
            ],
        ),
        f"target: ratio >= {t['target_min_ratio'] * 100:.0f}% -> {verdict(t['meets_target'])}",
        per_delivery,
        table(
            ["", "n", "median", "p95"],
            [
                [
                    "webhook: commit -> receipt",
                    c["n"],
                    f"{c['median_ms']:.1f} ms",
                    f"{c['p95_ms']:.1f} ms",
                ],
                [
                    "  of which commit -> send starts",
                    "",
                    f"{lat['commit_to_send_start']['median_ms']:.1f} ms",
                    f"{lat['commit_to_send_start']['p95_ms']:.1f} ms",
                ],
                [
                    "arq no-op round trip (from (a))",
                    "",
                    f"{lat['arq_noop_round_trip_median_ms']:.1f} ms",
                    "",
                ],
                ["ratio webhook / no-op", "", f"{lat['ratio_median']:.1f}x", ""],
            ],
        ),
        f"target: ratio <= {lat['target_max_ratio']:.0f}x (median) -> "
        + verdict(lat["meets_target"]),
    ]


if __name__ == "__main__":
    asyncio.run(_serve())
