"""The `postgres` action against real PostgreSQL servers (DESIGN.md section 10): a primary
and its streaming standby started once per run (tests/pg_servers.py), the real API and
worker processes, Tandem's own database and Redis. A test that promotes or stops a server
leaves the pair to be rebuilt before the next one (`pg_pair`)."""

from __future__ import annotations

import asyncio
import signal
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.actions.progress import ActionProgress
from tests import pg_servers as servers
from tests.actions.test_http import step_of
from tests.helpers import operation_row, pair_body, start, start_ok, wait_done, wait_for
from tests.pg_servers import PASSWORD_ROLE, PgPair, Server
from tests.runbook import Call, Reply, Runbook
from tests.stack import Stack

# The session's servers (first backend's pass only), and the pair rebuilt when broken.
pg_servers, pg_pair = servers.pg_servers, servers.pg_pair

PG = {"primary_dsn": {"$secret": "primary-dsn"}, "secondary_dsn": {"$secret": "secondary-dsn"}}


def postgres(op: str) -> dict[str, Any]:
    return {"kind": "postgres", "op": op, **PG, "interval_s": 0.2}


def database_plan(*after: dict[str, Any]) -> dict[str, Any]:
    """The plan of DESIGN.md section 10, then the pair's own steps."""
    return {
        "steps": [
            {"name": "preflight", "action": postgres("check")},
            {
                "name": "fence",
                "action": postgres("fence"),
                "undo": postgres("unfence"),
                "skip_when_forced": True,
            },
            {"name": "drain", "action": postgres("drain"), "skip_when_forced": True},
            {"name": "promote", "action": postgres("promote"), "point_of_no_return": True},
            *after,
        ]
    }


