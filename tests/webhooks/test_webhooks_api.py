"""The webhook endpoint API: secrets shown once, changes, problems, rotation, test
pings, delivery log and redelivery, and the URL guard. A real receiver on loopback and
real API and worker processes."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app import outbound
from app.webhooks import service, signing
from tests.conftest import BACKEND
from tests.helpers import (
    component,
    create_cluster,
    documented,
    start_ok,
    wait_done,
    wait_for,
)
from tests.receiver import Answer, Received, Receiver
from tests.stack import Stack

PROBLEM = "application/problem+json"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


async def register(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/webhooks", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def unregister(client: httpx.AsyncClient, endpoint_id: str) -> None:
    response = await client.delete(f"/v1/webhooks/{endpoint_id}")
    assert response.status_code in (204, 404), response.text


async def list_all(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = None
    while True:
        params: dict[str, Any] = {"page_size": 100}
        if token:
            params["page_token"] = token
        page = await client.get("/v1/webhooks", params=params)
        assert page.status_code == 200, page.text
        items.extend(page.json()["items"])
        token = page.json()["next_page_token"]
        if not token:
            return items


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def assert_masked(shown: str | None, real: str) -> None:
    assert shown is not None
    assert shown != real
    assert real not in shown


def pings_for(receiver: Receiver, endpoint_id: str) -> list[Received]:
    found = []
    for request in list(receiver.received):
        try:
            body = request.json()
        except ValueError:
            continue
        if (
            isinstance(body, dict)
            and body.get("type") == "webhook.ping"
            and body.get("data", {}).get("endpoint_id") == endpoint_id
        ):
            found.append(request)
    return found


# -- create, read, mask ------------------------------------------------------


async def test_create_shows_secret_once_then_masked(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await client.post(
        "/v1/webhooks", json={"url": receiver.url, "description": "ops channel"}
    )
    assert created.status_code == 201, created.text
    endpoint = created.json()
    try:
        secret = endpoint["secret"]
        assert secret.startswith("whsec_") and len(secret) > len("whsec_") + 20
        assert created.headers["location"] == f"/v1/webhooks/{endpoint['id']}"
        assert endpoint["kind"] == "standard" and endpoint["enabled"] is True
        assert endpoint["event_types"] == [] and endpoint["description"] == "ops channel"

        fetched = await client.get(f"/v1/webhooks/{endpoint['id']}")
        assert fetched.status_code == 200, fetched.text
        assert_masked(fetched.json()["secret"], secret)
        assert fetched.json()["url"] == receiver.url

        listed = next(e for e in await list_all(client) if e["id"] == endpoint["id"])
        assert_masked(listed["secret"], secret)
        assert secret not in (await client.get("/v1/webhooks")).text
    finally:
        await unregister(client, endpoint["id"])


async def test_pagerduty_routing_key_is_masked(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    routing_key = "R0UT1NGKEY0123456789012345678901"
    endpoint = await register(
        client,
        kind="pagerduty",
        url=receiver.url,
        routing_key=routing_key,
        event_types=["operation.cancelled"],
    )
    try:
        assert endpoint["kind"] == "pagerduty"
        assert endpoint["secret"].startswith("whsec_")
        assert_masked(endpoint["routing_key"], routing_key)
        # At most its last 4 characters show.
        assert endpoint["routing_key"].replace("…", "") == routing_key[-4:]
        fetched = (await client.get(f"/v1/webhooks/{endpoint['id']}")).json()
        assert_masked(fetched["routing_key"], routing_key)
        assert_masked(fetched["secret"], endpoint["secret"])
        listed = next(e for e in await list_all(client) if e["id"] == endpoint["id"])
        assert_masked(listed["routing_key"], routing_key)
        assert_masked(listed["secret"], endpoint["secret"])
    finally:
        await unregister(client, endpoint["id"])


async def test_viewers_see_webhook_urls_without_their_query(
    client: httpx.AsyncClient, receiver: Receiver, live_stack: Stack
) -> None:
    url = f"{receiver.url}?token=s3cr3t-in-the-query"
    endpoint = await register(client, url=url, event_types=["operation.cancelled"])
    created = await client.post(
        "/v1/tokens", json={"name": f"viewer-{uuid.uuid4().hex[:8]}", "role": "viewer"}
    )
    assert created.status_code == 201, created.text
    headers = {"Authorization": f"Bearer {created.json()['token']}"}
    try:
        assert endpoint["url"] == url
        assert (await client.get(f"/v1/webhooks/{endpoint['id']}")).json()["url"] == url
        async with httpx.AsyncClient(
            base_url=live_stack.base_url, timeout=30, headers=headers
        ) as viewer:
            shown = (await viewer.get(f"/v1/webhooks/{endpoint['id']}")).json()["url"]
            assert shown == f"{receiver.url}?…"
            listed = await list_all(viewer)
            assert next(e for e in listed if e["id"] == endpoint["id"])["url"] == shown
            assert "s3cr3t" not in (await viewer.get("/v1/webhooks")).text
    finally:
        await client.delete(f"/v1/tokens/{created.json()['id']}")
        await unregister(client, endpoint["id"])


def test_url_mask_hides_user_info_query_and_fragment() -> None:
    masked = service.mask_url("https://bot:pw@hooks.example:8443/in/abc?key=k1#frag")
    assert masked == "https://…@hooks.example:8443/in/abc?…#…"
    assert service.mask_url("https://hooks.example/in") == "https://hooks.example/in"
    assert service.mask_routing_key("R0UT1NGKEY0123456789012345678901") == "…8901"


# -- change and delete -------------------------------------------------------


async def test_patch_then_delete(client: httpx.AsyncClient, receiver: Receiver) -> None:
    endpoint = await register(client, url=receiver.url, event_types=["operation.cancelled"])
    path = f"/v1/webhooks/{endpoint['id']}"
    try:
        other_url = receiver.url.replace("/hook", "/other")
        patched = await client.patch(
            path,
            json={
                "url": other_url,
                "event_types": ["operation.succeeded", "operation.failed"],
                "description": "paging",
                "enabled": False,
            },
        )
        assert patched.status_code == 200, patched.text
        body = patched.json()
        assert body["url"] == other_url
        assert body["event_types"] == ["operation.succeeded", "operation.failed"]
        assert body["description"] == "paging"
        assert body["enabled"] is False
        assert_masked(body["secret"], endpoint["secret"])
        assert (await client.get(path)).json() == body

        # Only what is sent changes.
        enabled = await client.patch(path, json={"enabled": True})
        assert enabled.status_code == 200, enabled.text
        again = enabled.json()
        assert again["enabled"] is True and again["disabled_reason"] is None
        assert again["url"] == other_url and again["description"] == "paging"
        assert again["event_types"] == ["operation.succeeded", "operation.failed"]
        cleared = await client.patch(path, json={"description": None})
        assert cleared.status_code == 200 and cleared.json()["description"] is None

        bad = await client.patch(path, json={"event_types": ["operation.exploded"]})
        assert_problem(bad, 422)
        bad_url = await client.patch(path, json={"url": "ftp://example.com/x"})
        assert_problem(bad_url, 422)
        assert (await client.get(path)).json()["url"] == other_url
    finally:
        deleted = await client.delete(path)
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""
    assert_problem(await client.get(path), 404)
    assert_problem(await client.delete(path), 404)
    assert all(e["id"] != endpoint["id"] for e in await list_all(client))


async def test_unknown_endpoint_is_404_problem(client: httpx.AsyncClient) -> None:
    path = "/v1/webhooks/wh_doesnotexist"
    for response in (
        await client.get(path),
        await client.patch(path, json={"description": "x"}),
        await client.delete(path),
        await client.post(f"{path}/rotate-secret"),
        await client.post(f"{path}/test"),
        await client.get(f"{path}/deliveries"),
        await client.get(f"{path}/deliveries/dlv_nope"),
        await client.post(f"{path}/deliveries/dlv_nope/redeliver"),
    ):
        body = assert_problem(response, 404)
        assert body["code"] == "not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://example.com/hook"},
        {"url": "not a url"},
        {"url": "http://example.com/hook", "event_types": ["operation.exploded"]},
        {"kind": "standard"},
        {},
        {"kind": "pagerduty"},
        {"kind": "pagerduty", "url": "http://example.com/x", "routing_key": ""},
        {"url": "http://example.com/hook", "kind": "smoke-signal"},
        {"url": "http://example.com/hook", "surprise": True},
    ],
    ids=[
        "ftp-scheme",
        "not-a-url",
        "unknown-event-type",
        "standard-without-url",
        "empty",
        "pagerduty-without-routing-key",
        "pagerduty-empty-routing-key",
        "unknown-kind",
        "unknown-field",
    ],
)
async def test_invalid_bodies_are_422_problems(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    before = {e["id"] for e in await list_all(client)}
    response = await client.post("/v1/webhooks", json=body)
    problem = assert_problem(response, 422)
    assert problem["detail"]
    # Nothing was registered.
    created = {e["id"] for e in await list_all(client)} - before
    for endpoint_id in created:  # pragma: no cover - only on failure
        await unregister(client, endpoint_id)
    assert not created


async def test_a_body_is_refused_exactly_when_the_document_refuses_it(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """What schemathesis found: a standard endpoint without a url was valid by the document
    but refused, and `"enabled": 0` was invalid by it but taken."""
    create_valid = documented(component("WebhookCreate"))
    patch_valid = documented(component("WebhookPatch"))
    creates: list[dict[str, Any]] = [
        {},
        {"kind": "standard"},
        {"kind": "standard", "url": None, "routing_key": "R0UTINGKEY"},
        {"url": receiver.url},
        {"kind": "pagerduty"},
        {"kind": "pagerduty", "routing_key": None},
        {"kind": "pagerduty", "routing_key": "R0UTINGKEY"},
        {"kind": "pagerduty", "routing_key": "R0UTINGKEY", "url": receiver.url},
    ]
    wrong = []
    for body in creates:
        response = await client.post("/v1/webhooks", json=body)
        assert response.status_code in (201, 422), response.text
        if (response.status_code == 201) != create_valid(body):
            wrong.append(f"POST {body}: {response.status_code}")
        if response.status_code == 201:
            await unregister(client, response.json()["id"])
    endpoint = await register(client, url=receiver.url)
    try:
        for body in (
            {"enabled": False},
            {"enabled": 0},
            {"enabled": "false"},
            {"enabled": None},
            {"description": None},
        ):
            response = await client.patch(f"/v1/webhooks/{endpoint['id']}", json=body)
            assert response.status_code in (200, 422), response.text
            if (response.status_code == 200) != patch_valid(body):
                wrong.append(f"PATCH {body}: {response.status_code}")
    finally:
        await unregister(client, endpoint["id"])
    assert not wrong, f"the server and the document disagree on: {wrong}"


# -- rotation and test pings -------------------------------------------------


async def test_rotated_secret_and_previous_both_sign_a_test_ping(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await register(client, url=receiver.url, event_types=["operation.cancelled"])
    try:
        old_secret = endpoint["secret"]
        rotated = await client.post(f"/v1/webhooks/{endpoint['id']}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["secret"]
        assert new_secret.startswith("whsec_") and new_secret != old_secret
        assert rotated.json()["previous_secret_expires_at"] is not None
        fetched = (await client.get(f"/v1/webhooks/{endpoint['id']}")).json()
        assert_masked(fetched["secret"], new_secret)

        ping = await client.post(f"/v1/webhooks/{endpoint['id']}/test")
        assert ping.status_code == 200, ping.text
        result = ping.json()
        assert result["ok"] is True and result["status_code"] == 200
        # Timed, and within the attempt timeout (2 s in the tests), or it would have failed.
        assert result["error"] is None and 0 <= result["duration_ms"] < 2000

        # The receiver answered before the API did: the request is already recorded.
        [request] = pings_for(receiver, endpoint["id"])
        signatures = request.headers["webhook-signature"].split(" ")
        assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
        body = Webhook(new_secret).verify(request.body, request.headers)
        assert body["type"] == "webhook.ping" and body["id"] == request.headers["webhook-id"]
        assert Webhook(old_secret).verify(request.body, request.headers) == body
        with pytest.raises(WebhookVerificationError):
            Webhook(signing.new_secret()).verify(request.body, request.headers)
        # A body changed in transit verifies with neither.
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret).verify(request.body + b" ", request.headers)
    finally:
        await unregister(client, endpoint["id"])


async def test_test_ping_reports_a_failing_receiver(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.default = Answer(status=500)
    endpoint = await register(client, url=receiver.url, event_types=["operation.cancelled"])
    try:
        ping = await client.post(f"/v1/webhooks/{endpoint['id']}/test")
        assert ping.status_code == 200, ping.text
        result = ping.json()
        assert result["ok"] is False and result["status_code"] == 500
        assert result["error"]
        [request] = pings_for(receiver, endpoint["id"])
        Webhook(endpoint["secret"]).verify(request.body, request.headers)
    finally:
        await unregister(client, endpoint["id"])


async def open_transactions(
    sessions: async_sessionmaker[AsyncSession], stack: Stack
) -> list[tuple[str, str]]:
    """(state, last statement) of each transaction the API process has open on PostgreSQL,
    its connections told apart from the workers' by their client port."""
    assert stack.api is not None
    api = psutil.Process(stack.api.pid)
    ports = {
        c.laddr.port
        for process in (api, *api.children(recursive=True))
        for c in process.net_connections(kind="tcp")
        if c.raddr and c.raddr.port == 5432
    }
    assert ports, "the API process has no connection to PostgreSQL"
    async with sessions() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT client_port, state, query FROM pg_stat_activity "
                    "WHERE datname = current_database() AND xact_start IS NOT NULL"
                )
            )
        ).all()
    return [(state, query) for port, state, query in rows if port in ports]


