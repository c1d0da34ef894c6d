"""Failover and failback take exactly the requests the OpenAPI document allows: a body or an
Idempotency-Key the document calls valid is never refused for its form, and one it calls
invalid is never taken (what schemathesis found, issue 8)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from app.errors import BadRequest
from app.openapi import generate
from app.operations.idempotency import validate_key
from tests.helpers import component, create_cluster, documented, wait_done

START_BODIES: list[Any] = [
    None,
    {},
    {"mode": "planned", "reason": "drill"},
    {"mode": "forced"},
    {"mode": "forced", "accept_data_loss": False},
    {"mode": "forced", "accept_data_loss": True},
    {"accept_data_loss": 1},
    {"mode": "forced", "accept_data_loss": 1},
    {"mode": "forced", "accept_data_loss": "true"},
    {"accept_data_loss": None},
    {"reason": None},
    {"dry_run": True},
    {"dry_run": 1},
    {"ignore_readiness": "yes"},
]


@pytest.mark.parametrize("kind", ["failover", "failback"])
async def test_a_start_body_is_refused_exactly_when_the_document_refuses_it(
    client: httpx.AsyncClient, kind: str
) -> None:
    """A forced start without consent was valid by the document but refused; consent given as
    1 or "true" was invalid by it but taken, and started a forced failover."""
    valid = documented(component("OperationRequest"))
    cluster = await create_cluster(client)
    wrong = []
    for body in START_BODIES:
        response = await client.post(
            f"/v1/clusters/{cluster['id']}/{kind}",
            json=body,
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        # 202, 200 (a dry run) or 409 (the pair is not in a state for it): the body was taken.
        assert response.status_code in (200, 202, 409, 422), response.text
        if (response.status_code != 422) != (body is None or valid(body)):
            wrong.append(f"{body}: {response.status_code}")
        if response.status_code == 202:
            await wait_done(client, response.json()["id"])
    assert not wrong, f"the server and the document disagree on {kind} bodies: {wrong}"


def _key_parameter(kind: str) -> dict[str, Any]:
    operation = generate()["paths"][f"/v1/clusters/{{cluster_id}}/{kind}"]["post"]
    (parameter,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    return parameter  # type: ignore[no-any-return]


def _taken(key: str) -> bool:
    try:
        validate_key(key.strip(" \t"))  # HTTP strips a header value's ends
    except BadRequest:
        return False
    return True


LATIN_1 = [chr(code) for code in range(256)]
KEYS = [
    *LATIN_1,
    *(f"a{c}b" for c in LATIN_1),
    " key ",
    "   ",
    "incident 4711",
    "k" * 255,
    "k" * 256,
]


@pytest.mark.parametrize("kind", ["failover", "failback", "deployments/retry"])
def test_the_document_requires_the_idempotency_key_the_server_requires(kind: str) -> None:
    """The key was documented as optional, any string; a request without it is a 400."""
    parameter = _key_parameter(kind)
    assert parameter["in"] == "header" and parameter["required"] is True
    valid = documented(parameter["schema"])
    wrong = [key for key in KEYS if valid(key) != _taken(key)]
    assert not wrong, f"keys the document and validate_key disagree on: {wrong!r}"
