"""Tokens, roles, organizations, the audit log and per-token limits, through the running server."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi.routing import APIRoute, iter_route_contexts

from app.config import Settings
from app.main import create_app
from tests.events.test_event_stream import Frame, read
from tests.helpers import (
    component,
    create_cluster,
    documented,
    events,
    pair_body,
    start,
    start_ok,
    wait_done,
    wait_for,
)
from tests.stack import ROOT, Stack

PROBLEM_JSON = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail", "code"} <= set(body), body
    assert body["status"] == status
    assert body["code"] == code, body
    return body


def assert_unauthorized(response: httpx.Response) -> dict[str, Any]:
    body = assert_problem(response, 401, "unauthorized")
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer"), (
        response.headers
    )
    return body


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def as_token(live_stack: Stack, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=live_stack.base_url, timeout=90, headers={"Authorization": f"Bearer {token}"}
    )


async def create_token(client: httpx.AsyncClient, role: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/tokens", json={"name": unique(role), "role": role, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    assert created["token"].startswith("tdm_"), created
    return created


async def all_items(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = None
    while True:
        query: dict[str, Any] = {"page_size": 100, **params}
        if token:
            query["page_token"] = token
        response = await client.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        token = page["next_page_token"]
        # /v1/events always hands back a cursor to poll with: stop at a short page.
        if not token or len(page["items"]) < 100:
            return items


def cli(stack_env: dict[str, str], *args: str) -> str:
    """Run `tandem ARGS` against the test database; its stdout, stripped."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**os.environ, **stack_env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# --- tokens ------------------------------------------------------------------------------


async def test_created_token_is_shown_once_and_never_listed(
    client: httpx.AsyncClient, live_stack: Stack
) -> None:
    created = await create_token(client, "viewer")
    assert created["role"] == "viewer"
    assert "token" in created and created["prefix"] == created["token"][:8]

    response = await client.get("/v1/tokens", params={"page_size": 100})
    assert response.status_code == 200, response.text
    assert created["token"] not in response.text
    listed = await all_items(client, "/v1/tokens")
    assert created["id"] in {t["id"] for t in listed}
    assert all("token" not in t for t in listed), listed

    async with as_token(live_stack, created["token"]) as viewer:
        me = await viewer.get("/v1/me")
        assert me.status_code == 200, me.text
        admin_me = (await client.get("/v1/me")).json()
        assert me.json()["role"] == "viewer"
        assert me.json()["token_id"] == created["id"]
        assert me.json()["token_name"] == created["name"]
        assert me.json()["org_id"] == admin_me["org_id"]
        assert me.json()["org_name"] == admin_me["org_name"]


async def test_viewer_reads_but_cannot_change(client: httpx.AsyncClient, live_stack: Stack) -> None:
    created = await create_token(client, "viewer")
    async with as_token(live_stack, created["token"]) as viewer:
        listed = await viewer.get("/v1/clusters")
        assert listed.status_code == 200, listed.text
        refused = await viewer.post("/v1/clusters", json=pair_body())
        assert_problem(refused, 403, "forbidden")
        assert_problem(await viewer.get("/v1/tokens"), 403, "forbidden")
        assert_problem(
            await viewer.post("/v1/tokens", json={"name": "x", "role": "admin"}), 403, "forbidden"
        )


async def test_revoked_token_is_refused_on_the_next_request(
    client: httpx.AsyncClient, live_stack: Stack
) -> None:
    created = await create_token(client, "operator")
    async with as_token(live_stack, created["token"]) as operator:
        assert (await operator.get("/v1/me")).status_code == 200
        revoked = await client.delete(f"/v1/tokens/{created['id']}")
        assert revoked.status_code == 204, revoked.text
        assert_unauthorized(await operator.get("/v1/me"))
        assert_unauthorized(await operator.get("/v1/clusters"))
    listed = {t["id"]: t for t in await all_items(client, "/v1/tokens")}
    assert listed[created["id"]]["revoked_at"] is not None
    # Revoking again is harmless; an unknown id is a 404.
    assert (await client.delete(f"/v1/tokens/{created['id']}")).status_code == 204
    assert_problem(await client.delete("/v1/tokens/tok_missing"), 404, "not_found")


