"""The committed OpenAPI document is what the code generates, and errors are problem details."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from app.config import Settings
from app.errors import PROBLEM_JSON
from app.main import create_app
from app.openapi import render
from app.webhooks.schemas import EVENT_TYPES
from tests.conftest import REQUIRE_SERVICES
from tests.stack import ROOT

COMMITTED = ROOT / "openapi" / "openapi.json"
REDOCLY = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "redocly"
PROBLEM_REF = "#/components/schemas/ProblemDetails"
METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


def _document() -> dict[str, Any]:
    return json.loads(render())  # type: ignore[no-any-return]


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_committed_openapi_matches_the_code() -> None:
    committed = COMMITTED.read_text()
    generated = render()
    if committed != generated:
        # Compare parsed documents too, so the message names what drifted.
        old, new = json.loads(committed), json.loads(generated)
        paths = set(old["paths"]) | set(new["paths"])
        drifted = sorted(p for p in paths if old["paths"].get(p) != new["paths"].get(p))
        pytest.fail(
            "openapi/openapi.json is out of date with the code; run `make openapi` and commit "
            f"the result (paths that differ: {drifted or 'none; components or info differ'})"
        )


def _api_routes() -> list[tuple[str, str]]:
    """(method, path) of every FastAPI route in the app, however deeply its router is included."""
    app = create_app(Settings(redis_url="redis://unused"))
    return sorted(
        (method, str(context.path_format))
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute) and context.include_in_schema
        for method in context.methods or ()
        if method != "HEAD"
    )


def test_every_route_declares_its_errors_as_problem_details() -> None:
    """Every route is documented; every 4xx/5xx it declares is application/problem+json with
    the ProblemDetails schema; routes that take input declare 422 and routes with an id 404."""
    document = _document()
    operations = {(method, path): op for method, path, op in _operations(document)}
    routes = _api_routes()
    assert routes, "no API routes found"
    wrong: list[str] = []
    for method, path in routes:
        operation = operations.get((method, path))
        if operation is None:
            wrong.append(f"{method} {path}: not in the document")
            continue
        responses: dict[str, Any] = operation["responses"]
        for code, response in responses.items():
            if code == "default" or int(code) >= 400:
                content = response.get("content", {})
                schema = content.get(PROBLEM_JSON, {}).get("schema", {})
                if set(content) != {PROBLEM_JSON} or schema.get("$ref") != PROBLEM_REF:
                    wrong.append(f"{method} {path} {code}: not a problem document: {content}")
        if (operation.get("parameters") or operation.get("requestBody")) and "422" not in responses:
            wrong.append(f"{method} {path}: takes input but does not declare 422")
        if "{" in path and "404" not in responses:
            wrong.append(f"{method} {path}: has a path id but does not declare 404")
    assert not wrong, "routes whose error responses are not documented as problem details:\n" + (
        "\n".join(wrong)
    )
    # FastAPI's default validation-error shape must not leak into the document.
    assert "HTTPValidationError" not in json.dumps(document)
    assert "ProblemDetails" in document["components"]["schemas"]


def test_every_reference_resolves() -> None:
    """No $ref points at a component the document does not have (e.g. one removed by hand)."""
    document = _document()
    refs: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    dangling = []
    for ref in sorted(refs):
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        if target is None:
            dangling.append(ref)
    assert not dangling, f"references to missing components: {dangling}"


def test_no_parameter_is_documented_as_null() -> None:
    """A query or header parameter is absent or text: documented as `null` too (FastAPI's
    `X | None`), schemathesis sent the text "null" (`If-Match: null`, `Last-Event-ID: null`),
    which the document allowed and the server refused."""
    nullable = [
        f"{method} {path} {parameter['name']}"
        for method, path, operation in _operations(_document())
        for parameter in operation.get("parameters", [])
        if "null" in json.dumps(parameter["schema"])
    ]
    assert not nullable, f"parameters documented as null: {nullable}"


def test_every_link_names_an_operation_and_its_parameters() -> None:
    document = _document()
    by_id = {op["operationId"]: op for _, _, op in _operations(document)}
    wrong = []
    for method, path, operation in _operations(document):
        for code, response in operation["responses"].items():
            for name, link in response.get("links", {}).items():
                target = by_id.get(link.get("operationId"))
                names = {p["name"] for p in (target or {}).get("parameters", [])}
                if target is None or not set(link.get("parameters", {})) <= names:
                    wrong.append(f"{method} {path} {code} {name}: {link}")
    assert not wrong, f"links to no operation or to parameters it lacks: {wrong}"


def test_constraints_are_json_schema_keywords() -> None:
    """pydantic prints a constraint it cannot place (one after a BeforeValidator) under its own
    name (`"ge": 0`), which no JSON Schema validator reads: the bound is then undocumented."""
    leaked: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("integer", "number") and {"gt", "ge", "lt", "le"} & set(node):
                leaked.append(where)
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    walk(_document(), "#")
    assert not leaked, f"constraints under pydantic's names, not JSON Schema's: {leaked}"


def test_every_route_that_takes_a_body_documents_400() -> None:
    """A body that is not JSON is a 400 problem on every route (schemathesis found approve and
    reject answering it undocumented)."""
    missing = [
        f"{method} {path}"
        for method, path, operation in _operations(_document())
        if "requestBody" in operation and "400" not in operation["responses"]
    ]
    assert not missing, f"routes taking a body without 400 documented: {missing}"


def test_redocly_recommended_lint_finds_no_errors() -> None:
    """The committed document passes Redocly's recommended rules with no error. Warnings left
    (see the summary it prints): /healthz and /readyz declare no 4xx (they answer none), and
    the licence has no URL or SPDX id (none is published)."""
    if not REDOCLY.exists():
        message = f"{REDOCLY} is missing: `npm ci --prefix .ci/node` installs it (.ci/run does)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    lint = subprocess.run(
        [str(REDOCLY), "lint", str(COMMITTED), "--extends", "recommended", "--format=summary"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    output = lint.stdout + lint.stderr
    assert lint.returncode == 0, output
    assert not re.search(r"^error\s", output, re.MULTILINE), output
    assert "valid" in output, output


def test_operation_ids_are_what_a_person_types() -> None:
    """camelCase, unique, on every operation and webhook; the main ones by name."""
    document = _document()
    ids = [op["operationId"] for _, _, op in _operations(document)]
    ids += [op["operationId"] for item in document["webhooks"].values() for op in item.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    bad = [i for i in ids if not re.fullmatch(r"[a-z]+(?:[A-Z0-9][a-z0-9]*)*", i)]
    assert not bad, f"operation ids that are not camelCase: {bad}"
    by_route = {(m, p): op["operationId"] for m, p, op in _operations(document)}
    assert by_route[("POST", "/v1/clusters/{cluster_id}/failover")] == "failover"
    assert by_route[("POST", "/v1/clusters/{cluster_id}/failback")] == "failback"
    assert by_route[("GET", "/v1/operations/{operation_id}")] == "getOperation"
    assert by_route[("POST", "/v1/operations/{operation_id}/cancel")] == "cancelOperation"
    assert by_route[("GET", "/v1/clusters")] == "listPairs"
    assert by_route[("POST", "/v1/clusters")] == "registerPair"
    assert by_route[("GET", "/v1/clusters/{cluster_id}")] == "getPair"


def test_idempotency_key_is_required_where_the_server_requires_it() -> None:
    document = _document()
    for path in (
        "/v1/clusters/{cluster_id}/failover",
        "/v1/clusters/{cluster_id}/failback",
        "/v1/clusters/{cluster_id}/deployments/retry",
        "/v1/clusters/{cluster_id}/drills",
    ):
        parameters = document["paths"][path]["post"]["parameters"]
        [key] = [p for p in parameters if p["name"] == "Idempotency-Key"]
        assert key["in"] == "header" and key["required"] is True, key
        assert key["schema"]["type"] == "string" and key["schema"]["minLength"] == 1


def test_response_headers_are_documented() -> None:
    document = _document()
    headers = document["components"]["headers"]

    def names(path: str, method: str, status: str) -> set[str]:
        return set(document["paths"][path][method]["responses"][status].get("headers", {}))

    for path in ("/v1/clusters/{cluster_id}/failover", "/v1/clusters/{cluster_id}/failback"):
        assert {"Location", "Idempotent-Replayed", "X-Request-ID"} <= names(path, "post", "202")
    for action in ("cancel", "retry"):
        assert "Location" in names(f"/v1/operations/{{operation_id}}/{action}", "post", "202")
    assert {"Location", "ETag"} <= names("/v1/clusters", "post", "201")
    assert "ETag" in names("/v1/clusters/{cluster_id}", "get", "200")
    assert "ETag" in names("/v1/clusters/{cluster_id}", "patch", "200")
    assert headers["Location"]["required"] is True
    assert headers["Idempotent-Replayed"]["required"] is False
    # X-Request-ID is on every response; Retry-After on every 429.
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            assert "X-Request-ID" in response.get("headers", {}), f"{method} {path} {status}"
            if status == "429":
                assert "Retry-After" in response["headers"], f"{method} {path} {status}"
    assert headers["Retry-After"]["required"] is True


def test_licence_servers_and_tags() -> None:
    document = _document()
    assert document["info"]["license"]["name"]
    assert document["servers"] and all(server["url"] for server in document["servers"])
    tags = {tag["name"]: tag for tag in document["tags"]}
    assert all(tag.get("description") for tag in tags.values()), tags
    untagged = [
        f"{method} {path}"
        for method, path, operation in _operations(document)
        if not operation.get("tags") or not set(operation["tags"]) <= set(tags)
    ]
    untagged += [
        name
        for name, item in document["webhooks"].items()
        for op in item.values()
        if not op.get("tags") or not set(op["tags"]) <= set(tags)
    ]
    assert not untagged, f"operations without a declared tag: {untagged}"


def test_event_payloads_are_typed_per_event_type() -> None:
    """`Event` is a oneOf with a discriminator on `type`, one schema per type, each with its
    own `data`; the list, the stream's frames and every webhook refer to it."""
    document = _document()
    schemas = document["components"]["schemas"]
    event = schemas["Event"]
    mapping = event["discriminator"]["mapping"]
    assert event["discriminator"]["propertyName"] == "type"
    assert set(mapping) == set(EVENT_TYPES)
    assert sorted(mapping.values()) == sorted(branch["$ref"] for branch in event["oneOf"])
    for event_type, ref in mapping.items():
        one = schemas[ref.rsplit("/", 1)[1]]
        assert one["properties"]["type"]["const"] == event_type
        data = one["properties"]["data"]
        assert "$ref" in data, (event_type, data)
    page = document["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]
    page_schema = schemas[page["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert page_schema["properties"]["items"]["items"] == {"$ref": "#/components/schemas/Event"}
    for event_type in EVENT_TYPES:
        body = document["webhooks"][event_type]["post"]["requestBody"]["content"]
        assert body["application/json"]["schema"] == {"$ref": mapping[event_type]}
    assert "EventOut" not in json.dumps(document)


def test_the_stream_is_not_one_body() -> None:
    """The SSE stream's 200 has no `schema` a generator would read as one string or object;
    one frame's shape is in x-itemSchema, its `data` an Event."""
    document = _document()
    ok = document["paths"]["/v1/events/stream"]["get"]["responses"]["200"]
    media = ok["content"]["text/event-stream"]
    assert "schema" not in media
    frame = media["x-itemSchema"]
    assert frame["properties"]["data"]["contentSchema"] == {"$ref": "#/components/schemas/Event"}


def test_optional_bodies_can_be_left_out() -> None:
    """failover, failback, approve, reject: the body is not required and is not `null`."""
    document = _document()
    for path in (
        "/v1/clusters/{cluster_id}/failover",
        "/v1/clusters/{cluster_id}/failback",
        "/v1/operations/{operation_id}/approve",
        "/v1/operations/{operation_id}/reject",
    ):
        body = document["paths"][path]["post"]["requestBody"]
        assert body.get("required") is False, path
        assert "null" not in json.dumps(body), path
