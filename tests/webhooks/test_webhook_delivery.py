"""Webhook delivery from the outbox: a real receiver on loopback, real worker processes."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from standardwebhooks import Webhook

from app import outbound
from app.config import Settings
from app.coordination import Lease
from app.webhooks.delivery import Request, clean, excerpt, retry_after_seconds, send
from tests.conftest import BACKEND
from tests.helpers import create_cluster, events, start_ok, wait_done, wait_for
from tests.receiver import Answer, Receiver
from tests.stack import Stack
from tests.test_outbound import PUBLIC, Rebinding, RecordingBackend


@pytest.fixture
def receiver() -> Any:
    running = Receiver().start()
    yield running
    running.stop()


@pytest_asyncio.fixture
async def endpoints(client: httpx.AsyncClient) -> AsyncIterator[list[str]]:
    """Endpoints registered by the test, deleted afterwards so they stop receiving."""
    created: list[str] = []
    yield created
    for endpoint_id in created:
        await client.delete(f"/v1/webhooks/{endpoint_id}")


async def register(
    client: httpx.AsyncClient, endpoints: list[str], url: str, **body: Any
) -> dict[str, Any]:
    response = await client.post("/v1/webhooks", json={"url": url, **body})
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    endpoints.append(endpoint["id"])
    return endpoint


async def deliveries(client: httpx.AsyncClient, endpoint_id: str) -> list[dict[str, Any]]:
    page = await client.get(f"/v1/webhooks/{endpoint_id}/deliveries", params={"page_size": 100})
    assert page.status_code == 200, page.text
    return page.json()["items"]  # type: ignore[no-any-return]


async def test_every_event_of_failover_and_failback_arrives_once_signed_in_order(
    client: httpx.AsyncClient, receiver: Receiver, endpoints: list[str]
) -> None:
    endpoint = await register(client, endpoints, receiver.url)
    verifier = Webhook(endpoint["secret"])
    cluster = await create_cluster(client)
    cid = cluster["id"]
    over = await start_ok(client, cid, "failover")
    await wait_done(client, over["id"])
    back = await start_ok(client, cid, "failback")
    await wait_done(client, back["id"])
    expected = await events(client, cid)

    async def all_arrived() -> bool:
        return len(receiver.bodies_for_cluster(cid)) >= len(expected)

    await wait_for(all_arrived, timeout_s=30)
    got = receiver.bodies_for_cluster(cid)
    bodies = [verifier.verify(r.body, r.headers) for r in got]
    assert [b["id"] for b in bodies] == [e["id"] for e in expected]  # once each, in order
    assert [r.headers["webhook-id"] for r in got] == [e["id"] for e in expected]
    assert bodies == expected  # one shape everywhere
    transitions = [
        (b["data"]["from"], b["data"]["to"]) for b in bodies if b["type"] == "cluster.state_changed"
    ]
    assert transitions == [
        ("primary-active", "failing-over"),
        ("failing-over", "secondary-active"),
        ("secondary-active", "failing-back"),
        ("failing-back", "primary-active"),
    ]


async def test_receiver_failing_twice_gets_it_on_the_third_attempt(
    client: httpx.AsyncClient, receiver: Receiver, endpoints: list[str]
) -> None:
    receiver.script = [Answer(500, delay_s=0.3), Answer(500, {"Retry-After": "1"})]
    endpoint = await register(client, endpoints, receiver.url, event_types=["operation.succeeded"])
    cluster = await create_cluster(client)
    op = await start_ok(client, cluster["id"])
    await wait_done(client, op["id"])

    async def delivered() -> list[dict[str, Any]]:
        items = await deliveries(client, endpoint["id"])
        return [d for d in items if d["status"] == "succeeded"]

    [delivery] = await wait_for(delivered, timeout_s=30)
    assert delivery["attempts"] == 3
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 200]
    # The first answer took 0.3 s: its attempt's duration covers that wait; none reached
    # the attempt timeout (2 s in the tests).
    assert delivery["attempt_log"][0]["duration_ms"] >= 300
    assert all(0 <= a["duration_ms"] < 2000 for a in delivery["attempt_log"])
    assert delivery["attempt_log"][0]["next_attempt_at"] is not None
    received = receiver.requests()
    assert len(received) == 3
    assert {r.headers["webhook-id"] for r in received} == {delivery["event_id"]}
    Webhook(endpoint["secret"]).verify(received[-1].body, received[-1].headers)


async def test_receiver_down_for_a_while_loses_nothing(
    client: httpx.AsyncClient, receiver: Receiver, endpoints: list[str]
) -> None:
    receiver.stop()  # down: connections refused
    await register(client, endpoints, receiver.url)
    cluster = await create_cluster(client)
    cid = cluster["id"]
    op = await start_ok(client, cid)
    await wait_done(client, op["id"])
    expected = [e["id"] for e in await events(client, cid)]

    async def some_failed() -> bool:
        items = await deliveries(client, endpoints[0])
        return any(d["attempts"] >= 1 and d["status"] == "pending" for d in items)

    await wait_for(some_failed, timeout_s=30)
    receiver.start()  # back on the same port

    async def all_arrived() -> bool:
        ids = {r.headers["webhook-id"] for r in receiver.bodies_for_cluster(cid)}
        return ids >= set(expected)

    await wait_for(all_arrived, timeout_s=40)

    async def all_recorded() -> list[dict[str, Any]] | None:
        # The receiver's 2xx comes before the dispatcher records it: wait for the record.
        items = [d for d in await deliveries(client, endpoints[0]) if d["cluster_id"] == cid]
        return items if all(d["status"] == "succeeded" for d in items) else None

    items = await wait_for(all_recorded, timeout_s=20)
    assert sorted(d["event_id"] for d in items) == sorted(expected)
    endpoint = (await client.get(f"/v1/webhooks/{endpoints[0]}")).json()
    assert endpoint["enabled"] is True and endpoint["failing_since"] is None


async def test_receiver_that_never_recovers_is_disabled_with_an_event(
    client: httpx.AsyncClient, receiver: Receiver, endpoints: list[str]
) -> None:
    receiver.default = Answer(503)
    endpoint = await register(client, endpoints, receiver.url, event_types=["operation.created"])
    start = await client.get("/v1/events", params={"page_size": 1})
    cursor = start.json()["next_page_token"]
    cluster = await create_cluster(client)
    await start_ok(client, cluster["id"])

    async def disabled() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"/v1/webhooks/{endpoint['id']}")).json()
        return body if not body["enabled"] else None

    # The test settings disable an endpoint after 8 s of failures; their retry schedule
    # (0.3 + 0.6 + 1 + 2 * 5 s) keeps attempting for longer than that.
    state = await wait_for(disabled, timeout_s=60, interval_s=0.5)
    assert "failed" in state["disabled_reason"]

    async def disabled_event() -> list[dict[str, Any]]:
        feed: list[dict[str, Any]] = []
        token = cursor
        while True:
            page = (await client.get("/v1/events", params={"page_token": token})).json()
            feed.extend(page["items"])
            if not page["items"]:
                break
            token = page["next_page_token"]
        return [
            e
            for e in feed
            if e["type"] == "webhook.endpoint_disabled"
            and e["data"]["endpoint_id"] == endpoint["id"]
        ]

    [event] = await wait_for(disabled_event, timeout_s=10)
    assert event["cluster_id"] is None
    assert len(receiver.requests()) >= 2


async def test_dispatcher_killed_between_commit_and_delivery(
    client: httpx.AsyncClient,
    receiver: Receiver,
    endpoints: list[str],
    live_stack: Stack,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # The first request is held by the receiver; the dispatcher holding it is killed.
    receiver.script = [Answer(200, delay_s=5)]
    await register(client, endpoints, receiver.url, event_types=["operation.created"])
    cluster = await create_cluster(client)
    op = await start_ok(client, cluster["id"])

    async def first_request() -> bool:
        return len(receiver.requests()) >= 1

    await wait_for(first_request, timeout_s=30)
    async with sessions() as session:
        owner = await session.scalar(
            select(col(Lease.owner)).where(col(Lease.name) == "webhook-dispatcher")
        )
    assert owner is not None
    live_stack.worker_by_pid(int(owner.split(":")[1])).kill(signal.SIGKILL)

    async def redelivered() -> bool:
        return len(receiver.requests()) >= 2

    await wait_for(redelivered, timeout_s=40)
    first, second = receiver.requests()[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert json.loads(second.body)["data"]["operation_id"] == op["id"]

    async def settled() -> list[dict[str, Any]]:
        return [d for d in await deliveries(client, endpoints[0]) if d["status"] == "succeeded"]

    [delivery] = await wait_for(settled, timeout_s=30)
    assert delivery["event_id"] == first.headers["webhook-id"]
    await wait_done(client, op["id"])


async def test_gone_disables_the_endpoint_at_once(
    client: httpx.AsyncClient, receiver: Receiver, endpoints: list[str]
) -> None:
    receiver.default = Answer(410)
    endpoint = await register(client, endpoints, receiver.url, event_types=["operation.created"])
    cluster = await create_cluster(client)
    op = await start_ok(client, cluster["id"])

    async def disabled() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"/v1/webhooks/{endpoint['id']}")).json()
        return body if not body["enabled"] else None

    state = await wait_for(disabled, timeout_s=30)
    assert "410" in state["disabled_reason"]
    [delivery] = await deliveries(client, endpoint["id"])
    assert delivery["status"] == "failed" and delivery["attempts"] == 1
    assert len(receiver.requests()) == 1
    await wait_done(client, op["id"])


async def test_slow_receiver_delays_neither_the_failover_nor_other_receivers(
    client: httpx.AsyncClient, endpoints: list[str]
) -> None:
    slow, fast = Receiver().start(), Receiver().start()
    try:
        slow.default = Answer(200, delay_s=3)  # every request takes 3 s
        await register(client, endpoints, slow.url)
        await register(client, endpoints, fast.url)
        cluster = await create_cluster(client)
        cid = cluster["id"]
        op = await start_ok(client, cid)
        done = await wait_done(client, op["id"])
        assert done["status"] == "succeeded"
        expected = [e["id"] for e in await events(client, cid)]

        async def fast_has_all() -> bool:
            return [r.headers["webhook-id"] for r in fast.bodies_for_cluster(cid)] == expected

        await wait_for(fast_has_all, timeout_s=30)
        # 18 events at 3 s each: the slow receiver is still far behind, and neither the
        # operation nor the fast receiver waited for it.
        assert len(slow.bodies_for_cluster(cid)) < len(expected)
    finally:
        slow.stop()
        fast.stop()


# -- what a receiver answers, stored ----------------------------------------


async def one_event_delivered(
    client: httpx.AsyncClient, receiver: Receiver, endpoints: list[str]
) -> tuple[dict[str, Any], int]:
    """An operation.created event to a new endpoint: its delivery once settled (or once
    the receiver has had it twice), and how many times the receiver had it."""
    endpoint = await register(client, endpoints, receiver.url, event_types=["operation.created"])
    cluster = await create_cluster(client)
    op = await start_ok(client, cluster["id"])

    async def settled_or_sent_again() -> dict[str, Any] | None:
        [delivery] = await deliveries(client, endpoint["id"])
        sent_again = len(receiver.bodies_for_cluster(cluster["id"])) > 1
        return delivery if delivery["status"] != "pending" or sent_again else None

    delivery = await wait_for(settled_or_sent_again, timeout_s=30)
    await wait_done(client, op["id"])
    return delivery, len(receiver.bodies_for_cluster(cluster["id"]))


async def test_a_body_with_nul_bytes_is_recorded_once(
    client: httpx.AsyncClient, receiver: Receiver, endpoints: list[str]
) -> None:
    # PostgreSQL text cannot hold NUL: stored as it came, the attempt could not be
    # recorded, and the delivery was sent again at once, in a loop.
    receiver.default = Answer(200, {"content-type": "application/json"}, body=b'{"ok":1}\x00 !')
    delivery, sent = await one_event_delivered(client, receiver, endpoints)
    assert sent == 1
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 1
    [attempt] = delivery["attempt_log"]
    assert attempt["status_code"] == 200 and attempt["response_excerpt"] == '{"ok":1} !'


@pytest.mark.parametrize(
    ("content_type", "body", "stored"),
    [
        ("application/json", b'{"caf\xe9": "\xff"}', '{"caf\ufffd": "\ufffd"}'),
        # Lone surrogates when read in the charset it declares: neither database takes them.
        ("text/plain; charset=utf-7", b"+2D0- +2D3eAA-", "+2D0- +2D3eAA-"),
        # A charset these bytes are not: reading them as it says fails.
        ("text/plain; charset=utf-16", b"\x00\xd8", "\ufffd"),
    ],
    ids=["invalid-utf8", "utf7-lone-surrogates", "utf16-without-bom"],
)
async def test_a_body_that_is_not_utf8_is_recorded_once(
    client: httpx.AsyncClient,
    receiver: Receiver,
    endpoints: list[str],
    content_type: str,
    body: bytes,
    stored: str,
) -> None:
    receiver.default = Answer(200, {"content-type": content_type}, body=body)
    delivery, sent = await one_event_delivered(client, receiver, endpoints)
    assert sent == 1
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 1
    [attempt] = delivery["attempt_log"]
    assert attempt["status_code"] == 200 and attempt["response_excerpt"] == stored


def test_excerpts_and_errors_are_cleaned_and_capped() -> None:
    assert clean("a\x00b\ud800c", 10) == "ab?c"
    assert clean("x" * 2000, 1000) == "x" * 1000
    assert excerpt(b"") is None and excerpt(b"\x00") is None
    assert excerpt("é".encode() * 1000) == "é" * 500
    # Cut inside a character: the part is replaced, never stored as it is.
    assert excerpt("é".encode()[:1]) == "\ufffd"


def test_retry_after_as_a_date_without_a_zone_is_utc() -> None:
    # "-0000" parses to a naive time; subtracting it from an aware one raised, and the
    # attempt ended in an error instead of being recorded.
    now = datetime(2015, 10, 21, 7, 28, tzinfo=UTC)
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:30 -0000", now) == 30.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:30 GMT", now) == 30.0


# -- an attempt that cannot be recorded --------------------------------------


def _refusal_ddl(endpoint_id: str) -> tuple[list[str], list[str]]:
    """Statements that make the database refuse every attempt row of the endpoint's
    deliveries, and statements that stop it."""
    assert re.fullmatch(r"wh_[0-9a-f]+", endpoint_id)
    name = f"refuse_{endpoint_id}"
    of_endpoint = (
        f"(SELECT endpoint_id FROM webhook_deliveries WHERE id = NEW.delivery_id) = '{endpoint_id}'"
    )
    if BACKEND == "postgresql":
        return [
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF {of_endpoint} THEN RAISE EXCEPTION 'refused by the test'; END IF; "
            "RETURN NEW; END $$",
            f"CREATE TRIGGER {name} BEFORE INSERT ON webhook_attempts "
            f"FOR EACH ROW EXECUTE FUNCTION {name}()",
        ], [f"DROP TRIGGER {name} ON webhook_attempts", f"DROP FUNCTION {name}()"]
    return [
        f"CREATE TRIGGER {name} BEFORE INSERT ON webhook_attempts WHEN {of_endpoint} "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    ], [f"DROP TRIGGER {name}"]


async def _execute(sessions: async_sessionmaker[AsyncSession], statements: list[str]) -> None:
    async with sessions() as session:
        for statement in statements:
            await session.execute(text(statement))
        await session.commit()


async def test_an_attempt_that_cannot_be_recorded_is_put_off_not_resent_at_once(
    client: httpx.AsyncClient,
    receiver: Receiver,
    endpoints: list[str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # The database itself refuses the attempt rows (a trigger): a real failure to record,
    # whatever its cause. Each send must still count as an attempt and wait its turn on
    # the retry schedule, instead of going out again at once, in a loop.
    endpoint = await register(client, endpoints, receiver.url, event_types=["operation.created"])
    refuse, allow = _refusal_ddl(endpoint["id"])
    await _execute(sessions, refuse)
    try:
        cluster = await create_cluster(client)
        op = await start_ok(client, cluster["id"])

        async def counted() -> dict[str, Any] | None:
            [delivery] = await deliveries(client, endpoint["id"])
            return delivery if delivery["attempts"] >= 1 else None

        put_off = await wait_for(counted, timeout_s=20)
        assert put_off["status"] == "pending" and put_off["attempt_log"] == []
        assert "could not be recorded" in put_off["last_error"]
    finally:
        await _execute(sessions, allow)

    async def succeeded() -> dict[str, Any] | None:
        [delivery] = await deliveries(client, endpoint["id"])
        return delivery if delivery["status"] == "succeeded" else None

    delivery = await wait_for(succeeded, timeout_s=30)
    # Every send was counted once: none went out uncounted, in a loop.
    assert len(receiver.bodies_for_cluster(cluster["id"])) == delivery["attempts"] >= 2
    [recorded] = delivery["attempt_log"]
    assert recorded["attempt"] == delivery["attempts"] and recorded["status_code"] == 200
    await wait_done(client, op["id"])


# -- the guarded transport -----------------------------------------------------------
# No packet leaves loopback: the resolver and network backend of tests/test_outbound.py
# stand in for DNS and sockets.


def strict_settings() -> Settings:
    return Settings(redis_url="redis://unused", webhook_allow_private=False)


async def test_an_attempt_connects_to_the_address_that_was_checked() -> None:
    backend, resolver = RecordingBackend(), Rebinding()
    async with outbound.client(resolver=resolver, backend=backend) as http:
        outcome = await send(http, Request("http://hooks.example/x", "{}", {}), strict_settings())
    assert outcome.ok, outcome
    assert resolver.calls == 1
    assert backend.connected == [(PUBLIC, 80)]


@pytest.mark.parametrize(
    "url",
    [
        "http://[64:ff9b::7f00:1]/x",
        "http://[2002:7f00:1::]/x",
        "http://[::7f00:1]/x",
        "http://[64:ff9b::a9fe:a9fe]/x",
        "http://rebound.example/x",
    ],
)
async def test_an_attempt_to_an_internal_address_is_refused_for_good(url: str) -> None:
    backend = RecordingBackend()
    async with outbound.client(resolver=Rebinding(["127.0.0.1"]), backend=backend) as http:
        outcome = await send(http, Request(url, "{}", {}), strict_settings())
    assert outcome.permanent and outcome.status_code is None, outcome
    assert outcome.error is not None and outcome.error.startswith("refused"), outcome
    assert backend.connected == []