async def test_token_expires(client: httpx.AsyncClient, live_stack: Stack) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=2)
    created = await create_token(client, "viewer", expires_at=expires.isoformat())
    assert created["expires_at"] is not None
    async with as_token(live_stack, created["token"]) as viewer:
        assert (await viewer.get("/v1/me")).status_code == 200

        async def refused() -> httpx.Response | None:
            response = await viewer.get("/v1/me")
            return response if response.status_code != 200 else None

        response = await wait_for(refused, timeout_s=30, interval_s=0.2)
        assert_unauthorized(response)
    assert datetime.now(UTC) >= expires


@pytest.mark.parametrize(
    "expires_at",
    [
        (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None).isoformat(),
        (datetime.now(UTC) + timedelta(hours=1)).date().isoformat(),
        int((datetime.now(UTC) + timedelta(hours=1)).timestamp()),
        "tomorrow",
    ],
    ids=["no-offset", "date", "unix-time", "text"],
)
async def test_expires_at_needs_a_timezone(client: httpx.AsyncClient, expires_at: Any) -> None:
    name = unique("naive")
    response = await client.post(
        "/v1/tokens", json={"name": name, "role": "viewer", "expires_at": expires_at}
    )
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"][0]["loc"] == ["body", "expires_at"], problem
    assert name not in {t["name"] for t in await all_items(client, "/v1/tokens")}


@pytest.mark.parametrize("limit", [True, "7", 7.0, 7.5, None, 7], ids=repr)
async def test_a_rate_limit_is_taken_exactly_as_the_document_says(
    client: httpx.AsyncClient, limit: Any
) -> None:
    """JSON `true` and "7" are not integers: the document refuses them, so must the server."""
    body = {"name": unique("limit"), "role": "viewer", "rate_limit_per_minute": limit}
    response = await client.post("/v1/tokens", json=body)
    if documented(component("TokenCreate"))(body):
        assert response.status_code == 201, response.text
        revoked = await client.delete(f"/v1/tokens/{response.json()['id']}")
        assert revoked.status_code == 204, revoked.text
    else:
        assert_problem(response, 422, "validation_failed")


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer  tdm_padded",
        "Basic dXNlcjpwYXNz",
        "Bearer garbage",
        "Bearer tdm_",
        "Bearer tdm_" + "x" * 43,
        "Bearer tdm_" + "x" * 300,
        "tdm_nobearer",
    ],
)
async def test_missing_or_garbage_authorization_is_401(
    live_stack: Stack, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=live_stack.base_url, timeout=30) as anonymous:
        assert_unauthorized(await anonymous.get("/v1/clusters", headers=headers))
        assert_unauthorized(await anonymous.post("/v1/clusters", json=pair_body(), headers=headers))


async def test_the_token_never_reaches_the_log(
    client: httpx.AsyncClient, live_stack: Stack
) -> None:
    created = await create_token(client, "operator")
    secret = created["token"]
    async with as_token(live_stack, secret) as operator:
        assert (await operator.get("/v1/me")).status_code == 200
        assert (await operator.get("/v1/no-such-route")).status_code == 404
        assert_problem(await operator.post("/v1/webhooks", json={"url": "x"}), 403, "forbidden")
        assert (await operator.get(f"/v1/clusters/{secret}")).status_code == 404
    assert (await client.delete(f"/v1/tokens/{created['id']}")).status_code == 204
    async with as_token(live_stack, secret) as revoked:
        assert (await revoked.get("/v1/me")).status_code == 401
    assert live_stack.api is not None
    log = live_stack.api.log_path.read_text(errors="replace")
    assert log, "the API log is empty"
    assert secret not in log
    assert secret[len("tdm_") :] not in log


# --- organizations and isolation ---------------------------------------------------------