async def database_pair(
    client: httpx.AsyncClient,
    primary_dsn: str,
    secondary_dsn: str,
    plan: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    body = pair_body()
    del body["driver"]
    response = await client.post(
        "/v1/clusters", json={**body, "plan": plan or database_plan(), **fields}
    )
    assert response.status_code == 201, response.text
    pair: dict[str, Any] = response.json()
    for name, value in (("primary-dsn", primary_dsn), ("secondary-dsn", secondary_dsn)):
        response = await client.put(
            f"/v1/clusters/{pair['id']}/secrets/{name}", json={"value": value}
        )
        assert response.status_code in (200, 201, 204), response.text
    return pair


async def fetch(server: Server, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(server.dsn())
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def timeline(server: Server) -> int:
    """The server's timeline now (the checkpoint after a promotion writes it down)."""
    await fetch(server, "CHECKPOINT")
    return int(await fetch(server, "SELECT timeline_id FROM pg_control_checkpoint()"))


async def ids(server: Server, table: str) -> set[int]:
    conn = await asyncpg.connect(server.dsn())
    try:
        return {row[0] for row in await conn.fetch(f"SELECT id FROM {table}")}
    finally:
        await conn.close()


async def refuses_writes(server: Server, table: str) -> bool:
    conn = await asyncpg.connect(server.dsn())
    try:
        await conn.execute(f"INSERT INTO {table} VALUES (-1)")
    except asyncpg.ReadOnlySQLTransactionError:
        return True
    finally:
        await conn.close()
    return False


async def new_table(server: Server) -> str:
    table = f"rows_{uuid.uuid4().hex[:8]}"
    await fetch(server, f"CREATE TABLE {table} (id bigint PRIMARY KEY)")
    return table


class Writer:
    """Commits rows to a server in a loop; remembers every commit it saw acknowledged.
    Ended sessions are reconnected; a refused write (read-only) is counted."""

    def __init__(self, server: Server, table: str, first: int = 1) -> None:
        self.server, self.table, self.first = server, table, first
        self.committed: list[int] = []
        self.refused = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        n, conn = self.first - 1, None
        while not self._stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.server.dsn(), timeout=5)
                n += 1
                await conn.execute(f"INSERT INTO {self.table} VALUES ($1)", n)
                self.committed.append(n)
            except asyncpg.ReadOnlySQLTransactionError:
                self.refused += 1
                await asyncio.sleep(0.01)
            except (
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
            ):
                if conn is not None:
                    conn.terminate()
                conn = None
                await asyncio.sleep(0.01)
        if conn is not None:
            await conn.close()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


@asynccontextmanager
async def writing(
    server: Server, table: str, at_least: int = 100, first: int = 1
) -> AsyncIterator[Writer]:
    writer = Writer(server, table, first)
    writer.start()
    try:
        await wait_for(lambda: _enough(writer, at_least), timeout_s=30)
        yield writer
    finally:
        await writer.stop()


async def _enough(writer: Writer, n: int) -> bool:
    return len(writer.committed) >= n


def errors(operation: dict[str, Any]) -> list[Any]:
    return [operation["error"], *(s["error"] for s in operation["steps"] if s["error"])]


async def readiness(client: httpx.AsyncClient, pair_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/clusters/{pair_id}/readiness", params={"fresh": "true"})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


# -- planned failover ----------------------------------------------------------------


async def test_planned_failover_under_writes_loses_no_committed_row(
    client: httpx.AsyncClient, pg_pair: PgPair
) -> None:
    primary, standby = pg_pair.primary, pg_pair.standby
    table = await new_table(primary)
    pair = await database_pair(client, primary.dsn(), standby.dsn())
    async with writing(primary, table) as writer:
        operation = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
        # The writer goes on until the fenced source has refused it.
        await wait_for(lambda: _refused(writer), timeout_s=30)
    assert operation["status"] == "succeeded", errors(operation)
    fence = step_of(operation, "fence")["output"]
    assert fence["fenced"] is True
    # Every row whose commit the writer saw is on the promoted target.
    on_target = await ids(standby, table)
    assert set(writer.committed) <= on_target, sorted(set(writer.committed) - on_target)[:10]
    assert len(writer.committed) >= 100
    # The fenced source refuses writes; the promoted target takes them.
    assert await refuses_writes(primary, table)
    assert await fetch(standby, "SELECT pg_is_in_recovery()") is False
    await fetch(standby, f"INSERT INTO {table} VALUES (-2)")
    promote = step_of(operation, "promote")["output"]
    assert promote["promoted"] is True and promote["timeline"] == await timeline(standby)
    assert operation["data_loss"] == {"bytes": 0, "seconds": 0}
    check = step_of(operation, "preflight")["output"]
    assert check["lag"]["bytes"] is not None


async def _refused(writer: Writer) -> bool:
    return writer.refused > 0


# -- cancel before the point of no return -------------------------------------------


async def _behind(standby: Server, primary: Server, table: str) -> None:
    """Replay paused on the standby, and a row it has not replayed: a drain waits."""
    await fetch(standby, "SELECT pg_wal_replay_pause()")
    await fetch(primary, f"INSERT INTO {table} VALUES (0)")


async def test_cancel_after_fence_unfences_the_source_and_leaves_the_standby_a_standby(
    client: httpx.AsyncClient, pg_pair: PgPair
) -> None:
    primary, standby = pg_pair.primary, pg_pair.standby
    table = await new_table(primary)
    pair = await database_pair(client, primary.dsn(), standby.dsn())
    await _behind(standby, primary, table)
    try:
        started = await start_ok(client, pair["id"], ignore_readiness=True)
        await wait_for(lambda: _step_is(client, started["id"], "drain", "running"), timeout_s=30)
        assert await refuses_writes(primary, table)
        response = await client.post(f"/v1/operations/{started['id']}/cancel")
        assert response.status_code in (200, 202), response.text
        operation = await wait_done(client, started["id"])
    finally:
        await fetch(standby, "SELECT pg_wal_replay_resume()")
    assert operation["status"] == "cancelled", errors(operation)
    assert step_of(operation, "fence")["status"] == "rolled_back"
    assert step_of(operation, "promote")["status"] in ("pending", "skipped")
    # The source takes writes again; the standby is still a standby and catches up.
    assert await fetch(primary, "SHOW default_transaction_read_only") == "off"
    await fetch(primary, f"INSERT INTO {table} VALUES (1)")
    assert await fetch(standby, "SELECT pg_is_in_recovery()") is True
    await wait_for(lambda: _has(standby, table, 1), timeout_s=30)


async def _step_is(client: httpx.AsyncClient, op_id: str, step: str, status: str) -> bool:
    operation = (await client.get(f"/v1/operations/{op_id}")).json()
    return bool(step_of(operation, step)["status"] == status)


async def _has(server: Server, table: str, row: int) -> bool:
    return row in await ids(server, table)


# -- forced failover -----------------------------------------------------------------


async def test_forced_failover_with_the_source_down_reports_the_last_measured_window(
    client: httpx.AsyncClient, pg_pair: PgPair
) -> None:
    primary, standby = pg_pair.primary, pg_pair.standby
    table = await new_table(primary)
    pair = await database_pair(client, primary.dsn(), standby.dsn())
    # No lag was measured yet on a pair whose secrets were not set: unknown, refused.
    unmeasured = await database_pair(client, "postgresql://nobody@127.0.0.1:1/x", "x")
    response = await start(
        client, unmeasured["id"], mode="forced", accept_data_loss=True, max_data_loss_s=60
    )
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "data_loss_unknown"

    await _behind(standby, primary, table)
    # A window opens: the standby replays nothing while the source commits.
    lagging = await wait_for(lambda: _lag_at_least(client, pair["id"], 1.0), timeout_s=30)
    measured = lagging["replication_lag"]
    assert measured["bytes"] > 0 and measured["cloud_region"] == pair["secondary"]["region"]
    pg_pair.primary.crash()

    # Over the consented window: refused, nothing changes.
    response = await start(
        client,
        pair["id"],
        mode="forced",
        accept_data_loss=True,
        max_data_loss_s=measured["seconds"] / 2,
    )
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["code"] == "data_loss_exceeds"
    assert problem["replication_lag"]["seconds"] == measured["seconds"]
    assert problem["replication_lag"]["measured_at"] == measured["measured_at"]
    assert (await client.get(f"/v1/clusters/{pair['id']}")).json()["state"] == "primary-active"
    assert await fetch(standby, "SELECT pg_is_in_recovery()") is True

    # Readiness now cannot reach the source; the last measured window stays.
    again = await readiness(client, pair["id"])
    assert again["ready"] is False and again["replication_lag"] == measured

    started = await start_ok(
        client, pair["id"], mode="forced", accept_data_loss=True, max_data_loss_s=3600
    )
    operation = await wait_done(client, started["id"])
    assert operation["status"] == "succeeded", errors(operation)
    assert [s["status"] for s in operation["steps"]][1:3] == ["skipped", "skipped"]
    assert await fetch(standby, "SELECT pg_is_in_recovery()") is False
    assert operation["data_loss"] == {
        "bytes": measured["bytes"],
        "seconds": measured["seconds"],
    }
    # Failback is not ready until the old primary is a standby of the new one.
    back = await readiness(client, pair["id"])
    assert back["operation"] == "failback" and back["ready"] is False
    failing = [c for c in back["checks"] if not c["ok"]]
    assert any("primary_dsn" in c["detail"] and "the target" in c["detail"] for c in failing)


async def _lag_at_least(client: httpx.AsyncClient, pair_id: str, seconds: float) -> Any:
    found = await readiness(client, pair_id)
    lag = found.get("replication_lag") or {}
    return found if (lag.get("seconds") or 0) >= seconds else None


# -- readiness -----------------------------------------------------------------------


async def test_a_standby_paused_past_the_rpo_target_makes_the_pair_not_ready(
    client: httpx.AsyncClient, pg_pair: PgPair
) -> None:
    primary, standby = pg_pair.primary, pg_pair.standby
    table = await new_table(primary)
    pair = await database_pair(client, primary.dsn(), standby.dsn(), rpo_target_s=1)
    ready = await wait_for(lambda: _ready(client, pair["id"]), timeout_s=30)
    assert ready["replication_lag"]["seconds"] == 0
    await _behind(standby, primary, table)
    try:
        found = await wait_for(lambda: _not_ready(client, pair["id"]), timeout_s=30)
        check = next(c for c in found["checks"] if c["step"] == "preflight")
        assert "rpo_target_s" in check["detail"], check
        assert found["replication_lag"]["seconds"] > 1
        response = await start(client, pair["id"])
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "not_ready"
        # The dry run shows the lag measured; the metric has a sample for the region.
        dry = await start(client, pair["id"], dry_run=True)
        assert dry.status_code == 200, dry.text
        assert dry.json()["replication_lag"]["seconds"] > 1
        metrics = (await client.get("/metrics")).text
        sample = next(
            line
            for line in metrics.splitlines()
            if line.startswith("tandem_replication_lag_seconds{")
            and f'pair="{pair["name"]}"' in line
        )
        assert f'cloud_region="{pair["secondary"]["region"]}"' in sample
        assert float(sample.rsplit(" ", 1)[1]) > 1
    finally:
        await fetch(standby, "SELECT pg_wal_replay_resume()")
    await wait_for(lambda: _ready(client, pair["id"]), timeout_s=30)


async def ready_within(client: httpx.AsyncClient, pair_id: str, seconds: float) -> Any:
    """The first ready evaluation; on a time out, the last one says why."""
    last: dict[str, Any] = {}

    async def ready() -> Any:
        nonlocal last
        last = await readiness(client, pair_id)
        return last if last["ready"] else None

    try:
        return await wait_for(ready, timeout_s=seconds, interval_s=0.5)
    except AssertionError:
        raise AssertionError(f"not ready in {seconds} s: {last}") from None


async def _ready(client: httpx.AsyncClient, pair_id: str) -> Any:
    found = await readiness(client, pair_id)
    return found if found["ready"] else None


async def _not_ready(client: httpx.AsyncClient, pair_id: str) -> Any:
    found = await readiness(client, pair_id)
    return found if not found["ready"] else None


# -- the mistakes people make ------------------------------------------------------


async def test_wrong_roles_bad_credentials_and_another_cluster_fail_the_check(
    client: httpx.AsyncClient, pg_pair: PgPair
) -> None:
    primary, standby = pg_pair.primary, pg_pair.standby
    _, other_standby = pg_pair.other_pair()
    cases = [
        # The DSNs swapped: a "primary" in recovery.
        (standby.dsn(), primary.dsn(), "primary_dsn", "is in recovery"),
        # The standby's DSN points at the primary: not in recovery.
        (primary.dsn(), primary.dsn(), "secondary_dsn", "is not in recovery"),
        (primary.dsn(PASSWORD_ROLE, "wrong"), standby.dsn(), "primary_dsn", "credentials"),
        (primary.dsn(), other_standby.dsn(), "secondary_dsn", "does not replicate"),
    ]
    for primary_dsn, secondary_dsn, named, cause in cases:
        pair = await database_pair(client, primary_dsn, secondary_dsn)
        found = await readiness(client, pair["id"])
        check = next(c for c in found["checks"] if c["step"] == "preflight")
        assert not check["ok"] and named in check["detail"] and cause in check["detail"], check
        assert "wrong" not in check["detail"]
        started = await start_ok(client, pair["id"], ignore_readiness=True)
        operation = await wait_done(client, started["id"])
        assert operation["status"] == "failed", operation
        error = step_of(operation, "preflight")["error"]["message"]
        assert named in error and cause in error and "wrong" not in error, error
        assert step_of(operation, "fence")["status"] in ("pending", "skipped")
        assert await fetch(primary, "SHOW default_transaction_read_only") == "off"
        assert await fetch(standby, "SELECT pg_is_in_recovery()") is True


# -- reprotect, then failback --------------------------------------------------------


async def test_reprotect_then_failback_loses_no_row(
    client: httpx.AsyncClient, pg_pair: PgPair, runbook: Runbook
) -> None:
    primary, standby = pg_pair.primary, pg_pair.standby

    jobs: dict[str, dict[str, Any]] = {}

    def reprotect_job(job: str, failover: bool) -> None:
        # As a user's automation would: the old source follows the new primary.
        old, new = (primary, standby) if failover else (standby, primary)
        try:
            pg_pair.rewind(new, old)
            old.start()
            pg_pair.wait_streaming(new, old)
        except Exception as exc:
            jobs[job] = {"status": "failed", "error": f"{exc!r} {getattr(exc, 'stderr', '')}"}
        else:
            jobs[job] = {"status": "succeeded", "output": {"reprotected": old.name}}

    def answer(call: Call) -> Reply:
        if call.method == "POST" and call.path == "/reprotect":
            job = call.json()["operation_id"]
            if job not in jobs:  # a repeated call (same operation) starts nothing new
                jobs[job] = {"status": "running"}
                failover = call.json()["kind"] == "failover"
                threading.Thread(target=reprotect_job, args=(job, failover)).start()
            return Reply(202, {}, {"Location": f"/jobs/{job}", "Retry-After": "0.5"})
        if call.method == "GET" and call.path.startswith("/jobs/"):
            return Reply(200, jobs[call.path.removeprefix("/jobs/")])
        return Reply()

    runbook.answer = answer
    reprotect = {"name": "reprotect", "action": {"kind": "http", "url": runbook.url("/reprotect")}}
    table = await new_table(primary)
    pair = await database_pair(client, primary.dsn(), standby.dsn(), database_plan(reprotect))

    async with writing(primary, table) as writer:
        operation = await wait_done(client, (await start_ok(client, pair["id"]))["id"], 120)
        await wait_for(lambda: _refused(writer), timeout_s=30)
    assert operation["status"] == "succeeded", errors(operation)
    assert operation["data_loss"] == {"bytes": 0, "seconds": 0}
    assert set(writer.committed) <= await ids(standby, table)
    # Replication now runs the other way: failback is ready.
    back = await ready_within(client, pair["id"], 60)
    assert back["operation"] == "failback"
    assert back["replication_lag"]["cloud_region"] == pair["primary"]["region"]
    assert await fetch(primary, "SELECT pg_is_in_recovery()") is True

    async with writing(standby, table, first=1_000_000) as writer:
        operation = await wait_done(
            client, (await start_ok(client, pair["id"], "failback"))["id"], 120
        )
        await wait_for(lambda: _refused(writer), timeout_s=30)
    assert operation["status"] == "succeeded", errors(operation)
    assert operation["data_loss"] == {"bytes": 0, "seconds": 0}
    on_primary = await ids(primary, table)
    assert set(writer.committed) <= on_primary, sorted(set(writer.committed) - on_primary)[:10]
    assert await fetch(primary, "SELECT pg_is_in_recovery()") is False
    assert step_of(operation, "promote")["output"]["timeline"] == await timeline(primary)
    # The failback's reprotect made the standby follow the primary again.
    assert await fetch(standby, "SELECT pg_is_in_recovery()") is True
    assert pg_pair.healthy()


# -- workers killed ------------------------------------------------------------------


async def _owner(sessions: async_sessionmaker[AsyncSession], op_id: str) -> str | None:
    return (await operation_row(sessions, op_id)).lease_owner


async def test_a_worker_killed_during_drain_leaves_the_next_one_to_finish(
    client: httpx.AsyncClient,
    pg_pair: PgPair,
    live_stack: Stack,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    primary, standby = pg_pair.primary, pg_pair.standby
    table = await new_table(primary)
    pair = await database_pair(client, primary.dsn(), standby.dsn())
    await _behind(standby, primary, table)
    try:
        started = await start_ok(client, pair["id"], ignore_readiness=True)
        await wait_for(lambda: _step_is(client, started["id"], "drain", "running"), timeout_s=30)
        # The worker holding the operation while it waits in drain.
        owner = await wait_for(lambda: _owner(sessions, started["id"]), timeout_s=30)
        live_stack.worker_by_pid(int(owner.split(":")[1])).kill(signal.SIGKILL)
    finally:
        await fetch(standby, "SELECT pg_wal_replay_resume()")
    live_stack.ensure_workers()
    operation = await wait_done(client, started["id"], timeout_s=120)
    assert operation["status"] == "succeeded", errors(operation)
    assert operation["data_loss"] == {"bytes": 0, "seconds": 0}
    assert 0 in await ids(standby, table)
    assert await fetch(standby, "SELECT pg_is_in_recovery()") is False


async def _waiting_on(sessions: async_sessionmaker[AsyncSession], table: str) -> bool:
    """A session of Tandem's own database waits for a row lock while writing `table`."""
    async with sessions() as session:
        found = await session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query ILIKE :table"
            ),
            {"table": f"%{table}%"},
        )
    return bool(found)


async def test_a_worker_killed_after_pg_promote_before_the_step_is_recorded(
    client: httpx.AsyncClient,
    pg_pair: PgPair,
    live_stack: Stack,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The gate: the test's own transactions in Tandem's database. While the drain waits
    (replay paused), the test inserts, uncommitted, the row the promote step keeps its
    measurements under, so that step blocks just before pg_promote(); the test then locks
    the promote step's row and lets the first gate go: pg_promote() runs and returns, and
    recording the step blocks on the lock. The worker is killed there."""
    from tests.conftest import BACKEND

    if BACKEND != "postgresql":
        pytest.skip("the gate is a row lock in Tandem's own database (PostgreSQL)")
    primary, standby = pg_pair.primary, pg_pair.standby
    table = await new_table(primary)
    pair = await database_pair(client, primary.dsn(), standby.dsn())
    await _behind(standby, primary, table)
    started = await start_ok(client, pair["id"], ignore_readiness=True)
    op_id = started["id"]
    key = f"{op_id}:promote:promote"
    async with sessions() as before_promote, sessions() as before_record:
        try:
            await wait_for(lambda: _step_is(client, op_id, "drain", "running"), timeout_s=30)
            await before_promote.begin()
            before_promote.add(ActionProgress(idempotency_key=key, cluster_id=pair["id"], data={}))
            await before_promote.flush()
            await fetch(standby, "SELECT pg_wal_replay_resume()")
            await wait_for(lambda: _waiting_on(sessions, "action_progress"), timeout_s=60)
            assert await fetch(standby, "SELECT pg_is_in_recovery()") is True
            await before_record.begin()
            await before_record.execute(
                text(
                    "SELECT 1 FROM operation_steps WHERE operation_id = :op AND name = 'promote'"
                    " FOR UPDATE"
                ),
                {"op": op_id},
            )
            await before_promote.rollback()
            # pg_promote() returned; the step's record waits for the lock.
            await wait_for(lambda: _promoted(standby), timeout_s=60)
            await wait_for(lambda: _waiting_on(sessions, "operation_steps"), timeout_s=60)
            kept = await _kept(sessions, key)
            assert kept is not None and kept["promoted"] is True
            owner = (await operation_row(sessions, op_id)).lease_owner
            assert owner is not None
            live_stack.worker_by_pid(int(owner.split(":")[1])).kill(signal.SIGKILL)
        finally:
            await before_promote.rollback()
            await before_record.rollback()
    live_stack.ensure_workers()
    operation = await wait_done(client, op_id, timeout_s=120)
    assert operation["status"] == "succeeded", errors(operation)
    promote = step_of(operation, "promote")
    # The repeated promote found the target promoted and answered the same.
    assert promote["attempts"] >= 1 and promote["output"] == kept
    assert kept["timeline"] == await timeline(standby)
    assert await fetch(standby, "SELECT pg_is_in_recovery()") is False
    assert operation["data_loss"] == {"bytes": 0, "seconds": 0}


async def _promoted(server: Server) -> bool:
    return await fetch(server, "SELECT pg_is_in_recovery()") is False


async def _kept(sessions: async_sessionmaker[AsyncSession], key: str) -> dict[str, Any] | None:
    async with sessions() as session:
        row = await session.get(ActionProgress, key)
        return None if row is None else row.data.get("output")
