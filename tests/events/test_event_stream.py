"""The live event stream (SSE) resumes exactly where it was dropped; the event feed
pages in order and always hands back a cursor to poll with."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from app.openapi import generate
from tests.helpers import (
    create_cluster,
    documented,
    events,
    pair_body,
    start_ok,
    wait_done,
)


@dataclass
class Frame:
    id: str | None
    event: str | None
    data: Any


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """Server-sent events, parsed by hand: fields until a blank line; comments skipped."""
    fields: dict[str, list[str]] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield Frame(
                    fields["id"][-1] if "id" in fields else None,
                    fields["event"][-1] if "event" in fields else None,
                    json.loads("\n".join(fields["data"])),
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)


async def read(
    client: httpx.AsyncClient,
    params: dict[str, Any],
    headers: dict[str, str],
    until: Any,
) -> list[Frame]:
    """Open the stream, collect frames until `until(frames)` holds, then drop it."""
    got: list[Frame] = []
    async with client.stream("GET", "/v1/events/stream", params=params, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        async for frame in frames(r):
            assert frame.id is not None and frame.id.isdigit(), frame
            assert frame.event == frame.data["type"], frame
            got.append(frame)
            if await until(got):
                break
    return got


async def test_stream_resumes_after_last_event_id_without_gaps_or_duplicates(
    client: httpx.AsyncClient,
) -> None:
    cluster = await create_cluster(client, step_delay_ms=150)
    cid = cluster["id"]
    op = await start_ok(client, cid)

    async def a_few(got: list[Frame]) -> bool:
        return len(got) >= 3

    first = await read(client, {"cluster_id": cid, "after": 0}, {}, a_few)
    assert len(first) == 3

    async def succeeded_and_all_there(got: list[Frame]) -> bool:
        if not any(f.event == "operation.succeeded" for f in got):
            return False
        await wait_done(client, op["id"])
        # Everything the pair logged by now has been streamed (once the stream catches up).
        return len(first) + len(got) >= len(await events(client, cid))

    second = await read(
        client,
        {"cluster_id": cid},
        {"Last-Event-ID": first[-1].id or ""},
        succeeded_and_all_there,
    )
    streamed = first + second
    logged = await events(client, cid)
    assert [f.data["id"] for f in streamed] == [e["id"] for e in logged]
    # One shape everywhere.
    assert [f.data for f in streamed] == logged
    assert [f.data["sequence"] for f in streamed] == list(range(1, len(logged) + 1))
    cursors = [int(f.id or 0) for f in streamed]
    assert cursors == sorted(set(cursors))
    assert all(f.data["cluster_id"] == cid for f in streamed)
    assert (await wait_done(client, op["id"]))["status"] == "succeeded"


async def test_streamed_events_match_the_documented_schema(client: httpx.AsyncClient) -> None:
    """What schemathesis found: the stream was documented as one string, so every event (an
    object of `id`, `event` and `data`, as an SSE client parses it) broke the document. One
    frame's shape is the stream's `x-itemSchema` (no `schema`: the body is endless)."""
    response_doc = generate()["paths"]["/v1/events/stream"]["get"]["responses"]["200"]
    event_schema = response_doc["content"]["text/event-stream"]["x-itemSchema"]
    valid_event = documented(event_schema)
    valid_data = documented(event_schema["properties"]["data"]["contentSchema"])
    cluster = await create_cluster(client)
    done = await wait_done(client, (await start_ok(client, cluster["id"]))["id"])
    assert done["status"] == "succeeded"

    logged = await events(client, cluster["id"])
    parsed: list[dict[str, Any]] = []
    params = {"cluster_id": cluster["id"], "after": 0}
    async with client.stream("GET", "/v1/events/stream", params=params) as response:
        assert response.status_code == 200
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "":
                if "data" in fields:  # a frame without data (`retry:`) is no event
                    parsed.append(fields)
                    if len(parsed) == len(logged):
                        break
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data" and "data" in fields:  # data lines join with newlines
                    value = f"{fields['data']}\n{value}"
                fields[name] = value
    assert [json.loads(e["data"])["id"] for e in parsed] == [e["id"] for e in logged]
    assert [e for e in parsed if not valid_event(e)] == []
    assert [e for e in parsed if not valid_data(json.loads(e["data"]))] == []


async def test_stream_refuses_malformed_last_event_id(client: httpx.AsyncClient) -> None:
    for value in ("abc", "12x", "1.5"):
        async with client.stream(
            "GET", "/v1/events/stream", headers={"Last-Event-ID": value}
        ) as response:
            assert response.status_code == 400, value
            assert response.headers["content-type"].startswith("application/problem+json")
            problem = json.loads(await response.aread())
            assert problem["status"] == 400 and "Last-Event-ID" in problem["detail"]


async def feed(client: httpx.AsyncClient, cid: str, token: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"cluster_id": cid, "page_size": 3}
    if token is not None:
        params["page_token"] = token
    response = await client.get("/v1/events", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    assert page["next_page_token"], page
    return page


async def test_feed_pages_in_order_and_always_hands_back_a_cursor(
    client: httpx.AsyncClient,
) -> None:
    cluster = await create_cluster(client)
    cid = cluster["id"]
    op = await start_ok(client, cid)
    assert (await wait_done(client, op["id"]))["status"] == "succeeded"
    logged = await events(client, cid)

    seen: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = await feed(client, cid, token)
        assert len(page["items"]) <= 3
        token = page["next_page_token"]
        if not page["items"]:
            break
        seen.extend(page["items"])
    assert seen == logged

    # The cursor past the end is stable, and picks up what comes next.
    assert (await feed(client, cid, token))["items"] == []
    back = await start_ok(client, cid, "failback")
    assert (await wait_done(client, back["id"]))["status"] == "succeeded"
    more: list[dict[str, Any]] = []
    while True:
        page = await feed(client, cid, token)
        token = page["next_page_token"]
        if not page["items"]:
            break
        more.extend(page["items"])
    assert seen + more == await events(client, cid)
    assert more and more[0]["sequence"] == len(seen) + 1

    # Unfiltered, the feed is in commit order too: every pair's sequence only grows.
    page = (await client.get("/v1/events", params={"page_size": 100})).json()
    assert page["next_page_token"]
    last: dict[str | None, int] = {}
    for event in page["items"]:
        if event["cluster_id"] is not None:
            assert event["sequence"] > last.get(event["cluster_id"], 0), event
            last[event["cluster_id"]] = event["sequence"]

    bad = await client.get("/v1/events", params={"page_token": "not-a-token"})
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")


async def test_hanging_up_mid_stream_leaves_no_transaction_open(
    client: httpx.AsyncClient,
) -> None:
    """A client that hangs up while the stream reads the database must not leave that
    read's transaction open: on SQLite an open write transaction would lock out every
    writer (the next change would fail after the busy timeout)."""
    cluster = await create_cluster(client)
    for attempt in range(30):
        async with client.stream(
            "GET", "/v1/events/stream", params={"after": 0}, timeout=30
        ) as response:
            assert response.status_code == 200
            chunks = 0
            async for _chunk in response.aiter_bytes():
                chunks += 1
                if chunks > attempt % 4:
                    break  # hang up while the server is still reading the backlog
    changed = await client.patch(f"/v1/clusters/{cluster['id']}", json={"deployments": []})
    assert changed.status_code == 200, changed.text
    created = await client.post("/v1/clusters", json=pair_body())
    assert created.status_code == 201, created.text