@pytest_asyncio.fixture
async def other_org(
    live_stack: Stack, stack_env: dict[str, str]
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    name = unique("org")
    token = cli(stack_env, "orgs", "create", name)
    assert token.startswith("tdm_") and "\n" not in token, token
    async with as_token(live_stack, token) as admin:
        yield name, admin


async def test_new_org_has_its_own_admin(
    client: httpx.AsyncClient, other_org: tuple[str, httpx.AsyncClient]
) -> None:
    name, other = other_org
    me = await other.get("/v1/me")
    assert me.status_code == 200, me.text
    assert me.json()["role"] == "admin"
    assert me.json()["org_name"] == name
    assert me.json()["org_id"] != (await client.get("/v1/me")).json()["org_id"]
    # Its token list is its own: one token, none of the default org's.
    tokens = await all_items(other, "/v1/tokens")
    assert [t["id"] for t in tokens] == [me.json()["token_id"]]


async def test_orgs_do_not_see_each_others_clusters(
    client: httpx.AsyncClient, other_org: tuple[str, httpx.AsyncClient]
) -> None:
    _, other = other_org
    mine = await create_cluster(client)
    theirs = await create_cluster(other)
    listed = {c["id"] for c in await all_items(other, "/v1/clusters")}
    assert mine["id"] not in listed
    assert theirs["id"] in listed
    assert theirs["id"] not in {c["id"] for c in await all_items(client, "/v1/clusters")}

    foreign = await other.get(f"/v1/clusters/{mine['id']}")
    missing_id = "cls_" + uuid.uuid4().hex[:20]
    missing = await other.get(f"/v1/clusters/{missing_id}")
    body = assert_problem(foreign, 404, "not_found")
    missing_body = assert_problem(missing, 404, "not_found")
    assert body["detail"].replace(mine["id"], "ID") == missing_body["detail"].replace(
        missing_id, "ID"
    )
    assert {k: v for k, v in body.items() if k != "detail"} == {
        k: v for k, v in missing_body.items() if k != "detail"
    }
    # Nor can it change, delete, fail over or read the events of another org's pair.
    assert_problem(
        await other.patch(f"/v1/clusters/{mine['id']}", json={"name": unique("x")}),
        404,
        "not_found",
    )
    assert_problem(await other.delete(f"/v1/clusters/{mine['id']}"), 404, "not_found")
    assert_problem(await start(other, mine["id"]), 404, "not_found")
    assert_problem(await other.get(f"/v1/clusters/{mine['id']}/events"), 404, "not_found")
    assert (await client.get(f"/v1/clusters/{mine['id']}")).status_code == 200


async def test_idempotency_keys_and_events_are_per_org(
    client: httpx.AsyncClient, other_org: tuple[str, httpx.AsyncClient]
) -> None:
    _, other = other_org
    mine = await create_cluster(client)
    theirs = await create_cluster(other)
    key = uuid.uuid4().hex

    first = await start(client, mine["id"], key=key)
    assert first.status_code == 202, first.text
    replay = await start(client, mine["id"], key=key)
    assert replay.status_code == 202, replay.text
    assert replay.headers.get("idempotent-replayed") == "true"
    assert replay.json()["id"] == first.json()["id"]

    second = await start(other, theirs["id"], key=key)
    assert second.status_code == 202, second.text
    assert "idempotent-replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]
    assert second.json()["cluster_id"] == theirs["id"]

    assert (await wait_done(client, first.json()["id"]))["status"] == "succeeded"
    assert (await wait_done(other, second.json()["id"]))["status"] == "succeeded"
    # The other org cannot read the default org's operation either.
    assert_problem(await other.get(f"/v1/operations/{first.json()['id']}"), 404, "not_found")

    my_events = await all_items(client, f"/v1/clusters/{mine['id']}/events")
    assert my_events, "the failover recorded no events"
    my_clusters = {c["id"] for c in await all_items(client, "/v1/clusters")}
    their_feed = await all_items(other, "/v1/events")
    assert their_feed, "the other org sees no events of its own"
    assert not {e["id"] for e in my_events} & {e["id"] for e in their_feed}
    assert all(e["cluster_id"] not in my_clusters for e in their_feed), their_feed
    assert any(e["cluster_id"] == theirs["id"] for e in their_feed)
    filtered = await all_items(other, "/v1/events", cluster_id=mine["id"])
    assert filtered == []


async def test_event_cursors_count_only_the_orgs_own_events(
    client: httpx.AsyncClient, other_org: tuple[str, httpx.AsyncClient]
) -> None:
    """The stream's ids and the feed's cursor are positions in the organization's own log:
    they tell nobody how many events the other organizations had."""
    _, other = other_org
    mine = await create_cluster(client)
    theirs = await create_cluster(other)
    first = await start_ok(client, mine["id"])
    await wait_done(client, first["id"])
    logged = await events(client, mine["id"])

    async def all_of_mine(got: list[Frame]) -> bool:
        return len(got) >= len(logged)

    mine_so_far = await read(client, {"cluster_id": mine["id"], "after": 0}, {}, all_of_mine)
    last = int(mine_so_far[-1].id or 0)

    # The other organization's events come between two operations of mine.
    theirs_op = await start_ok(other, theirs["id"])
    await wait_done(other, theirs_op["id"])
    back = await start_ok(client, mine["id"], "failback")
    await wait_done(client, back["id"])

    # A new organization's log starts at 1, however many events the others have.
    their_logged = await events(other, theirs["id"])

    async def all_of_theirs(got: list[Frame]) -> bool:
        return len(got) >= len(their_logged)

    their_frames = await read(other, {"after": 0}, {}, all_of_theirs)
    assert [int(f.id or 0) for f in their_frames] == list(range(1, len(their_logged) + 1))
    assert [f.data["id"] for f in their_frames] == [e["id"] for e in their_logged]

    # Mine resume right after my last cursor, with no gap where theirs were.
    async def back_done(got: list[Frame]) -> bool:
        return any(
            f.event == "operation.succeeded" and f.data["data"]["operation_id"] == back["id"]
            for f in got
        )

    resumed = await read(client, {}, {"Last-Event-ID": str(last)}, back_done)
    assert [int(f.id or 0) for f in resumed] == list(range(last + 1, last + 1 + len(resumed)))
    assert theirs["id"] not in {f.data["cluster_id"] for f in resumed}

    # The feed pages by the same cursor: its first page of the other organization is theirs.
    page = await other.get("/v1/events", params={"page_size": 2})
    assert [e["id"] for e in page.json()["items"]] == [e["id"] for e in their_logged[:2]]


async def test_cli_token_for_another_org(
    live_stack: Stack, stack_env: dict[str, str], other_org: tuple[str, httpx.AsyncClient]
) -> None:
    name, other = other_org
    pair = await create_cluster(other)
    token = cli(stack_env, "tokens", "create", "--role", "operator", "--name", "ci", "--org", name)
    assert token.startswith("tdm_") and "\n" not in token, token
    async with as_token(live_stack, token) as operator:
        me = (await operator.get("/v1/me")).json()
        assert (me["role"], me["token_name"], me["org_name"]) == ("operator", "ci", name)
        operation = await start_ok(operator, pair["id"])
        assert operation["cluster_id"] == pair["id"]
        refused = await operator.post(
            "/v1/webhooks", json={"url": "https://example.com/hook", "description": "ci"}
        )
        assert_problem(refused, 403, "forbidden")
        assert (await wait_done(operator, operation["id"]))["status"] == "succeeded"


# --- audit -------------------------------------------------------------------------------


async def audit_row(client: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    rows = [r for r in await all_items(client, "/v1/audit") if r["request_id"] == request_id]
    assert len(rows) == 1, rows
    return rows[0]


async def test_audit_records_who_did_what(client: httpx.AsyncClient, live_stack: Stack) -> None:
    pair = await create_cluster(client, step_delay_ms=300)
    created = await create_token(client, "operator")
    rid = {name: unique(name) for name in ("failover", "refused", "create", "patch")}
    async with as_token(live_stack, created["token"]) as operator:
        accepted = await operator.post(
            f"/v1/clusters/{pair['id']}/failover",
            json={},
            headers={"Idempotency-Key": uuid.uuid4().hex, "X-Request-ID": rid["failover"]},
        )
        assert accepted.status_code == 202, accepted.text
        operation = accepted.json()
        assert operation["requested_by"] is not None
        assert created["id"] in operation["requested_by"]
        assert created["name"] in operation["requested_by"]
        refused = await operator.post(
            f"/v1/clusters/{pair['id']}/failover",
            json={},
            headers={"Idempotency-Key": uuid.uuid4().hex, "X-Request-ID": rid["refused"]},
        )
        assert refused.status_code == 409, refused.text
    hook = await client.post(
        "/v1/webhooks",
        json={"url": "https://example.com/hook", "description": "audit"},
        headers={"X-Request-ID": rid["create"]},
    )
    assert hook.status_code == 201, hook.text
    patched = await client.patch(
        f"/v1/webhooks/{hook.json()['id']}",
        json={"description": "audited", "enabled": False},
        headers={"X-Request-ID": rid["patch"]},
    )
    assert patched.status_code == 200, patched.text
    admin = (await client.get("/v1/me")).json()

    row = await audit_row(client, rid["failover"])
    assert (row["token_id"], row["token_name"]) == (created["id"], created["name"])
    assert (row["action"], row["outcome"], row["status_code"]) == ("failover", "succeeded", 202)
    assert row["method"] == "POST" and row["path"] == f"/v1/clusters/{pair['id']}/failover"
    assert row["target"] == pair["id"]

    row = await audit_row(client, rid["refused"])
    assert (row["token_id"], row["token_name"]) == (created["id"], created["name"])
    assert (row["action"], row["outcome"], row["status_code"]) == ("failover", "refused", 409)

    row = await audit_row(client, rid["create"])
    assert (row["token_id"], row["token_name"]) == (admin["token_id"], admin["token_name"])
    assert (row["action"], row["outcome"], row["status_code"]) == (
        "create_webhook",
        "succeeded",
        201,
    )

    row = await audit_row(client, rid["patch"])
    assert (row["token_id"], row["token_name"]) == (admin["token_id"], admin["token_name"])
    assert (row["action"], row["outcome"], row["status_code"]) == (
        "patch_webhook",
        "succeeded",
        200,
    )
    assert row["target"] == hook.json()["id"]

    # The filters narrow to the operator's rows.
    mine = await all_items(client, "/v1/audit", token_id=created["id"])
    assert {r["request_id"] for r in mine} == {rid["failover"], rid["refused"]}
    refusals = await all_items(client, "/v1/audit", token_id=created["id"], outcome="refused")
    assert [r["request_id"] for r in refusals] == [rid["refused"]]

    # GETs are not audited.
    assert not [r for r in await all_items(client, "/v1/audit") if r["method"] == "GET"]

    await client.delete(f"/v1/webhooks/{hook.json()['id']}")
    await wait_done(client, operation["id"])


async def test_each_refusal_is_audited_with_its_code_before_it_is_sent(
    client: httpx.AsyncClient, live_stack: Stack
) -> None:
    """Read right after each refusal: its row committed before the response left."""
    viewer = await create_token(client, "viewer")
    rid = {name: unique(name) for name in ("forbidden", "invalid", "anonymous")}
    async with as_token(live_stack, viewer["token"]) as caller:
        response = await caller.post(
            "/v1/clusters", json=pair_body(), headers={"X-Request-ID": rid["forbidden"]}
        )
        assert_problem(response, 403, "forbidden")
    row = await audit_row(client, rid["forbidden"])
    assert (row["token_id"], row["action"], row["method"]) == (
        viewer["id"],
        "create_cluster",
        "POST",
    )
    assert (row["outcome"], row["status_code"], row["detail"]) == (
        "refused",
        403,
        {"code": "forbidden"},
    )

    response = await client.post(
        "/v1/clusters", json={"name": ""}, headers={"X-Request-ID": rid["invalid"]}
    )
    assert_problem(response, 422, "validation_failed")
    row = await audit_row(client, rid["invalid"])
    assert (row["outcome"], row["status_code"], row["detail"]) == (
        "refused",
        422,
        {"code": "validation_failed"},
    )

    # No known caller, nobody to name: a 401 is not audited.
    async with as_token(live_stack, "tdm_not-a-token") as stranger:
        response = await stranger.post(
            "/v1/clusters", json=pair_body(), headers={"X-Request-ID": rid["anonymous"]}
        )
        assert_unauthorized(response)
    rows = await all_items(client, "/v1/audit")
    assert not [r for r in rows if r["request_id"] == rid["anonymous"]]


async def test_audit_is_admin_only(client: httpx.AsyncClient, live_stack: Stack) -> None:
    for role in ("viewer", "operator"):
        created = await create_token(client, role)
        async with as_token(live_stack, created["token"]) as caller:
            assert_problem(await caller.get("/v1/audit"), 403, "forbidden")


async def test_audit_is_other_orgs_free(
    client: httpx.AsyncClient, other_org: tuple[str, httpx.AsyncClient]
) -> None:
    _, other = other_org
    await create_cluster(client)
    mine = {r["id"] for r in await all_items(client, "/v1/audit")}
    theirs = await all_items(other, "/v1/audit")
    assert not mine & {r["id"] for r in theirs}


def test_no_route_changes_audit_rows() -> None:
    app = create_app(Settings(redis_url="redis://unused"))
    audit_routes = [
        (str(context.path_format), set(context.methods or ()))
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
        and str(context.path_format).startswith("/v1/audit")
    ]
    assert audit_routes, "no /v1/audit route found"
    for path, methods in audit_routes:
        assert methods - {"HEAD"} == {"GET"}, (path, methods)


@pytest.mark.parametrize("method", ["PATCH", "DELETE", "PUT", "POST"])
async def test_audit_refuses_writes(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/v1/audit", json={})
    assert_problem(response, 405, "http_405")
    assert response.headers["allow"].replace(" ", "").split(",") in (["GET"], ["GET", "HEAD"])


# --- operations record who asked ---------------------------------------------------------


async def test_operation_names_the_requesting_token(
    client: httpx.AsyncClient, live_stack: Stack
) -> None:
    pair = await create_cluster(client)
    created = await create_token(client, "operator")
    async with as_token(live_stack, created["token"]) as operator:
        operation = await start_ok(operator, pair["id"])
        assert created["name"] in operation["requested_by"]
        assert created["id"] in operation["requested_by"]
        assert created["token"] not in operation["requested_by"]
        done = await wait_done(operator, operation["id"])
        assert done["requested_by"] == operation["requested_by"]
    listed = await client.get(f"/v1/operations/{operation['id']}")
    assert listed.json()["requested_by"] == operation["requested_by"]


# --- limits ------------------------------------------------------------------------------


async def test_per_token_rate_limit(client: httpx.AsyncClient, live_stack: Stack) -> None:
    pair = await create_cluster(client)
    created = await create_token(client, "admin", rate_limit_per_minute=5)
    assert created["rate_limit_per_minute"] == 5
    statuses: list[int] = []
    limited: list[httpx.Response] = []
    async with as_token(live_stack, created["token"]) as limited_admin:
        for i in range(8):
            response = await limited_admin.patch(
                f"/v1/clusters/{pair['id']}", json={"deployments": [{"name": f"d{i}"}]}
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                limited.append(response)
        assert statuses == [200] * 5 + [429] * 3, statuses
        for response in limited:
            assert_problem(response, 429, "rate_limited")
            assert int(response.headers["retry-after"]) >= 1
        # Reads are not limited.
        assert (await limited_admin.get(f"/v1/clusters/{pair['id']}")).status_code == 200
    # Another token is not limited by it.
    other = await client.patch(
        f"/v1/clusters/{pair['id']}", json={"deployments": [{"name": "after"}]}
    )
    assert other.status_code == 200, other.text
    assert other.json()["deployments"] == [{"name": "after"}]
