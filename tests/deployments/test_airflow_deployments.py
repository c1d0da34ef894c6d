"""An `airflow` deployment through a whole failover, against a real Airflow 3.3.2 (the
`airflow` fixture): a task that fails by design while the failover runs is listed on the
deployment afterwards, `POST .../deployments/retry` clears it and it runs again, and the
DAGs paused for the switch are resumed, except the one a person had paused."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.airflow import Airflow, failing_dag, idle_dag
from tests.backends import backends
from tests.conftest import BACKEND
from tests.deployments.test_airflow_client import (
    is_paused,
    set_paused,
    unique,
    wait_for_dag,
    wait_for_run_state,
    wait_for_task,
)
from tests.helpers import open_gate, pair_body, start_ok, step_status, wait_done, wait_for

_FIRST_BACKEND = backends()[0]
pytestmark = pytest.mark.skipif(
    _FIRST_BACKEND != BACKEND,
    reason=f"a real Airflow is started once, in the {_FIRST_BACKEND} pass only",
)


async def test_failed_tasks_of_the_switch_are_listed_and_retried_and_pauses_undone(
    client: httpx.AsyncClient, airflow: Airflow, sessions: async_sessionmaker[AsyncSession]
) -> None:
    failing, idle, held = unique("fails_in_switch"), unique("keeps_running"), unique("held")
    airflow.write_dag(failing, failing_dag(failing, task_id="fails"))
    airflow.write_dag(idle, idle_dag(idle))
    airflow.write_dag(held, idle_dag(held))
    async with airflow.client() as api:
        for dag_id in (failing, idle, held):
            await wait_for_dag(api, dag_id)
        await set_paused(api, failing, False)
        await set_paused(api, idle, False)
        await set_paused(api, held, True)  # a person paused this one

        body = pair_body(gate=["preflight"])
        region_urls = {"us-east-1": airflow.base_url, "us-west-2": airflow.base_url}
        body["deployments"] = [
            {
                "name": "etl",
                "kind": "airflow",
                "api_url": region_urls,
                "username": airflow.username,
                "password": {"$secret": "airflow-password"},
            }
        ]
        created = await client.post("/v1/clusters", json=body)
        assert created.status_code == 201, created.text
        pair = created.json()
        put = await client.put(
            f"/v1/clusters/{pair['id']}/secrets/airflow-password",
            json={"value": airflow.password},
        )
        assert put.status_code == 201, put.text

        operation = await start_ok(client, pair["id"])

        async def started() -> bool:
            return await step_status(client, operation["id"], "preflight") == "running"

        await wait_for(started, timeout_s=30)
        # Once the failover has started: a run whose task fails by design.
        triggered = await api.post(f"/api/v2/dags/{failing}/dagRuns", json={"logical_date": None})
        assert triggered.status_code == 200, triggered.text
        run_id = triggered.json()["dag_run_id"]
        first = await wait_for_task(
            airflow, api, failing, run_id, lambda ti: ti["state"] == "failed", "fails by design"
        )
        # The scheduler has finished with the run before the failover ends and it is
        # retried (Airflow's race on SQLite: see test_airflow_client's clear test).
        await wait_for_run_state(airflow, api, failing, run_id, "failed")
        await open_gate(sessions, pair["id"], "preflight")
        done = await wait_done(client, operation["id"], timeout_s=120)
        assert done["status"] == "succeeded", [s["error"] for s in done["steps"]]
        pause = next(s for s in done["steps"] if s["name"] == "pause_schedulers")
        paused = pause["output"]["results"][1]["paused"]["etl"]
        assert failing in paused and idle in paused and held not in paused
        assert any("etl" in w and "task instance" in w for w in done["warnings"])

        # Resumed on the target, except the DAG the person paused.
        assert not await is_paused(api, failing) and not await is_paused(api, idle)
        assert await is_paused(api, held)

        listed = (await client.get(f"/v1/clusters/{pair['id']}/deployments")).json()["items"]
        etl = listed[0]["last_result"]
        assert etl["healthy"] is True and etl["needs_retry"] is True
        mine = [t for t in etl["failed_tasks"] if t["dag_id"] == failing]
        assert [(t["dag_run_id"], t["task_id"], t["state"]) for t in mine] == [
            (run_id, "fails", "failed")
        ]

        retry = await client.post(
            f"/v1/clusters/{pair['id']}/deployments/retry",
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert retry.status_code == 202, retry.text
        retried = await wait_done(client, retry.json()["id"], timeout_s=120)
        assert retried["status"] == "succeeded", [s["error"] for s in retried["steps"]]
        cleared = retried["steps"][0]["output"]["retried"][0]["cleared"]
        assert (failing, run_id, "fails") in {
            (t["dag_id"], t["dag_run_id"], t["task_id"]) for t in cleared
        }
        # It runs again: its try number goes up (and it fails again, by design).
        await wait_for_task(
            airflow,
            api,
            failing,
            run_id,
            lambda ti: ti["try_number"] > first["try_number"] and ti["state"] == "failed",
            "ran again after the retry",
        )
        assert (await client.get(f"/v1/clusters/{pair['id']}")).json()["state"] == (
            "secondary-active"
        )
