from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.actions.simulated import SimulatedEffect, SimulatedGate
from app.operations.models import Operation


def pair_body(**driver: Any) -> dict[str, Any]:
    name = f"pair-{uuid.uuid4().hex[:10]}"
    return {
        "name": name,
        "primary": {"name": f"{name}-east", "region": "us-east-1", "cloud": "aws"},
        "secondary": {"name": f"{name}-west", "region": "us-west-2", "cloud": "aws"},
        "driver": {"kind": "simulated", **driver},
        "deployments": [{"name": "api"}, {"name": "billing"}],
    }


async def create_cluster(client: httpx.AsyncClient, **driver: Any) -> dict[str, Any]:
    response = await client.post("/v1/clusters", json=pair_body(**driver))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def start(
    client: httpx.AsyncClient,
    cluster_id: str,
    kind: str = "failover",
    key: str | None = None,
    **body: Any,
) -> httpx.Response:
    return await client.post(
        f"/v1/clusters/{cluster_id}/{kind}",
        json=body,
        headers={"Idempotency-Key": key or uuid.uuid4().hex},
    )


async def start_ok(
    client: httpx.AsyncClient, cluster_id: str, kind: str = "failover", **body: Any
) -> dict[str, Any]:
    response = await start(client, cluster_id, kind, **body)
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


async def wait_done(client: httpx.AsyncClient, op_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(f"/v1/operations/{op_id}", params={"wait": 10})
        assert response.status_code == 200, response.text
        operation: dict[str, Any] = response.json()
        if operation["done"]:
            return operation
        assert time.monotonic() < deadline, f"operation not done in {timeout_s}s: {operation}"


async def wait_for(
    check: Callable[[], Awaitable[Any]], timeout_s: float = 30, interval_s: float = 0.05
) -> Any:
    """Poll `check` until it returns something truthy; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(interval_s)


async def step_status(client: httpx.AsyncClient, op_id: str, step: str) -> str:
    operation = (await client.get(f"/v1/operations/{op_id}")).json()
    return next(s["status"] for s in operation["steps"] if s["name"] == step)  # type: ignore[no-any-return]


async def events(client: httpx.AsyncClient, cluster_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = None
    while True:
        params: dict[str, Any] = {"page_size": 100}
        if token:
            params["page_token"] = token
        page = (await client.get(f"/v1/clusters/{cluster_id}/events", params=params)).json()
        items.extend(page["items"])
        token = page["next_page_token"]
        if not token:
            return items


async def open_gate(sessions: async_sessionmaker[AsyncSession], cluster_id: str, name: str) -> None:
    """Let a simulated step's `gate` or `hold` ("step", or "step:undo") go on."""
    async with sessions() as session, session.begin():
        session.add(SimulatedGate(cluster_id=cluster_id, name=name))


async def operation_row(sessions: async_sessionmaker[AsyncSession], op_id: str) -> Operation:
    async with sessions() as session:
        operation = await session.get(Operation, op_id)
        assert operation is not None
        return operation


async def effects_of(
    sessions: async_sessionmaker[AsyncSession], op_id: str
) -> list[SimulatedEffect]:
    """The simulated action's record of what it applied (and refused), oldest first."""
    async with sessions() as session:
        rows = await session.scalars(
            select(SimulatedEffect)
            .where(col(SimulatedEffect.operation_id) == op_id)
            .order_by(col(SimulatedEffect.applied_at))
        )
        return list(rows)


def documented(schema: dict[str, Any]) -> Callable[[Any], bool]:
    """Whether a value is valid by `schema`, a part of the OpenAPI document the code generates
    (its `$ref`s resolved against the document's components)."""
    import jsonschema_rs

    from app.openapi import generate

    validator = jsonschema_rs.Draft202012Validator(
        {**schema, "components": generate()["components"]}
    )
    return validator.is_valid  # type: ignore[no-any-return]


def component(name: str) -> dict[str, Any]:
    """A reference to one of the document's component schemas, for `documented`."""
    return {"$ref": f"#/components/schemas/{name}"}
