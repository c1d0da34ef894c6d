"""`tandem drill PAIR [--wait]` as a child process against the real API server and
workers. It does not depend on the database backend: it runs in the first backend's pass
only."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.backends import backends
from tests.cli.conftest import Tandem
from tests.conftest import BACKEND
from tests.helpers import create_cluster, open_gate, start_ok, wait_done

pytestmark = pytest.mark.skipif(
    backends()[0] != BACKEND,
    reason=f"independent of the database backend; runs in the {backends()[0]} pass only",
)


async def run(tandem: Tandem, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(tandem, *args)


async def test_drill_wait_shows_the_steps_and_the_report_and_exits_0_or_1(
    client: httpx.AsyncClient, tandem: Tandem
) -> None:
    pair = await create_cluster(client, step_delay_ms=20)
    result = await run(tandem, "drill", pair["name"], "--wait", "--reason", "game day")
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("preflight", "pause_schedulers", "drain_replication"):
        assert f"{step}: succeeded" in result.stdout, result.stdout
    for step in ("promote_target", "switch_traffic", "resume_schedulers"):
        assert f"{step}: skipped" in result.stdout, result.stdout
    assert "expected RTO: " in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("drill op_") and last.endswith("succeeded"), last
    assert "Idempotency-Key: " in result.stderr
    after = (await client.get(f"/v1/clusters/{pair['id']}")).json()
    assert after["state"] == "primary-active"
    drills = (
        await client.get("/v1/operations", params={"cluster_id": pair["id"], "kind": "drill"})
    ).json()["items"]
    assert [(d["reason"], d["status"]) for d in drills] == [("game day", "succeeded")]

    # A failing drill: exit 1; --output json prints the operation, its report included.
    failing = await create_cluster(client, fail={"drain_replication": 1})
    result = await run(tandem, "drill", failing["name"], "--wait", "--output", "json")
    assert result.returncode == 1, result.stdout + result.stderr
    final: dict[str, Any] = json.loads(result.stdout)
    assert final["kind"] == "drill" and final["status"] == "failed"
    assert final["report"]["failed_step"] == "drain_replication"


async def test_a_drill_refused_beside_a_failover_exits_3(
    client: httpx.AsyncClient, tandem: Tandem, sessions: async_sessionmaker[AsyncSession]
) -> None:
    pair = await create_cluster(client, gate=["preflight"])
    failover = await start_ok(client, pair["id"], "failover")
    try:
        result = await run(tandem, "drill", pair["id"])
        assert result.returncode == 3, result.stdout + result.stderr
        assert failover["id"] in result.stderr
    finally:
        await open_gate(sessions, pair["id"], "preflight")
    assert (await wait_done(client, failover["id"]))["status"] == "succeeded"