async def test_a_test_ping_waits_for_its_receiver_with_no_transaction_open(
    client: httpx.AsyncClient,
    receiver: Receiver,
    live_stack: Stack,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    let_go = threading.Event()
    receiver.script = [Answer(200, hold=let_go)]
    endpoint = await register(client, url=receiver.url, event_types=["operation.cancelled"])
    path = f"/v1/webhooks/{endpoint['id']}"
    ping = asyncio.create_task(client.post(f"{path}/test"))
    try:

        async def arrived() -> list[Received]:
            return pings_for(receiver, endpoint["id"])

        await wait_for(arrived, timeout_s=10)
        # The receiver holds its answer. Another request writes meanwhile: on SQLite it
        # would wait for a write lock held by the ping's transaction until the ping gave up.
        patched = await client.patch(path, json={"description": "changed during a ping"})
        assert patched.status_code == 200, patched.text
        if BACKEND == "postgresql":
            assert await open_transactions(sessions, live_stack) == []
    finally:
        let_go.set()
        result = (await ping).json()
        await unregister(client, endpoint["id"])
    # Answered after the checks above: they ran while the ping was waiting for it.
    assert result["ok"] is True and result["status_code"] == 200, result


# -- delivery log and redelivery --------------------------------------------


async def test_deliveries_show_attempts_and_redeliver_sends_same_webhook_id(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    cluster = await create_cluster(client)
    endpoint = await register(client, url=receiver.url, event_types=["operation.succeeded"])
    path = f"/v1/webhooks/{endpoint['id']}"
    try:
        op = await start_ok(client, cluster["id"])
        assert (await wait_done(client, op["id"]))["status"] == "succeeded"

        async def delivered() -> dict[str, Any] | None:
            page = await client.get(f"{path}/deliveries", params={"page_size": 100})
            assert page.status_code == 200, page.text
            mine = [d for d in page.json()["items"] if d["cluster_id"] == cluster["id"]]
            assert len(mine) <= 1, mine
            if mine and mine[0]["status"] == "succeeded":
                return mine[0]
            return None

        delivery = await wait_for(delivered, timeout_s=60)
        assert delivery["endpoint_id"] == endpoint["id"]
        assert delivery["attempts"] == len(delivery["attempt_log"]) >= 1
        assert delivery["last_status_code"] == 200 and delivery["delivered_at"] is not None
        assert delivery["next_attempt_at"] is None
        last = delivery["attempt_log"][-1]
        assert last["status_code"] == 200 and last["error"] is None
        assert isinstance(last["duration_ms"], int) and 0 <= last["duration_ms"] < 2000
        assert [a["attempt"] for a in delivery["attempt_log"]] == list(
            range(1, delivery["attempts"] + 1)
        )
        one = await client.get(f"{path}/deliveries/{delivery['id']}")
        assert one.status_code == 200 and one.json() == delivery

        event_id = delivery["event_id"]
        sent = receiver.requests(**{"webhook-id": event_id})
        assert sent and sent[0].json()["type"] == "operation.succeeded"
        assert sent[0].json()["cluster_id"] == cluster["id"]
        Webhook(endpoint["secret"]).verify(sent[0].body, sent[0].headers)
        before = len(sent)

        again = await client.post(f"{path}/deliveries/{delivery['id']}/redeliver")
        assert again.status_code == 202, again.text
        copy = again.json()
        assert copy["id"] != delivery["id"]
        assert copy["event_id"] == event_id and copy["cluster_id"] == cluster["id"]
        assert copy["status"] == "pending" and copy["attempt_log"] == []

        async def redelivered() -> bool:
            return len(receiver.requests(**{"webhook-id": event_id})) > before

        await wait_for(redelivered, timeout_s=60)
        resent = receiver.requests(**{"webhook-id": event_id})[-1]
        assert resent.body == sent[0].body
        Webhook(endpoint["secret"]).verify(resent.body, resent.headers)

        async def copy_settled() -> dict[str, Any] | None:
            got = (await client.get(f"{path}/deliveries/{copy['id']}")).json()
            return got if got["status"] == "succeeded" else None

        settled = await wait_for(copy_settled, timeout_s=60)
        assert settled["attempt_log"][-1]["status_code"] == 200
        # The original is untouched, and both are listed, newest first.
        assert (await client.get(f"{path}/deliveries/{delivery['id']}")).json() == delivery
        listed = (await client.get(f"{path}/deliveries", params={"page_size": 100})).json()
        mine = [d["id"] for d in listed["items"] if d["cluster_id"] == cluster["id"]]
        assert mine == [copy["id"], delivery["id"]]
    finally:
        await unregister(client, endpoint["id"])


# -- the URL guard ------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://10.1.2.3/hook",
        "https://192.168.0.1/hook",
        "http://172.16.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[2002:7f00:1::]/",
        "http://[::7f00:1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://0.0.0.0/hook",
        "ftp://93.184.216.34/hook",
        "http://user:pass@93.184.216.34/hook",
        "http:///hook",
    ],
)
def test_urlguard_refuses_internal_and_odd_urls(url: str) -> None:
    with pytest.raises(outbound.Refused):
        asyncio.run(outbound.check(url, outbound.Networks.PUBLIC))


