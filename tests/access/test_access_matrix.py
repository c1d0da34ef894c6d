"""Every route, built from the application's own route table: no token -> 401, a role
too low -> 403, another organization's token -> 404, the role the route needs -> success.

A route that is not in MATRIX (or PUBLIC) fails `test_matrix_covers_every_route`, so a
new route cannot ship without saying who may call it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi.routing import APIRoute, iter_route_contexts

from app.config import Settings
from app.main import create_app, required_role
from tests.helpers import create_cluster, pair_body, start_ok, wait_done, wait_for
from tests.stack import ROOT, Stack


@dataclass
class Call:
    method: str
    path: str
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] | None = None


@dataclass
class World:
    admin: httpx.AsyncClient  # the default organization's bootstrap admin

    async def cluster(self, **driver: Any) -> str:
        return str((await create_cluster(self.admin, **driver))["id"])

    async def failed_over(self) -> str:
        cid = await self.cluster()
        await wait_done(self.admin, (await start_ok(self.admin, cid))["id"])
        return cid

    async def operation(self) -> str:
        cid = await self.cluster()
        op = await start_ok(self.admin, cid)
        await wait_done(self.admin, op["id"])
        return str(op["id"])

    async def webhook(self, **body: Any) -> str:
        response = await self.admin.post(
            "/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", **body}
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def delivery(self) -> tuple[str, str]:
        endpoint = await self.webhook(event_types=["operation.created"])
        await self.operation()
        page = (await self.admin.get(f"/v1/webhooks/{endpoint}/deliveries")).json()
        return endpoint, page["items"][0]["id"]

    async def secret(self) -> str:
        """The path of a secret put on a new pair."""
        at = f"/v1/clusters/{await self.cluster()}/secrets/token"
        response = await self.admin.put(at, json={"value": "matrix"})
        assert response.status_code == 201, response.text
        return at

    async def awaiting_approval(self) -> str:
        """An operation whose first step waits for a person."""
        body = pair_body()
        del body["driver"]
        body["plan"] = {
            "steps": [
                {"name": "approve", "action": {"kind": "approval"}},
                {"name": "go", "action": {"kind": "simulated"}, "point_of_no_return": True},
            ]
        }
        created = await self.admin.post("/v1/clusters", json=body)
        assert created.status_code == 201, created.text
        op = await start_ok(self.admin, created.json()["id"])

        async def waiting() -> bool:
            got = (await self.admin.get(f"/v1/operations/{op['id']}")).json()
            return got["awaiting_approval"] is not None

        await wait_for(waiting, timeout_s=30)
        return str(op["id"])

    async def token(self) -> str:
        body = {"name": f"t-{uuid.uuid4().hex[:6]}", "role": "viewer"}
        response = await self.admin.post("/v1/tokens", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


Build = Callable[[World], Awaitable[Call]]


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


async def _create_cluster(w: World) -> Call:
    return Call("POST", "/v1/clusters", json=pair_body())


async def _list_clusters(w: World) -> Call:
    return Call("GET", "/v1/clusters")


async def _get_cluster(w: World) -> Call:
    return Call("GET", f"/v1/clusters/{await w.cluster()}")


async def _patch_cluster(w: World) -> Call:
    return Call("PATCH", f"/v1/clusters/{await w.cluster()}", json={"deployments": []})


async def _delete_cluster(w: World) -> Call:
    return Call("DELETE", f"/v1/clusters/{await w.cluster()}")


async def _failover(w: World) -> Call:
    return Call("POST", f"/v1/clusters/{await w.cluster()}/failover", json={}, headers=key())


async def _failback(w: World) -> Call:
    return Call("POST", f"/v1/clusters/{await w.failed_over()}/failback", json={}, headers=key())


async def _drill(w: World) -> Call:
    return Call("POST", f"/v1/clusters/{await w.cluster()}/drills", json={}, headers=key())


async def _cluster_events(w: World) -> Call:
    return Call("GET", f"/v1/clusters/{await w.cluster()}/events")


async def _report(w: World) -> Call:
    return Call("GET", f"/v1/clusters/{await w.failed_over()}/report")


async def _put_secret(w: World) -> Call:
    return Call("PUT", f"/v1/clusters/{await w.cluster()}/secrets/token", json={"value": "v"})


async def _list_secrets(w: World) -> Call:
    return Call("GET", (await w.secret()).rsplit("/", 1)[0])


async def _get_secret(w: World) -> Call:
    return Call("GET", await w.secret())


async def _delete_secret(w: World) -> Call:
    return Call("DELETE", await w.secret())


async def _rotate_runbook_secret(w: World) -> Call:
    return Call("POST", f"/v1/clusters/{await w.cluster()}/rotate-runbook-secret")


async def _readiness(w: World) -> Call:
    return Call("GET", f"/v1/clusters/{await w.cluster()}/readiness", params={"fresh": "true"})


async def _deployments(w: World) -> Call:
    return Call("GET", f"/v1/clusters/{await w.cluster()}/deployments")


async def _retry_deployments(w: World) -> Call:
    body = pair_body()
    body["deployments"] = [{"name": "api", "health": {"url": "http://127.0.0.1:9/{name}"}}]
    created = await w.admin.post("/v1/clusters", json=body)
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    assert (await wait_done(w.admin, (await start_ok(w.admin, cid))["id"]))["warnings"]
    return Call("POST", f"/v1/clusters/{cid}/deployments/retry", headers=key())


async def _approve(w: World) -> Call:
    return Call("POST", f"/v1/operations/{await w.awaiting_approval()}/approve", json={})


async def _reject(w: World) -> Call:
    return Call("POST", f"/v1/operations/{await w.awaiting_approval()}/reject", json={})


async def _get_operation(w: World) -> Call:
    return Call("GET", f"/v1/operations/{await w.operation()}")


async def _list_operations(w: World) -> Call:
    return Call("GET", "/v1/operations")


async def _cancel(w: World) -> Call:
    cid = await w.cluster(step_delay_ms=3000)  # preflight alone takes 3 s: cancellable
    return Call("POST", f"/v1/operations/{(await start_ok(w.admin, cid))['id']}/cancel")


async def _retry(w: World) -> Call:
    cid = await w.cluster(fail={"promote_target": 1})
    op = await start_ok(w.admin, cid)
    assert (await wait_done(w.admin, op["id"]))["needs_attention"]
    return Call("POST", f"/v1/operations/{op['id']}/retry")


async def _events(w: World) -> Call:
    return Call("GET", "/v1/events")


async def _stream(w: World) -> Call:
    return Call("GET", "/v1/events/stream", params={"after": 0})


async def _create_webhook(w: World) -> Call:
    return Call("POST", "/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})


async def _list_webhooks(w: World) -> Call:
    return Call("GET", "/v1/webhooks")


async def _get_webhook(w: World) -> Call:
    return Call("GET", f"/v1/webhooks/{await w.webhook()}")


async def _patch_webhook(w: World) -> Call:
    return Call("PATCH", f"/v1/webhooks/{await w.webhook()}", json={"description": "x"})


async def _delete_webhook(w: World) -> Call:
    return Call("DELETE", f"/v1/webhooks/{await w.webhook()}")


async def _rotate(w: World) -> Call:
    return Call("POST", f"/v1/webhooks/{await w.webhook()}/rotate-secret")


async def _ping(w: World) -> Call:
    return Call("POST", f"/v1/webhooks/{await w.webhook()}/test")


async def _deliveries(w: World) -> Call:
    endpoint, _ = await w.delivery()
    return Call("GET", f"/v1/webhooks/{endpoint}/deliveries")


async def _delivery(w: World) -> Call:
    endpoint, delivery = await w.delivery()
    return Call("GET", f"/v1/webhooks/{endpoint}/deliveries/{delivery}")


async def _redeliver(w: World) -> Call:
    endpoint, delivery = await w.delivery()
    return Call("POST", f"/v1/webhooks/{endpoint}/deliveries/{delivery}/redeliver")


async def _me(w: World) -> Call:
    return Call("GET", "/v1/me")


async def _metrics(w: World) -> Call:
    return Call("GET", "/metrics")


async def _create_token(w: World) -> Call:
    return Call("POST", "/v1/tokens", json={"name": "matrix", "role": "viewer"})


async def _list_tokens(w: World) -> Call:
    return Call("GET", "/v1/tokens")


async def _revoke_token(w: World) -> Call:
    return Call("DELETE", f"/v1/tokens/{await w.token()}")


async def _audit(w: World) -> Call:
    return Call("GET", "/v1/audit")


async def _region(w: World) -> str:
    """A region of its own with one pair active in it (an evacuation moves it)."""
    region = f"matrix-{uuid.uuid4().hex[:8]}"
    body = pair_body()
    body["primary"]["region"] = region
    created = await w.admin.post("/v1/clusters", json=body)
    assert created.status_code == 201, created.text
    return region


async def _evacuate(w: World) -> Call:
    return Call("POST", f"/v1/regions/{await _region(w)}/evacuate", json={}, headers=key())


async def _batch(w: World) -> str:
    started = await w.admin.post(f"/v1/regions/{await _region(w)}/evacuate", json={}, headers=key())
    assert started.status_code == 202, started.text
    return str(started.json()["id"])


async def _list_batches(w: World) -> Call:
    return Call("GET", "/v1/batches")


async def _get_batch(w: World) -> Call:
    return Call("GET", f"/v1/batches/{await _batch(w)}")


async def _cancel_batch(w: World) -> Call:
    return Call("POST", f"/v1/batches/{await _batch(w)}/cancel")


# (method, path) -> (the role it needs, how to build a call that succeeds, success codes)
MATRIX: dict[tuple[str, str], tuple[str, Build, set[int]]] = {
    ("POST", "/v1/clusters"): ("admin", _create_cluster, {201}),
    ("GET", "/v1/clusters"): ("viewer", _list_clusters, {200}),
    ("GET", "/v1/clusters/{cluster_id}"): ("viewer", _get_cluster, {200}),
    ("PATCH", "/v1/clusters/{cluster_id}"): ("admin", _patch_cluster, {200}),
    ("DELETE", "/v1/clusters/{cluster_id}"): ("admin", _delete_cluster, {204}),
    ("POST", "/v1/clusters/{cluster_id}/failover"): ("operator", _failover, {202}),
    ("POST", "/v1/clusters/{cluster_id}/failback"): ("operator", _failback, {202}),
    ("POST", "/v1/clusters/{cluster_id}/drills"): ("operator", _drill, {202}),
    ("GET", "/v1/clusters/{cluster_id}/events"): ("viewer", _cluster_events, {200}),
    ("GET", "/v1/clusters/{cluster_id}/readiness"): ("viewer", _readiness, {200}),
    ("GET", "/v1/clusters/{cluster_id}/report"): ("viewer", _report, {200}),
    ("GET", "/v1/clusters/{cluster_id}/deployments"): ("viewer", _deployments, {200}),
    ("POST", "/v1/clusters/{cluster_id}/deployments/retry"): (
        "operator",
        _retry_deployments,
        {202},
    ),
    ("POST", "/v1/clusters/{cluster_id}/rotate-runbook-secret"): (
        "admin",
        _rotate_runbook_secret,
        {200},
    ),
    ("PUT", "/v1/clusters/{cluster_id}/secrets/{name}"): ("admin", _put_secret, {201}),
    ("GET", "/v1/clusters/{cluster_id}/secrets"): ("viewer", _list_secrets, {200}),
    ("GET", "/v1/clusters/{cluster_id}/secrets/{name}"): ("viewer", _get_secret, {200}),
    ("DELETE", "/v1/clusters/{cluster_id}/secrets/{name}"): ("admin", _delete_secret, {204}),
    ("GET", "/v1/operations/{operation_id}"): ("viewer", _get_operation, {200}),
    ("GET", "/v1/operations"): ("viewer", _list_operations, {200}),
    ("POST", "/v1/operations/{operation_id}/cancel"): ("operator", _cancel, {202}),
    ("POST", "/v1/operations/{operation_id}/retry"): ("operator", _retry, {202}),
    ("POST", "/v1/operations/{operation_id}/approve"): ("operator", _approve, {202}),
    ("POST", "/v1/operations/{operation_id}/reject"): ("operator", _reject, {202}),
    ("GET", "/v1/events"): ("viewer", _events, {200}),
    ("GET", "/v1/events/stream"): ("viewer", _stream, {200}),
    ("POST", "/v1/webhooks"): ("admin", _create_webhook, {201}),
    ("GET", "/v1/webhooks"): ("viewer", _list_webhooks, {200}),
    ("GET", "/v1/webhooks/{webhook_id}"): ("viewer", _get_webhook, {200}),
    ("PATCH", "/v1/webhooks/{webhook_id}"): ("admin", _patch_webhook, {200}),
    ("DELETE", "/v1/webhooks/{webhook_id}"): ("admin", _delete_webhook, {204}),
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): ("admin", _rotate, {200}),
    ("POST", "/v1/webhooks/{webhook_id}/test"): ("admin", _ping, {200}),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): ("viewer", _deliveries, {200}),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}"): ("viewer", _delivery, {200}),
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): (
        "admin",
        _redeliver,
        {202},
    ),
    ("GET", "/v1/me"): ("viewer", _me, {200}),
    ("POST", "/v1/tokens"): ("admin", _create_token, {201}),
    ("GET", "/v1/tokens"): ("admin", _list_tokens, {200}),
    ("DELETE", "/v1/tokens/{token_id}"): ("admin", _revoke_token, {204}),
    ("GET", "/v1/audit"): ("admin", _audit, {200}),
    ("GET", "/metrics"): ("viewer", _metrics, {200}),
    ("POST", "/v1/regions/{region}/evacuate"): ("operator", _evacuate, {202}),
    ("GET", "/v1/batches"): ("viewer", _list_batches, {200}),
    ("GET", "/v1/batches/{batch_id}"): ("viewer", _get_batch, {200}),
    ("POST", "/v1/batches/{batch_id}/cancel"): ("operator", _cancel_batch, {202}),
}
# No token needed: probes.
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}
LOWER = {"operator": "viewer", "admin": "operator"}


def app_routes() -> dict[tuple[str, str], APIRoute]:
    app = create_app(Settings(redis_url="redis://unused"))
    routes = {}
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and context.include_in_schema:
            for method in context.methods or ():
                if method != "HEAD":
                    routes[(method, str(context.path_format))] = route
    return routes


def test_matrix_covers_every_route() -> None:
    routes = app_routes()
    missing = sorted(set(routes) - set(MATRIX) - PUBLIC)
    assert not missing, f"routes missing from the access matrix: {missing}"
    stale = sorted((set(MATRIX) | PUBLIC) - set(routes))
    assert not stale, f"matrix entries with no route: {stale}"
    for key_, route in routes.items():
        wanted = None if key_ in PUBLIC else MATRIX[key_][0]
        assert required_role(route) == wanted, f"{key_} requires {required_role(route)}"


@pytest.fixture(scope="module")
def other_org_admin(stack: Stack, stack_env: dict[str, str]) -> str:
    """`tandem orgs create` prints the first admin token of a new organization."""
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "orgs", "create", f"other-{uuid.uuid4().hex[:8]}"],
        env={**os.environ, **stack_env},
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


@pytest_asyncio.fixture(scope="module")
async def tokens(stack: Stack, other_org_admin: str) -> dict[str, str]:
    """A token per role in the default organization, and an admin of another one."""
    from tests.conftest import ADMIN_TOKEN

    found = {"admin": ADMIN_TOKEN, "other": other_org_admin}
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as c:
        for role in ("viewer", "operator"):
            response = await c.post("/v1/tokens", json={"name": f"matrix-{role}", "role": role})
            assert response.status_code == 201, response.text
            found[role] = response.json()["token"]
    return found


async def send(base_url: str, call: Call, token: str | None) -> httpx.Response:
    headers = dict(call.headers)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as c:
        if call.path == "/v1/events/stream":  # endless: read the status line, then hang up
            async with c.stream(call.method, call.path, headers=headers, params=call.params) as r:
                return r
        return await c.request(
            call.method, call.path, json=call.json, headers=headers, params=call.params
        )


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
async def test_route_access(
    route: tuple[str, str], client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    role, build, ok = MATRIX[route]
    call = await build(World(client))
    base = str(client.base_url)

    anonymous = await send(base, call, None)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["content-type"].startswith("application/problem+json")

    if role in LOWER:
        too_low = await send(base, call, tokens[LOWER[role]])
        assert too_low.status_code == 403, too_low.text
        assert too_low.json()["code"] == "forbidden"

    if "{" in route[1]:
        stranger = await send(base, call, tokens["other"])
        assert stranger.status_code == 404, stranger.text
        assert stranger.json()["code"] == "not_found"

    allowed = await send(base, call, tokens[role])
    assert allowed.status_code in ok, allowed.text
