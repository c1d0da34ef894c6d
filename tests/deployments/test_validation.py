"""Deployments validated in the target region after a switch (DESIGN.md section 11): real
health servers on loopback, one per region, the real API and worker processes."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.actions.test_http import step_of
from tests.helpers import pair_body, start_ok, wait_done, wait_for
from tests.runbook import Call, Reply, Runbook


@pytest.fixture
def east(runbook: Runbook) -> Runbook:
    return runbook


@pytest.fixture
def west(second_runbook: Runbook) -> Runbook:
    return second_runbook


def serving(healthy: set[str]) -> Any:
    def answer(call: Call) -> Reply:
        name = call.path.rsplit("/", 1)[-1]
        return Reply(200, {"status": "ok"}) if name in healthy else Reply(503, {"status": "down"})

    return answer


def deployments(east: Runbook, west: Runbook) -> list[dict[str, Any]]:
    per_region = {
        "us-east-1": east.url("/health/{name}"),
        "us-west-2": west.url("/health/{name}"),
    }
    return [
        {
            "name": "ledger",
            "critical": True,
            "health": {"url": per_region, "expect": {"status": "ok"}},
        },
        {"name": "reports", "health": {"url": per_region}},
        {"name": "docs"},  # no health check: never validated
    ]


async def create(client: httpx.AsyncClient, east: Runbook, west: Runbook) -> dict[str, Any]:
    body = {**pair_body(), "deployments": deployments(east, west)}
    created = await client.post("/v1/clusters", json=body)
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


async def test_a_critical_deployment_unhealthy_in_the_target_region_fails_the_step(
    client: httpx.AsyncClient, east: Runbook, west: Runbook
) -> None:
    east.answer = serving({"ledger", "reports"})
    west.answer = serving({"reports"})  # the ledger is down where we are going
    pair = await create(client, east, west)
    operation = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
    validate = step_of(operation, "validate_deployments")
    assert validate["status"] == "failed"
    assert "ledger" in validate["error"]["message"] and "us-west-2" in validate["error"]["message"]
    assert "reports" not in validate["error"]["message"]
    assert operation["status"] == "failed" and operation["needs_attention"] is True
    # Checked in the target region only, once each.
    assert sorted(c.path for c in west.of("GET")) == ["/health/ledger", "/health/reports"]
    assert east.of("GET") == []

    listed = (await client.get(f"/v1/clusters/{pair['id']}/deployments")).json()["items"]
    by_name = {d["name"]: d for d in listed}
    assert by_name["ledger"]["last_result"]["healthy"] is False
    assert by_name["ledger"]["last_result"]["region"] == "us-west-2"
    assert by_name["ledger"]["last_result"]["needs_retry"] is True
    assert by_name["reports"]["last_result"]["healthy"] is True
    assert by_name["docs"]["last_result"] is None and by_name["docs"]["has_health_check"] is False

    # Healthy now: retrying the failover validates again and the pair arrives.
    west.answer = serving({"ledger", "reports"})
    retried = await client.post(f"/v1/operations/{operation['id']}/retry")
    assert retried.status_code == 202, retried.text
    assert (await wait_done(client, operation["id"]))["status"] == "succeeded"


async def test_a_non_critical_deployment_unhealthy_is_a_warning(
    client: httpx.AsyncClient, east: Runbook, west: Runbook
) -> None:
    west.answer = serving({"ledger"})
    pair = await create(client, east, west)
    operation = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
    assert operation["status"] == "succeeded"
    assert len(operation["warnings"]) == 1
    assert "reports" in operation["warnings"][0] and "us-west-2" in operation["warnings"][0]
    listed = (await client.get(f"/v1/clusters/{pair['id']}/deployments")).json()["items"]
    assert [d["last_result"]["healthy"] for d in listed[:2]] == [True, False]

    # Failing back validates in the primary's region.
    east.answer = serving({"ledger", "reports"})
    back = await wait_done(client, (await start_ok(client, pair["id"], "failback"))["id"])
    assert back["status"] == "succeeded" and back["warnings"] == []
    assert sorted(c.path for c in east.of("GET")) == ["/health/ledger", "/health/reports"]


async def test_deployment_settings_are_checked_on_save(client: httpx.AsyncClient) -> None:
    bad = [
        [{"name": "a", "health": {"url": "https://{zone}.example/health"}}],
        [{"name": "a", "retry": {"kind": "check", "urls": ["https://x"]}}],
        [{"name": "a", "kind": "airflow", "api_url": {"us-east-1": "https://x"}}],
        [{"name": "a", "username": "u"}],
    ]
    for deployments_ in bad:
        response = await client.post(
            "/v1/clusters", json={**pair_body(), "deployments": deployments_}
        )
        assert response.status_code == 422, (deployments_, response.text)
        assert "deployment 'a'" in response.json()["detail"]


async def test_retry_calls_only_the_failed_ones_then_validates_them_again(
    client: httpx.AsyncClient, east: Runbook, west: Runbook
) -> None:
    west.answer = serving({"ledger"})
    body = {**pair_body(), "deployments": deployments(east, west)}
    body["deployments"][0]["retry"] = {"kind": "http", "url": west.url("/retry/ledger")}
    body["deployments"][1]["retry"] = {"kind": "http", "url": west.url("/retry/reports")}
    created = await client.post("/v1/clusters", json=body)
    assert created.status_code == 201, created.text
    pair = created.json()
    over = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
    assert over["status"] == "succeeded" and over["warnings"]

    healthy = {"ledger"}

    def answer(call: Call) -> Reply:
        if call.method == "POST" and call.path.startswith("/retry/"):
            healthy.add(call.path.rsplit("/", 1)[-1])  # the retry repairs it
            return Reply(200, {"restarted": True})
        return serving(healthy)(call)

    west.answer = answer
    key = {"Idempotency-Key": "retry-1"}
    started = await client.post(f"/v1/clusters/{pair['id']}/deployments/retry", headers=key)
    assert started.status_code == 202, started.text
    assert started.json()["kind"] == "retry_deployments" and started.json()["mode"] is None
    retry = await wait_done(client, started.json()["id"])
    assert retry["status"] == "succeeded", [s["error"] for s in retry["steps"]]
    # Only the failed one was retried, then checked again.
    assert [c.path for c in west.of("POST")] == ["/retry/reports"]
    assert west.of("POST")[0].headers["idempotency-key"] == f"{retry['id']}:retry:1:reports"
    listed = (await client.get(f"/v1/clusters/{pair['id']}/deployments")).json()["items"]
    reports = next(d for d in listed if d["name"] == "reports")["last_result"]
    assert reports["healthy"] is True and reports["operation_id"] == retry["id"]
    # The pair's state is untouched; nothing left to retry now.
    assert (await client.get(f"/v1/clusters/{pair['id']}")).json()["state"] == "secondary-active"
    again = await client.post(
        f"/v1/clusters/{pair['id']}/deployments/retry", headers={"Idempotency-Key": "retry-2"}
    )
    assert again.status_code == 409, again.text


async def test_a_failback_asked_for_during_a_retry_cancels_it_and_runs_after(
    client: httpx.AsyncClient, east: Runbook, west: Runbook
) -> None:
    west.answer = serving({"ledger"})
    body = {**pair_body(gate=[]), "deployments": deployments(east, west)}
    body["deployments"][1]["retry"] = {"kind": "http", "url": west.url("/retry/reports")}
    created = await client.post("/v1/clusters", json=body)
    pair = created.json()
    assert (await wait_done(client, (await start_ok(client, pair["id"]))["id"]))["warnings"]

    release = threading.Event()

    def answer(call: Call) -> Reply:
        if call.path == "/retry/reports":
            return Reply(200, {}, hold=release)  # the retry hangs until the test lets it go
        return serving({"ledger", "reports"})(call)

    west.answer = answer
    east.answer = serving({"ledger", "reports"})
    retry = await client.post(
        f"/v1/clusters/{pair['id']}/deployments/retry", headers={"Idempotency-Key": "r"}
    )
    assert retry.status_code == 202, retry.text

    async def retry_called() -> bool:
        return bool(west.of("POST", "/retry/reports"))

    try:
        await wait_for(retry_called, timeout_s=30)
        back = await start_ok(client, pair["id"], "failback")
        assert back["status"] == "queued"
        # A second side operation is refused while one is unfinished.
        other = await client.post(
            f"/v1/clusters/{pair['id']}/deployments/retry", headers={"Idempotency-Key": "r2"}
        )
        assert other.status_code == 409, other.text
    finally:
        release.set()
    cancelled = await wait_done(client, retry.json()["id"])
    assert cancelled["status"] == "cancelled"
    done = await wait_done(client, back["id"])
    assert done["status"] == "succeeded"
    assert datetime.fromisoformat(done["started_at"]) >= datetime.fromisoformat(
        cancelled["finished_at"]
    )
    assert (await client.get(f"/v1/clusters/{pair['id']}")).json()["state"] == "primary-active"
