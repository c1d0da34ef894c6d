"""The Airflow client (app/deployments/airflow.py) against a real Airflow 3.3.2 (the
`airflow` fixture, tests/airflow.py): health, failed task instances listed and cleared so
they run again, DAGs paused and resumed, errors that never show the password.

Independent of Tandem's database: runs in the first backend's pass only.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app import outbound
from app.deployments import airflow as client_module
from app.deployments.airflow import AirflowClient, AirflowError, TaskInstance
from tests.airflow import Airflow, failing_dag, idle_dag
from tests.backends import backends
from tests.conftest import BACKEND
from tests.helpers import wait_for
from tests.stack import free_port

_FIRST_BACKEND = backends()[0]
pytestmark = pytest.mark.skipif(
    _FIRST_BACKEND != BACKEND,
    reason=f"independent of the database backend; runs in the {_FIRST_BACKEND} pass only",
)

LOOPBACK = outbound.reach(outbound.Networks.ALL)
# A DAG file appears in the API within a few seconds; a task runs within some more.
DAG_TIMEOUT_S = 60
TASK_TIMEOUT_S = 120


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """Tandem's guarded outbound client, as actions use it."""
    async with outbound.client() as client:
        yield client


def client_for(airflow: Airflow, http: httpx.AsyncClient, **kwargs: Any) -> AirflowClient:
    return AirflowClient(
        http,
        airflow.base_url,
        username=kwargs.pop("username", airflow.username),
        password=kwargs.pop("password", airflow.password),
        extensions=kwargs.pop("extensions", LOOPBACK),
        **kwargs,
    )


def unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


async def wait_for_dag(api: httpx.AsyncClient, dag_id: str) -> dict[str, Any]:
    async def parsed() -> dict[str, Any] | None:
        response = await api.get(f"/api/v2/dags/{dag_id}")
        return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]

    return await wait_for(parsed, timeout_s=DAG_TIMEOUT_S, interval_s=0.5)  # type: ignore[no-any-return]


async def set_paused(api: httpx.AsyncClient, dag_id: str, paused: bool) -> None:
    response = await api.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": paused})
    assert response.status_code == 200, response.text


async def is_paused(api: httpx.AsyncClient, dag_id: str) -> bool:
    response = await api.get(f"/api/v2/dags/{dag_id}")
    assert response.status_code == 200, response.text
    return bool(response.json()["is_paused"])


async def wait_for_task(
    airflow: Airflow,
    api: httpx.AsyncClient,
    dag_id: str,
    run_id: str,
    done: Callable[[dict[str, Any]], bool],
    what: str,
) -> dict[str, Any]:
    """The run's task instance once `done` holds; on time out, what it was and Airflow's
    log."""
    deadline = time.monotonic() + TASK_TIMEOUT_S
    while True:
        ti = await task_instance(api, dag_id, run_id)
        if done(ti):
            return ti
        if time.monotonic() > deadline:
            fields = {k: ti.get(k) for k in ("state", "try_number", "start_date", "end_date")}
            pytest.fail(
                f"{what}: not in {TASK_TIMEOUT_S} s; {fields}\n"
                f"{await _airflow_state(airflow, api, dag_id, run_id)}\n{airflow.log_tail(80)}"
            )
        await asyncio.sleep(0.5)


async def _airflow_state(airflow: Airflow, api: httpx.AsyncClient, dag_id: str, run_id: str) -> str:
    """What a task that does not run may be waiting for: its run, its DAG, the scheduler."""
    run = (await api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")).json()
    health = (await api.get("/api/v2/monitor/health")).json()
    scheduler = [
        line
        for line in airflow.log_tail(5000).splitlines()
        if line.startswith(("scheduler", "triggerer"))
    ][-15:]
    return (
        f"run state {run.get('state')!r}, DAG paused {await is_paused(api, dag_id)}, "
        f"health {health}\nthe scheduler's last lines:\n" + "\n".join(scheduler)
    )


async def wait_for_run_state(
    airflow: Airflow, api: httpx.AsyncClient, dag_id: str, run_id: str, state: str
) -> None:
    deadline = time.monotonic() + TASK_TIMEOUT_S
    while True:
        response = await api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        assert response.status_code == 200, response.text
        if response.json()["state"] == state:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the run is not {state} in {TASK_TIMEOUT_S} s\n{airflow.log_tail(80)}")
        await asyncio.sleep(0.5)


async def task_instance(api: httpx.AsyncClient, dag_id: str, run_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    assert response.status_code == 200, response.text
    (ti,) = response.json()["task_instances"]
    return ti  # type: ignore[no-any-return]


async def test_health_reports_every_component_healthy(
    airflow: Airflow, http: httpx.AsyncClient
) -> None:
    healthy, detail = await client_for(airflow, http).health()
    assert healthy, detail
    assert "scheduler" in detail


async def test_a_failed_task_is_listed_then_cleared_and_runs_again(
    airflow: Airflow, http: httpx.AsyncClient
) -> None:
    dag_id = unique("fails_by_design")
    airflow.write_dag(dag_id, failing_dag(dag_id, task_id="fails"))
    client = client_for(airflow, http)
    async with airflow.client() as api:
        await wait_for_dag(api, dag_id)
        await set_paused(api, dag_id, False)
        before_trigger = datetime.now(UTC)
        response = await api.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})
        assert response.status_code == 200, response.text
        run_id = response.json()["dag_run_id"]

        first = await wait_for_task(
            airflow, api, dag_id, run_id, lambda ti: ti["state"] == "failed", "the task failed"
        )
        after_failure = datetime.now(UTC)
        # As after a failover, the scheduler has finished with the run before it is
        # retried. (On SQLite, a run that is cleared while the scheduler marks it failed
        # can stay failed with its task never queued again: the scheduler read the task's
        # state before the clear and wrote the run's after it, with no row lock between.)
        await wait_for_run_state(airflow, api, dag_id, run_id, "failed")

        listed = await client.failed_task_instances(since=before_trigger)
        mine = [ti for ti in listed if ti["dag_id"] == dag_id]
        assert mine == [
            TaskInstance(
                dag_id=dag_id,
                dag_run_id=run_id,
                task_id="fails",
                map_index=-1,
                try_number=first["try_number"],
                state="failed",
                end_date=first["end_date"],
            )
        ]
        # The window starts at `since`: a failure before it is not listed.
        later = await client.failed_task_instances(since=after_failure)
        assert not [ti for ti in later if ti["dag_id"] == dag_id]
        assert await client.failed_task_instances(since=before_trigger, dag_ids=["nope"]) == []

        cleared = await client.clear(mine, note="cleared by Tandem's test")
        assert [(ti["dag_id"], ti["dag_run_id"], ti["task_id"]) for ti in cleared] == [
            (dag_id, run_id, "fails")
        ]

        second = await wait_for_task(
            airflow,
            api,
            dag_id,
            run_id,
            lambda ti: ti["try_number"] > first["try_number"] and ti["state"] == "failed",
            "the cleared task ran and failed again",
        )
        assert second["try_number"] == first["try_number"] + 1
        assert second["note"] == "cleared by Tandem's test"

        # A run that does not exist (any more) is passed over.
        gone: TaskInstance = {**mine[0], "dag_run_id": "no-such-run"}
        assert await client.clear([gone]) == []
        await set_paused(api, dag_id, True)