def test_urlguard_passes_a_public_address() -> None:
    asyncio.run(outbound.check("http://93.184.216.34/", outbound.Networks.PUBLIC))
    asyncio.run(outbound.check("https://93.184.216.34:8443/hook?x=1", outbound.Networks.PUBLIC))
    # Allowing private addresses still checks the scheme and credentials.
    asyncio.run(outbound.check("http://127.0.0.1:9/x", outbound.Networks.ALL))
    with pytest.raises(outbound.Refused):
        asyncio.run(outbound.check("ftp://127.0.0.1/x", outbound.Networks.ALL))


async def test_the_metadata_service_is_refused_even_with_private_allowed(
    client: httpx.AsyncClient,
) -> None:
    # The test stack sets TANDEM_WEBHOOK_ALLOW_PRIVATE: loopback is fine, link-local never.
    for url in ("http://169.254.169.254/latest/", "http://[64:ff9b::a9fe:a9fe]/latest/"):
        problem = assert_problem(await client.post("/v1/webhooks", json={"url": url}), 422)
        assert problem.get("field") == "url", problem
        assert "link-local" in problem["detail"], problem


async def test_api_refuses_private_url_when_not_allowed(
    client: httpx.AsyncClient, receiver: Receiver, stack_env: dict[str, str], tmp_path: Path
) -> None:
    strict = Stack({**stack_env, "TANDEM_WEBHOOK_ALLOW_PRIVATE": "0"}, tmp_path, workers=0)
    # Registered through the permissive stack, changed through the strict one.
    endpoint = await register(client, url=receiver.url, event_types=["operation.cancelled"])
    try:
        await asyncio.to_thread(strict.start)
        async with httpx.AsyncClient(
            base_url=strict.base_url, timeout=30, headers=dict(client.headers)
        ) as api:
            before = {e["id"] for e in await list_all(api)}
            for url in ("http://127.0.0.1:9/x", "http://[::1]:9/x", "http://10.1.2.3/x"):
                response = await api.post("/v1/webhooks", json={"url": url})
                problem = assert_problem(response, 422)
                assert problem.get("field") == "url", problem
                assert "url" in problem["detail"].lower(), problem
            assert {e["id"] for e in await list_all(api)} == before
            refused = await api.patch(
                f"/v1/webhooks/{endpoint['id']}", json={"url": "http://127.0.0.1:9/x"}
            )
            assert assert_problem(refused, 422).get("field") == "url"
            unchanged = await api.get(f"/v1/webhooks/{endpoint['id']}")
            assert unchanged.json()["url"] == receiver.url
    finally:
        await asyncio.to_thread(strict.stop)
        await unregister(client, endpoint["id"])


