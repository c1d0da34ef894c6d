"""arq worker settings. `tandem worker` runs them; so does `tandem serve` in-process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from typing import Any

from arq import cron, func
from arq.constants import in_progress_key_prefix
from arq.worker import Worker

import app.tables  # noqa: F401  (every table on the metadata: foreign keys need them all)
from app import retention
from app.actions.base import ActionDeps
from app.batches import service as batches
from app.config import Settings
from app.context import build_context, redis_settings
from app.db import create_engine, session_factory
from app.drills import service as drills
from app.events.notify import DELIVERIES, Notifier, publish
from app.health import worker as health_server
from app.health.service import Readiness, readiness
from app.migrations import current_revision, head_revision, schema_usable
from app.operations import observe, tracing
from app.operations.executor import Executor
from app.operations.sweeper import sweep
from app.readiness import service as pair_readiness
from app.webhooks.dispatcher import Dispatcher

log = logging.getLogger("tandem.worker")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


async def run_operation(ctx: dict[str, Any], operation_id: str) -> bool:
    """The job that carries out an operation; the work is in app/operations/executor.py."""
    executor: Executor = ctx["executor"]
    return await executor.run(operation_id)


async def run_batch(ctx: dict[str, Any], batch_id: str) -> None:
    """A pass of a batch (app/batches/service.py): settle, start what may start."""
    await batches.advance(ctx["context"], batch_id)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    tracing.install(settings)
    context = await build_context(settings)
    revision = await current_revision(context.engine)
    if not schema_usable(revision, head_revision()):
        await context.close()
        raise RuntimeError(
            f"database schema is at {revision}, not {head_revision()}: run `tandem migrate`"
        )
    ctx["context"] = context
    ctx["worker_id"] = owner = worker_id()

    async def notify(operation_id: str) -> None:
        await publish(context.redis, settings.redis_prefix, operation_id)

    ctx["action_deps"] = deps = ActionDeps(
        sessions=context.sessions,
        http=context.http,
        secrets=context.secrets,
        networks=settings.action_networks,
    )
    # The leases are renewed on a connection of their own: runs queueing for the pool's
    # connections (a worker given more than it can do at once) do not make them late.
    url = settings.resolved_database_url()
    one = {} if url.startswith("sqlite") else {"pool_size": 1, "max_overflow": 0}
    ctx["lease_engine"] = lease_engine = create_engine(url, **one)
    ctx["executor"] = Executor(
        context.sessions,
        deps,
        owner=owner,
        lease_ttl_s=settings.lease_ttl_s,
        notify=notify,
        enqueue_at=context.enqueue,
        lease_sessions=session_factory(lease_engine),
    )

    # A batch's operation ended: the batch may start its next ones at once.
    async def batch_pass(ended: observe.OperationEnded) -> None:
        if ended.batch_id is not None:
            await batches.advance(context, ended.batch_id)

    ctx["batch_pass"] = batch_pass
    observe.OPERATION_OBSERVERS.append(batch_pass)
    dispatcher = Dispatcher(context.sessions, context.http, settings, owner)
    context.notifier.start()
    ctx["dispatcher_task"] = asyncio.create_task(dispatch(dispatcher, context.notifier))
    log.info("worker %s started on queue %s", owner, settings.queue_name)
    if ctx.get("health_port") is not None:
        worker: TandemWorker = ctx["worker"]

        async def probe() -> Readiness:
            return await readiness(context.engine, context.redis, worker.state)

        ctx["health"] = await health_server.serve(settings.host, ctx["health_port"], probe, context)


async def dispatch(dispatcher: Dispatcher, notifier: Notifier) -> None:
    """Run the dispatcher, woken by every commit that makes webhook deliveries (it polls
    too); a commit of events no endpoint wants costs it nothing."""

    async def relay() -> None:
        with notifier.watch(DELIVERIES) as committed:
            while True:
                await committed.wait()
                committed.clear()
                dispatcher.wake.set()

    relay_task = asyncio.create_task(relay())
    try:
        await dispatcher.run_forever()
    finally:
        relay_task.cancel()


async def shutdown(ctx: dict[str, Any]) -> None:
    batch_pass = ctx.get("batch_pass")
    if batch_pass in observe.OPERATION_OBSERVERS:
        observe.OPERATION_OBSERVERS.remove(batch_pass)
    health = ctx.get("health")
    if health is not None:
        server, serving = health
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await serving
    task = ctx.get("dispatcher_task")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    executor = ctx.get("executor")
    if executor is not None:
        await executor.close()
        await ctx["lease_engine"].dispose()
    context = ctx.get("context")
    if context is not None:
        await context.close()
    await tracing.shutdown()


async def prune(ctx: dict[str, Any]) -> int:
    """Retention, a minute at a time: the thin job around app.retention.prune."""
    context = ctx["context"]
    return (await retention.prune(context.sessions, context.settings)).total


async def readiness_round(ctx: dict[str, Any]) -> int:
    """Evaluate the pairs whose readiness is older than TANDEM_READINESS_INTERVAL_S."""
    settings: Settings = ctx["settings"]
    return await pair_readiness.evaluate_due(ctx["action_deps"], settings.readiness_interval_s)


async def drill_round(ctx: dict[str, Any]) -> int:
    """Start the drills that are due (a pair's drill_every_days). Every worker runs the
    round: which one starts a pair's drill is decided under the pair's row lock."""
    context = ctx["context"]
    return len(await drills.start_due(context.sessions, context.enqueue))


def worker_options(settings: Settings) -> dict[str, Any]:
    # Pairs come due at most this far apart from their interval.
    tick = max(1, min(10, int(settings.readiness_interval_s)))
    return {
        "functions": [
            # Recovery comes from the lease and the sweeper, not from arq's own retry.
            func(run_operation, name="run_operation", max_tries=1000, timeout=24 * 3600),
            func(run_batch, name=batches.RUN_BATCH, max_tries=3, timeout=3600),
        ],
        "cron_jobs": [
            cron(
                sweep,
                second=set(range(0, 60, settings.sweep_interval_s)),
                unique=True,
                run_at_startup=True,
                timeout=60,
            ),
            cron(prune, second={30}, unique=True, timeout=600),
            cron(readiness_round, second=set(range(0, 60, tick)), unique=True, timeout=600),
            # On the same tick; not unique: the database decides who starts a drill.
            cron(drill_round, second=set(range(0, 60, tick)), unique=False, timeout=300),
        ],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "redis_settings": redis_settings(settings),
        "queue_name": settings.queue_name,
        "poll_delay": settings.worker_poll_delay_s,
        "keep_result": 0,
        "max_jobs": settings.worker_max_jobs,
        "ctx": {"settings": settings},
    }


class TandemWorker(Worker):
    """arq's worker, riding out Redis outages: a poll that fails is logged and tried again
    with backoff, instead of ending the process (and the dispatcher with it)."""

    # A poll older than this makes the worker not ready.
    STALE_AFTER_S = 5.0
    # How long a job seen running on another worker is left alone: one handed back (that
    # worker stopped) is taken within this.
    RECHECK_ELSEWHERE_S = 0.5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ctx["worker"] = self
        self.last_poll = time.monotonic()
        self.poll_error: str | None = None
        self._backoff_s = 0.0
        self._elsewhere: dict[bytes, float] = {}

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis gone (ConnectionError, TimeoutError, OSError...)
            if self.poll_error is None:
                log.warning("queue unreachable (%s: %s); retrying", type(exc).__name__, exc)
            self.poll_error = f"{type(exc).__name__}: {exc}"[:200]
            self._backoff_s = min(max(self._backoff_s * 2, 0.1), 5.0)
            await asyncio.sleep(self._backoff_s)
            return
        if self.poll_error is not None:
            log.warning("queue reachable again")
        self.poll_error, self._backoff_s = None, 0.0
        self.last_poll = time.monotonic()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq checks each queued job id with a WATCH and two reads before it claims it,
        and a job stays in the queue while it runs: with hundreds of operations running,
        every poll (each 10 ms) made about a thousand round trips to Redis to find them
        all taken. Jobs this worker runs are passed over; the others' in-progress keys are
        read in one round trip, and a job found running elsewhere is not asked about again
        for RECHECK_ELSEWHERE_S; arq claims what is left as before."""
        now = time.monotonic()
        candidates = [
            job_id
            for job_id in job_ids
            if ((task := self.tasks.get(job_id.decode())) is None or task.done())
            and self._elsewhere.get(job_id, 0.0) <= now
        ]
        # Forget the jobs that left the queue (finished), so the map stays small.
        queued = set(job_ids)
        self._elsewhere = {j: t for j, t in self._elsewhere.items() if j in queued}
        if not candidates:
            return
        async with self.pool.pipeline(transaction=False) as pipe:
            for job_id in candidates:
                pipe.exists(in_progress_key_prefix + job_id.decode())
            taken = await pipe.execute()
        for job_id, running in zip(candidates, taken, strict=True):
            if running:
                self._elsewhere[job_id] = now + self.RECHECK_ELSEWHERE_S
        await super().start_jobs([j for j, t in zip(candidates, taken, strict=True) if not t])

    def state(self) -> str:
        """ "ok", or why this worker cannot take work now."""
        if self.main_task is not None and self.main_task.done():
            return "not running"
        if self.poll_error is not None:
            return f"queue unreachable: {self.poll_error}"
        if time.monotonic() - self.last_poll > self.STALE_AFTER_S:
            return f"no poll for {time.monotonic() - self.last_poll:.0f} s"
        dispatcher = self.ctx.get("dispatcher_task")
        if dispatcher is not None and dispatcher.done():
            return "webhook dispatcher stopped"
        return "ok"


def build_worker(
    settings: Settings, handle_signals: bool = True, health_port: int | None = None
) -> TandemWorker:
    """The worker; with `health_port` (0: any free one) it serves its own health port."""
    options = worker_options(settings)
    options["ctx"]["health_port"] = health_port
    return TandemWorker(**options, handle_signals=handle_signals)
