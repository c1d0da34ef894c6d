"""The DR pair resource through the running server: CRUD, paging, ETags, problems."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers import (
    component,
    create_cluster,
    documented,
    open_gate,
    pair_body,
    start_ok,
    wait_done,
)

PROBLEM_JSON = "application/problem+json"


def assert_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail", "code"} <= set(body), body
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"]
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body


def token(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


async def walk(client: httpx.AsyncClient, page_size: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page_token = None
    while True:
        params: dict[str, Any] = {"page_size": page_size}
        if page_token:
            params["page_token"] = page_token
        response = await client.get("/v1/clusters", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"items", "next_page_token"}
        assert len(page["items"]) <= page_size
        items.extend(page["items"])
        page_token = page["next_page_token"]
        if not page_token:
            return items


async def test_create_returns_201_with_location_and_etag(client: httpx.AsyncClient) -> None:
    body = pair_body(step_delay_ms=0)
    response = await client.post("/v1/clusters", json=body)
    assert response.status_code == 201, response.text
    cluster = response.json()
    assert cluster["id"] and isinstance(cluster["id"], str)
    assert response.headers["location"] == f"/v1/clusters/{cluster['id']}"
    assert response.headers["etag"] == '"1"'
    assert cluster["version"] == 1
    assert cluster["name"] == body["name"]
    assert cluster["primary"] == body["primary"]
    assert cluster["secondary"] == body["secondary"]
    assert cluster["deployments"] == body["deployments"]
    assert cluster["driver"] == {
        "kind": "simulated",
        "step_delay_ms": 0,
        "fail": {},
        "fail_transient": {},
        "fail_undo": {},
        "timeout_s": {},
        "gate": [],
        "hold": [],
    }
    assert cluster["state"] == "primary-active"
    assert cluster["active_region"] == "us-east-1"
    assert cluster["last_operation_id"] is None
    assert cluster["needs_attention"] is False
    assert cluster["allowed_actions"] == ["failover"]


async def test_create_defaults_driver_and_deployments(client: httpx.AsyncClient) -> None:
    body = pair_body()
    del body["driver"], body["deployments"]
    response = await client.post("/v1/clusters", json=body)
    assert response.status_code == 201, response.text
    cluster = response.json()
    assert cluster["driver"] == {
        "kind": "simulated",
        "step_delay_ms": 0,
        "fail": {},
        "fail_transient": {},
        "fail_undo": {},
        "timeout_s": {},
        "gate": [],
        "hold": [],
    }
    assert cluster["deployments"] == []


async def test_get_returns_the_pair_with_its_etag(client: httpx.AsyncClient) -> None:
    created = await create_cluster(client)
    response = await client.get(f"/v1/clusters/{created['id']}")
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == f'"{created["version"]}"'
    # The runbook secret is shown once, in the 201 body, and never again.
    secret = created.pop("runbook_secret")
    assert secret.startswith("whsec_")
    assert response.json() == created
    assert secret not in response.text


async def test_list_page_size_one_walks_every_item_exactly_once(
    client: httpx.AsyncClient,
) -> None:
    mine = {(await create_cluster(client))["id"] for _ in range(3)}
    one_by_one = await walk(client, page_size=1)
    ids = [c["id"] for c in one_by_one]
    assert len(ids) == len(set(ids)), "an item was returned twice"
    assert mine <= set(ids)
    # The same set, in the same order, as with large pages.
    assert ids == [c["id"] for c in await walk(client, page_size=100)]


async def test_list_last_page_has_no_token(client: httpx.AsyncClient) -> None:
    await create_cluster(client)
    response = await client.get("/v1/clusters", params={"page_size": 100})
    assert response.status_code == 200, response.text
    page = response.json()
    if len(page["items"]) < 100:
        assert page["next_page_token"] is None


@pytest.mark.parametrize(
    "garbage",
    [
        "garbage!!",
        "%%%",
        "bm90IGpzb24",  # base64 of "not json"
        token({"a": 1}),
        token([1]),
        token(["not-a-date", "x"]),
        token([12345, "x"]),
        token(["2020-01-01T00:00:00", "x"]),  # a naive timestamp
    ],
)
async def test_list_garbage_page_token_is_400_problem(
    client: httpx.AsyncClient, garbage: str
) -> None:
    response = await client.get("/v1/clusters", params={"page_token": garbage})
    assert_problem(response, 400, "bad_request")


async def test_list_bad_page_size_is_422_problem(client: httpx.AsyncClient) -> None:
    for size in ["0", "101", "many"]:
        response = await client.get("/v1/clusters", params={"page_size": size})
        assert_problem(response, 422, "validation_failed")


async def test_patch_with_matching_if_match_bumps_version(client: httpx.AsyncClient) -> None:
    created = await create_cluster(client)
    response = await client.patch(
        f"/v1/clusters/{created['id']}",
        json={"deployments": [{"name": "search"}]},
        headers={"If-Match": f'"{created["version"]}"'},
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["version"] == created["version"] + 1
    assert response.headers["etag"] == f'"{created["version"] + 1}"'
    assert patched["deployments"] == [{"name": "search"}]
    assert patched["name"] == created["name"]
    got = (await client.get(f"/v1/clusters/{created['id']}")).json()
    assert got["version"] == created["version"] + 1
    assert got["deployments"] == [{"name": "search"}]


async def test_patch_with_stale_if_match_is_412_problem(client: httpx.AsyncClient) -> None:
    created = await create_cluster(client)
    stale = f'"{created["version"]}"'
    first = await client.patch(
        f"/v1/clusters/{created['id']}", json={"deployments": []}, headers={"If-Match": stale}
    )
    assert first.status_code == 200, first.text
    second = await client.patch(
        f"/v1/clusters/{created['id']}",
        json={"deployments": [{"name": "lost-update"}]},
        headers={"If-Match": stale},
    )
    body = assert_problem(second, 412, "precondition_failed")
    assert body["current_version"] == created["version"] + 1
    got = (await client.get(f"/v1/clusters/{created['id']}")).json()
    assert got["deployments"] == [] and got["version"] == created["version"] + 1


async def test_patch_driver_settings(client: httpx.AsyncClient) -> None:
    created = await create_cluster(client)
    driver = {"kind": "simulated", "step_delay_ms": 25, "fail": {"switch_traffic": 2}}
    response = await client.patch(f"/v1/clusters/{created['id']}", json={"driver": driver})
    assert response.status_code == 200, response.text
    # The settings not given take their defaults.
    driver |= {"fail_transient": {}, "fail_undo": {}, "timeout_s": {}, "gate": [], "hold": []}
    assert response.json()["driver"] == driver
    got = (await client.get(f"/v1/clusters/{created['id']}")).json()
    assert got["driver"] == driver
    assert got["primary"] == created["primary"] and got["secondary"] == created["secondary"]


async def test_patch_rename_and_rename_to_taken_name(client: httpx.AsyncClient) -> None:
    first = await create_cluster(client)
    second = await create_cluster(client)
    new_name = first["name"] + "-renamed"
    response = await client.patch(f"/v1/clusters/{first['id']}", json={"name": new_name})
    assert response.status_code == 200, response.text
    assert response.json()["name"] == new_name
    taken = await client.patch(f"/v1/clusters/{second['id']}", json={"name": new_name})
    assert_problem(taken, 409, "conflict")


async def test_patch_sites_are_fixed(client: httpx.AsyncClient) -> None:
    created = await create_cluster(client)
    response = await client.patch(
        f"/v1/clusters/{created['id']}",
        json={"primary": {"name": "x", "region": "eu-west-1", "cloud": "aws"}},
    )
    assert_problem(response, 422, "validation_failed")


async def test_delete_then_get_is_404(client: httpx.AsyncClient) -> None:
    created = await create_cluster(client)
    response = await client.delete(f"/v1/clusters/{created['id']}")
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_problem(await client.get(f"/v1/clusters/{created['id']}"), 404, "not_found")
    assert_problem(await client.delete(f"/v1/clusters/{created['id']}"), 404, "not_found")
    listed = {c["id"] for c in await walk(client, page_size=100)}
    assert created["id"] not in listed


async def test_delete_with_stale_if_match_is_412(client: httpx.AsyncClient) -> None:
    created = await create_cluster(client)
    response = await client.delete(f"/v1/clusters/{created['id']}", headers={"If-Match": '"99"'})
    assert_problem(response, 412, "precondition_failed")
    ok = await client.delete(f"/v1/clusters/{created['id']}", headers={"If-Match": '"1"'})
    assert ok.status_code == 204, ok.text


async def test_duplicate_name_is_409_problem(client: httpx.AsyncClient) -> None:
    body = pair_body()
    first = await client.post("/v1/clusters", json=body)
    assert first.status_code == 201, first.text
    second = await client.post("/v1/clusters", json=body)
    problem = assert_problem(second, 409, "conflict")
    assert problem["name"] == body["name"]


async def test_same_region_on_both_sides_is_422_problem(client: httpx.AsyncClient) -> None:
    body = pair_body()
    body["secondary"]["region"] = body["primary"]["region"]
    problem = assert_problem(await client.post("/v1/clusters", json=body), 422)
    assert problem["code"] == "validation_failed"
    assert "region" in problem["detail"]
    assert problem["errors"]


async def test_unknown_field_is_422_problem(client: httpx.AsyncClient) -> None:
    body = {**pair_body(), "colour": "blue"}
    problem = assert_problem(await client.post("/v1/clusters", json=body), 422)
    assert problem["code"] == "validation_failed"
    assert any(e["loc"][-1] == "colour" for e in problem["errors"])
    nested = pair_body()
    nested["driver"]["jitter"] = 3
    assert_problem(await client.post("/v1/clusters", json=nested), 422, "validation_failed")


@pytest.mark.parametrize(
    "driver",
    [
        {"step_delay_ms": True},
        {"step_delay_ms": "5"},
        {"step_delay_ms": 5.0},
        {"step_delay_ms": 5.5},
        {"fail": {"preflight": True}},
        {"fail_undo": {"preflight": "1"}},
        {"timeout_s": {"preflight": "2"}},
        {"timeout_s": {"preflight": False}},
        {"timeout_s": {"preflight": 2}},
    ],
    ids=str,
)
async def test_driver_numbers_are_taken_exactly_as_the_document_says(
    client: httpx.AsyncClient, driver: dict[str, Any]
) -> None:
    """JSON `true` and "5" are not numbers: the document refuses them, so must the server
    (pydantic alone took them as 1 and 5)."""
    valid = documented(component("SimulatedDriver"))
    response = await client.post("/v1/clusters", json=pair_body(**driver))
    if valid({"kind": "simulated", **driver}):
        assert response.status_code == 201, response.text
    else:
        assert_problem(response, 422, "validation_failed")


AIRFLOW = {"api_url": {"us-east-1": "http://airflow.example/"}, "username": "u", "password": "p"}


@pytest.mark.parametrize(
    "deployment",
    [
        {"username": "u"},
        {"password": "p"},
        {"api_url": {}},
        {"kind": "airflow"},
        {"kind": "airflow", **AIRFLOW},
        {"kind": "airflow", **AIRFLOW, "password": ""},
        {"kind": None, "username": None},
        {"critical": 1},
        {"critical": True},
    ],
    ids=str,
)
async def test_a_deployment_is_taken_exactly_as_the_document_says(
    client: httpx.AsyncClient, deployment: dict[str, Any]
) -> None:
    """What schemathesis found: `username` without `"kind": "airflow"` was valid by the
    document but refused (and `"critical": 1` invalid by it but taken)."""
    deployment = {"name": "ledger", **deployment}
    valid = documented(component("Deployment"))
    response = await client.post("/v1/clusters", json={**pair_body(), "deployments": [deployment]})
    if valid(deployment):
        assert response.status_code == 201, response.text
    else:
        assert_problem(response, 422, "validation_failed")


async def test_malformed_json_body_is_400_malformed_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/clusters",
        content=b'{"name": "half',
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 400, "malformed_body")
    created = await create_cluster(client)
    patch = await client.patch(
        f"/v1/clusters/{created['id']}",
        content=b"{not json}",
        headers={"content-type": "application/json"},
    )
    assert_problem(patch, 400, "malformed_body")


async def test_unknown_cluster_is_404_problem(client: httpx.AsyncClient) -> None:
    for response in [
        await client.get("/v1/clusters/cl_doesnotexist"),
        await client.patch("/v1/clusters/cl_doesnotexist", json={"deployments": []}),
        await client.delete("/v1/clusters/cl_doesnotexist"),
    ]:
        problem = assert_problem(response, 404, "not_found")
        assert set(problem) >= {"type", "title", "status", "detail", "code"}
        assert "cl_doesnotexist" in problem["detail"]


async def test_patch_and_delete_while_an_operation_runs_are_409(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # The failover waits at preflight until the test lets it go.
    cluster = await create_cluster(client, gate=["preflight"])
    cid = cluster["id"]
    op = await start_ok(client, cid, "failover")

    patch = await client.patch(f"/v1/clusters/{cid}", json={"deployments": []})
    patched = assert_problem(patch, 409, "operation_in_progress")
    assert patched["operation_id"] == op["id"]
    delete = await client.delete(f"/v1/clusters/{cid}")
    deleted = assert_problem(delete, 409)
    assert deleted["current_state"] == "failing-over"
    assert deleted["allowed_actions"] == ["cancel", "retry"]

    await open_gate(sessions, cid, "preflight")
    done = await wait_done(client, op["id"])
    assert done["status"] == "succeeded", done
    # Nothing was changed by the refused requests; now both are allowed.
    after = (await client.get(f"/v1/clusters/{cid}")).json()
    assert after["state"] == "secondary-active"
    assert after["deployments"] == cluster["deployments"]
    patch = await client.patch(f"/v1/clusters/{cid}", json={"deployments": []})
    assert patch.status_code == 200, patch.text
    delete = await client.delete(f"/v1/clusters/{cid}")
    assert delete.status_code == 204, delete.text
    assert_problem(await client.get(f"/v1/clusters/{cid}"), 404, "not_found")


async def test_delete_mid_switch_past_point_of_no_return_is_409(
    client: httpx.AsyncClient,
) -> None:
    cluster = await create_cluster(client, fail={"promote_target": 1})
    cid = cluster["id"]
    op = await start_ok(client, cid, "failover")
    done = await wait_done(client, op["id"])
    assert done["status"] == "failed", done
    stuck = (await client.get(f"/v1/clusters/{cid}")).json()
    assert stuck["state"] == "failing-over"
    assert stuck["needs_attention"] is True

    problem = assert_problem(await client.delete(f"/v1/clusters/{cid}"), 409)
    assert problem["current_state"] == "failing-over"
    assert problem["allowed_actions"] == ["cancel", "retry"]
    assert "failing-over" in problem["detail"]
    still = await client.get(f"/v1/clusters/{cid}")
    assert still.status_code == 200, still.text
    assert still.json()["state"] == "failing-over"