# -- secrets stay out of the logs --------------------------------------------------------


async def test_a_failed_insert_does_not_log_the_endpoint_secret(
    client: httpx.AsyncClient,
    live_stack: Stack,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The insert of an endpoint fails (a trigger refuses it, as a constraint would): the
    error is logged, and its statement's parameters, the new whsec_ secret among them,
    are not."""
    marker = f"refuse-{uuid.uuid4().hex[:10]}"
    if BACKEND == "postgresql":
        install = [
            "CREATE FUNCTION tandem_test_refuse() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.description = '{marker}' THEN RAISE EXCEPTION 'refused by test'; "
            "END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER tandem_test_refuse BEFORE INSERT ON webhook_endpoints "
            "FOR EACH ROW EXECUTE FUNCTION tandem_test_refuse()",
        ]
        remove = [
            "DROP TRIGGER tandem_test_refuse ON webhook_endpoints",
            "DROP FUNCTION tandem_test_refuse()",
        ]
    else:
        install = [
            "CREATE TRIGGER tandem_test_refuse BEFORE INSERT ON webhook_endpoints "
            f"WHEN NEW.description = '{marker}' "
            "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
        ]
        remove = ["DROP TRIGGER tandem_test_refuse"]
    log_path = live_stack.api.log_path
    start = log_path.stat().st_size
    async with sessions() as session:
        for statement in install:
            await session.execute(text(statement))
        await session.commit()
    try:
        response = await client.post(
            "/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "description": marker}
        )
        assert response.status_code == 500, response.text
    finally:
        async with sessions() as session:
            for statement in remove:
                await session.execute(text(statement))
            await session.commit()

    async def logged() -> str | None:
        with log_path.open("rb") as log:
            log.seek(start)
            new = log.read().decode(errors="replace")
        return new if "refused by test" in new else None

    new = await wait_for(logged, timeout_s=10)
    assert "whsec_" not in new, new
    assert marker not in new, new
