from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.helpers import create_cluster, events, start_ok, wait_done


async def test_list_filters_and_pages_through_operations(client: httpx.AsyncClient) -> None:
    cluster = await create_cluster(client)
    cid = cluster["id"]
    over = await start_ok(client, cid, "failover")
    await wait_done(client, over["id"])
    back = await start_ok(client, cid, "failback")
    await wait_done(client, back["id"])

    page = (await client.get("/v1/operations", params={"cluster_id": cid})).json()
    assert [op["id"] for op in page["items"]] == [back["id"], over["id"]]  # newest first

    kinds = await client.get("/v1/operations", params={"cluster_id": cid, "kind": "failback"})
    assert [op["id"] for op in kinds.json()["items"]] == [back["id"]]
    running = await client.get("/v1/operations", params={"cluster_id": cid, "status": "running"})
    assert running.json()["items"] == []

    seen: list[str] = []
    token = None
    while True:
        params = {"cluster_id": cid, "page_size": 1}
        if token:
            params["page_token"] = token
        body = (await client.get("/v1/operations", params=params)).json()
        seen.extend(op["id"] for op in body["items"])
        token = body["next_page_token"]
        if not token:
            break
    assert seen == [back["id"], over["id"]]

    log = await events(client, cid)
    assert [e["sequence"] for e in log] == list(range(1, len(log) + 1))


def _token(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    ["%%%", _token(["not-a-date", "x"]), _token(["2026-01-01T00:00:00", "x"]), _token({"a": 1})],
)
async def test_garbage_page_token_is_400(client: httpx.AsyncClient, token: str) -> None:
    response = await client.get("/v1/operations", params={"page_token": token})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_unknown_operation_is_404_problem(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/v1/operations/op_missing"),
        ("POST", "/v1/operations/op_missing/cancel"),
        ("POST", "/v1/operations/op_missing/retry"),
        ("GET", "/v1/clusters/cl_missing/events"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "not_found"
