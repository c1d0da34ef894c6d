"""Crafted input is a 400/422 problem, never a 500: page tokens and cursors out of range or
carrying what a database cannot store, event cursors past 64 bits, times that overflow
when normalised to UTC, over-long webhook URLs."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.helpers import create_cluster

INT64_MAX = 2**63 - 1

# Raw JSON, so that escapes such as a lone surrogate reach the decoder as a client sent them.
CRAFTED_TOKENS = [
    "[2147483648]",
    "[9223372036854775808]",
    "[-1]",
    '["9999-12-31T23:59:59-23:59","x"]',
    '["0001-01-01T00:00:00+23:59","x"]',
    '["2026-01-01T00:00:00+00:00","a\\u0000b"]',
    '["2026-01-01T00:00:00+00:00","\\ud800"]',
    '["2026-01-01T00:00:00+00:00","\\udfff\\ud800"]',
]


def token_of(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def assert_refused(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    return body


async def lists(client: httpx.AsyncClient) -> list[str]:
    cluster = await create_cluster(client)
    hook = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    assert hook.status_code == 201, hook.text
    return [
        "/v1/clusters",
        f"/v1/clusters/{cluster['id']}/events",
        "/v1/operations",
        "/v1/events",
        "/v1/tokens",
        "/v1/audit",
        "/v1/webhooks",
        f"/v1/webhooks/{hook.json()['id']}/deliveries",
    ]


async def test_crafted_page_tokens_are_400_problems(client: httpx.AsyncClient) -> None:
    failures = []
    for path in await lists(client):
        for raw in CRAFTED_TOKENS:
            response = await client.get(path, params={"page_token": token_of(raw)})
            if path == "/v1/events" and raw == "[2147483648]":
                # Event positions are 64-bit: a cursor past 2^31 is one this feed can issue.
                ok = response.status_code == 200
            else:
                ok = response.status_code == 400 and response.headers["content-type"].startswith(
                    "application/problem+json"
                )
            if not ok:
                failures.append((path, raw, response.status_code, response.text[:200]))
    assert failures == []


async def test_a_feed_cursor_past_2_to_the_31_reads_the_feed(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/events", params={"page_token": token_of("[2147483648]")})
    assert response.status_code == 200, response.text
    assert response.json()["items"] == []


@pytest.mark.parametrize("after", [str(INT64_MAX + 1), str(10**30), "-1"])
async def test_a_stream_after_out_of_range_is_422(client: httpx.AsyncClient, after: str) -> None:
    response = await client.get("/v1/events/stream", params={"after": after})
    assert_refused(response, 422)


@pytest.mark.parametrize("last_id", [str(INT64_MAX + 1), "9" * 40])
async def test_a_last_event_id_out_of_range_is_400(client: httpx.AsyncClient, last_id: str) -> None:
    response = await client.get("/v1/events/stream", headers={"Last-Event-ID": last_id})
    assert_refused(response, 400)


@pytest.mark.parametrize("cursor", [2**31, INT64_MAX])
async def test_a_stream_resumes_after_a_64_bit_cursor(
    client: httpx.AsyncClient, cursor: int
) -> None:
    for params, headers in (({"after": str(cursor)}, {}), ({}, {"Last-Event-ID": str(cursor)})):
        async with client.stream(
            "GET", "/v1/events/stream", params=params, headers=headers
        ) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")


@pytest.mark.parametrize(
    "expires_at",
    ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2000-01-01T00:00:00Z"],
)
async def test_a_token_expiry_that_overflows_or_has_passed_is_422(
    client: httpx.AsyncClient, expires_at: str
) -> None:
    response = await client.post(
        "/v1/tokens", json={"name": "crafted", "role": "viewer", "expires_at": expires_at}
    )
    body = assert_refused(response, 422)
    assert "expires_at" in body["detail"]


async def test_a_token_expiring_in_the_future_is_created(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/tokens",
        json={"name": "future", "role": "viewer", "expires_at": "9999-12-30T00:00:00-23:59"},
    )
    assert response.status_code == 201, response.text


async def test_a_webhook_url_over_2000_characters_is_422(client: httpx.AsyncClient) -> None:
    url = "http://127.0.0.1:9/" + "a" * 2000
    created = await client.post("/v1/webhooks", json={"url": url})
    assert_refused(created, 422)
    hook = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    assert hook.status_code == 201, hook.text
    patched = await client.patch(f"/v1/webhooks/{hook.json()['id']}", json={"url": url})
    assert_refused(patched, 422)
    fits = "http://127.0.0.1:9/" + "a" * (2000 - len("http://127.0.0.1:9/"))
    assert (await client.post("/v1/webhooks", json={"url": fits})).status_code == 201
