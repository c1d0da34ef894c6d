"""X-Request-ID on every response, and the 1 MiB body limit, through the running server.

The last tests run a small app in-process, for the paths the real server cannot be made to
take on purpose: an unhandled exception (a 500) and a response started before the body ends.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app.errors import install_handlers
from app.middleware import BodyLimitMiddleware, RequestIdFilter, RequestIdMiddleware
from tests.helpers import pair_body
from tests.stack import Stack

PROBLEM_JSON = "application/problem+json"
MIB = 1024 * 1024
GENERATED = re.compile(r"[0-9a-f]{32}")


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail", "code"} <= set(body), body
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"].endswith(code.replace("_", "-"))
    return body


def assert_generated_id(response: httpx.Response) -> str:
    rid = response.headers.get("x-request-id")
    assert rid is not None and GENERATED.fullmatch(rid), rid
    return rid


def big_json(size: int) -> bytes:
    """A JSON object of exactly `size` bytes."""
    shell = json.dumps({"name": ""}).encode()
    return json.dumps({"name": "x" * (size - len(shell))}).encode()


async def chunks(total: int, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    body = big_json(total)
    for start in range(0, len(body), chunk):
        yield body[start : start + chunk]


# --- X-Request-ID ------------------------------------------------------------------------


async def test_a_request_without_an_id_gets_a_generated_one(client: httpx.AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    assert first.status_code == 200 and second.status_code == 200
    assert assert_generated_id(first) != assert_generated_id(second)


@pytest.mark.parametrize(
    "rid", ["abc-123", "a.b:c_d-E", "x", "7" * 128, "5d71f2331d5a4a58874ab227067b48b2"]
)
async def test_a_valid_request_id_is_echoed(client: httpx.AsyncClient, rid: str) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": rid})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == rid


@pytest.mark.parametrize(
    "rid", ["a" * 300, "a" * 129, "has spaces", "semi;colon", "slash/y", "ünïcode", ""]
)
async def test_an_invalid_request_id_is_replaced(client: httpx.AsyncClient, rid: str) -> None:
    response = await client.get("/healthz", headers={b"X-Request-ID": rid.encode()})
    assert response.status_code == 200
    assert assert_generated_id(response) != rid


async def test_a_problem_carries_the_request_id(client: httpx.AsyncClient) -> None:
    rid = f"not-found-{uuid.uuid4().hex}"
    response = await client.get("/v1/clusters/nope", headers={"X-Request-ID": rid})
    assert_problem(response, 404, "not_found")
    assert response.headers["x-request-id"] == rid
    # A path no route has, and a validation problem, too.
    response = await client.get("/no/such/path", headers={"X-Request-ID": rid})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == rid
    response = await client.post("/v1/clusters", json={}, headers={"X-Request-ID": rid})
    assert_problem(response, 422, "validation_failed")
    assert response.headers["x-request-id"] == rid


async def test_server_log_lines_have_a_request_id_field(live_stack: Stack) -> None:
    """The API server logs no line per request (uvicorn's access log is off, and routes log
    only 5xx problems), so no request's id can be looked for in its log: this checks only
    that the format carries the field, "-" outside a request (the start-up warning about
    TANDEM_WEBHOOK_ALLOW_PRIVATE, which the test stack sets)."""
    assert live_stack.api is not None
    lines = live_stack.api.log_path.read_text(errors="replace").splitlines()
    warning = [line for line in lines if "TANDEM_WEBHOOK_ALLOW_PRIVATE is set" in line]
    assert warning, "\n".join(lines[-20:])
    assert " WARNING tandem [-] TANDEM_WEBHOOK_ALLOW_PRIVATE" in warning[-1]


# --- body limit --------------------------------------------------------------------------


async def test_a_body_over_the_limit_by_content_length_is_413(client: httpx.AsyncClient) -> None:
    rid = f"big-{uuid.uuid4().hex}"
    response = await client.post(
        "/v1/clusters",
        content=big_json(2 * MIB),
        headers={"Content-Type": "application/json", "X-Request-ID": rid},
    )
    assert response.request.headers["content-length"] == str(2 * MIB)
    body = assert_problem(response, 413, "payload_too_large")
    assert str(MIB) in body["detail"]
    assert response.headers["x-request-id"] == rid


async def test_a_chunked_body_that_grows_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/clusters", content=chunks(2 * MIB), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413, "payload_too_large")
    assert_generated_id(response)
    # The connection is still good for the next request.
    assert (await client.get("/healthz")).status_code == 200


async def test_a_body_of_exactly_the_limit_is_let_through(client: httpx.AsyncClient) -> None:
    """1 MiB on the nose passes the middleware; the app then rejects the absurd name."""
    for content in (big_json(MIB), chunks(MIB)):
        response = await client.post(
            "/v1/clusters", content=content, headers={"Content-Type": "application/json"}
        )
        assert_problem(response, 422, "validation_failed")


async def test_a_small_request_still_works(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/clusters", json=pair_body(step_delay_ms=0))
    assert response.status_code == 201, response.text
    assert_generated_id(response)
    # Chunked, under the limit.
    encoded = json.dumps(pair_body(step_delay_ms=0)).encode()

    async def two_chunks() -> AsyncIterator[bytes]:
        yield encoded[:10]
        yield encoded[10:]

    response = await client.post(
        "/v1/clusters", content=two_chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text


# --- in-process: a 500, and a response started before the body ends -------------------------
# No Tandem route fails on purpose or answers before reading its body, so these two run
# the real middlewares around a stand-in app, in process.


def boom_app() -> FastAPI:
    app = FastAPI()
    install_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=100)
    app.add_middleware(RequestIdMiddleware)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return app


async def answer_then_read(scope: Scope, receive: Receive, send: Send) -> None:
    """Starts its response, then reads the body and says how far it got."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            await send({"type": "http.response.body", "body": b"cut at %d" % total})
            return
        total += len(message.get("body", b""))
        if not message.get("more_body", False):
            await send({"type": "http.response.body", "body": b"read %d" % total})
            return


async def test_an_unhandled_error_is_a_500_problem_with_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = httpx.ASGITransport(boom_app(), raise_app_exceptions=False)
    caplog.handler.addFilter(RequestIdFilter())
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
        with caplog.at_level(logging.ERROR, logger="tandem.errors"):
            response = await c.get("/boom", headers={"X-Request-ID": "boom-1"})
    assert_problem(response, 500, "internal")
    assert response.headers["x-request-id"] == "boom-1"
    logged = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert len(logged) == 1
    # Logged by the app's handler, outside the middleware, still under the request's id.
    assert logged[0].request_id == "boom-1"  # type: ignore[attr-defined]


async def test_a_body_cut_off_after_the_response_started_sends_no_second_response() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * 40

    app = RequestIdMiddleware(BodyLimitMiddleware(answer_then_read, max_bytes=100))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://app") as c:
        # The app had answered 200 before the body passed 100 bytes: that answer stands, the
        # app is told the client has gone after 80 bytes, and no 413 follows.
        response = await c.post("/", content=pieces())
        assert response.status_code == 200
        assert response.content == b"cut at 80"
        assert_generated_id(response)
        response = await c.post("/", content=b"z" * 100)
        assert response.status_code == 200
        assert response.content == b"read 100"