async def test_pause_all_then_resume_leaves_a_dag_a_person_paused_paused(
    airflow: Airflow, http: httpx.AsyncClient
) -> None:
    running, paused_by_a_person = unique("running"), unique("paused_by_a_person")
    for dag_id in (running, paused_by_a_person):
        airflow.write_dag(dag_id, idle_dag(dag_id))
    client = client_for(airflow, http)
    async with airflow.client() as api:
        for dag_id in (running, paused_by_a_person):
            await wait_for_dag(api, dag_id)
        # New DAGs are paused at creation: one is unpaused, the other a person keeps paused.
        await set_paused(api, running, False)
        assert await is_paused(api, paused_by_a_person)

        paused = await client.pause_all()
        assert running in paused
        assert paused_by_a_person not in paused
        assert await is_paused(api, running)
        assert await client.unpaused_dags() == []

        resumed = await client.resume(paused)
        assert resumed == paused
        assert not await is_paused(api, running)
        assert await is_paused(api, paused_by_a_person)
        # A DAG that is gone is passed over.
        assert await client.resume(["no_such_dag"]) == []
        await set_paused(api, running, True)


async def test_a_wrong_password_is_a_permanent_error_that_does_not_show_it(
    airflow: Airflow, http: httpx.AsyncClient
) -> None:
    password = "wrong-" + secrets.token_urlsafe(16)
    client = client_for(airflow, http, password=password)
    with pytest.raises(AirflowError) as caught:
        await client.pause_all()
    error = caught.value
    assert not error.transient
    assert error.status == 401
    assert error.paused == []
    assert airflow.username in error.message
    for text in (error.message, str(error), repr(error), repr(client)):
        assert password not in text
        assert airflow.password not in text
    # Health needs no credentials: Airflow's own answer.
    assert (await client.health())[0]


async def test_a_token_airflow_rejects_is_fetched_again_once(
    airflow: Airflow, http: httpx.AsyncClient
) -> None:
    client = client_for(airflow, http)
    await client.unpaused_dags()  # a token, cached
    key = client._cache_key
    good = client_module._tokens[key][0]
    # As if the deployment's JWT secret had changed: Airflow answers 403 "Invalid JWT token".
    client_module._tokens[key] = (good[:-4] + "AAAA", float("inf"))
    assert isinstance(await client.unpaused_dags(), list)
    assert client_module._tokens[key][0] != good[:-4] + "AAAA"


async def test_an_airflow_out_of_reach_is_unhealthy_and_its_errors_are_transient(
    http: httpx.AsyncClient,
) -> None:
    password = secrets.token_urlsafe(16)
    dead = AirflowClient(
        http,
        f"http://127.0.0.1:{free_port()}",
        username="admin",
        password=password,
        extensions=LOOPBACK,
        timeout=5,
    )
    healthy, detail = await dead.health()
    assert not healthy
    assert "could not be reached" in detail
    with pytest.raises(AirflowError) as caught:
        await dead.failed_task_instances(since=datetime.now(UTC))
    assert caught.value.transient
    assert password not in caught.value.message


async def test_the_callers_extensions_decide_what_it_may_reach(
    airflow: Airflow, http: httpx.AsyncClient
) -> None:
    # Without the caller's `reach(ALL)`, the guarded client refuses loopback: permanent.
    client = client_for(airflow, http, extensions=None)
    healthy, detail = await client.health()
    assert not healthy
    assert "not reachable from here" in detail
    with pytest.raises(AirflowError) as caught:
        await client.unpaused_dags()
    assert not caught.value.transient
