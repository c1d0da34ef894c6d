"""The committed OpenAPI document is what the code generates, and errors are problem details."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from app.config import Settings
from app.errors import PROBLEM_JSON
from app.main import create_app
from app.openapi import render
from tests.stack import ROOT

COMMITTED = ROOT / "openapi" / "openapi.json"
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
