"""What the OpenAPI document says beyond what FastAPI generates, for generated clients
(app.main applies it; app.openapi prints the document).

FastAPI says what the routes take and return. What it cannot see is said here: operation
ids a person would type, the headers responses carry, the typed event payloads, the
optional request bodies.
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute

from app.events.schemas import EVENT_MODELS
from app.middleware import REQUEST_ID_HEADER

SERVERS: list[dict[str, str | Any]] = [
    {
        "url": "/",
        "description": "The host that serves this document (`make run`: http://localhost:8000)",
    }
]

# Every tag a route uses, described; the order is the reference's.
TAGS: list[dict[str, Any]] = [
    {"name": "clusters", "description": "DR pairs: a primary and a secondary cluster"},
    {
        "name": "operations",
        "description": "Failover, failback and the other long-running operations: POST answers "
        "202 with a Location to poll",
    },
    {"name": "events", "description": "The transition log, the event feed and its live stream"},
    {
        "name": "webhooks",
        "description": "Webhook endpoints, their deliveries and what they receive",
    },
    {"name": "deployments", "description": "What runs on a pair, validated after a switch"},
    {"name": "secrets", "description": "Values a pair's plan needs but nobody may read back"},
    {"name": "access", "description": "API tokens, who am I, the audit log"},
    {"name": "health", "description": "Liveness, readiness and Prometheus metrics"},
    {"name": "batches", "description": "Many operations as one request: a region's evacuation"},
    {
        "name": "reports",
        "description": "Evidence for auditors: a pair's operations, objectives and readiness "
        "over a period, as JSON or PDF",
    },
]

# No licence file ships with Tandem: the document says so rather than guess one.
LICENSE = {"name": "Proprietary: all rights reserved"}

# Operation ids where the route's function name is not what a caller would type: the API
# says "clusters" in its paths, a DR pair is what it is.
OPERATION_IDS = {
    "list_clusters": "listPairs",
    "create_cluster": "registerPair",
    "get_cluster": "getPair",
    "patch_cluster": "updatePair",
    "delete_cluster": "deletePair",
    "list_cluster_events": "listPairEvents",
    "get_readiness": "getPairReadiness",
    "me": "getMe",
    "metrics": "getMetrics",
    "list_audit": "listAuditRecords",
    "patch_webhook": "updateWebhook",
    "rotate_secret": "rotateWebhookSecret",
    "redeliver": "redeliverDelivery",
}


def camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def operation_id(route: APIRoute) -> str:
    """FastAPI's generate_unique_id_function: `getOperation`, not `get_operation_v1_..._get`."""
    return OPERATION_IDS.get(route.name) or camel(route.name)


def _header(description: str, *, required: bool, **schema: Any) -> dict[str, Any]:
    return {
        "description": description,
        "required": required,
        "schema": {"type": "string", **schema},
    }


HEADERS = {
    REQUEST_ID_HEADER: _header(
        "The request's id: the client's own if it sent a valid one, else a new one; in the "
        "server's logs",
        required=True,
        pattern="^[A-Za-z0-9._:-]{1,128}$",
    ),
    "Location": _header("Where the resource (or the operation to poll) is", required=True),
    "ETag": _header(
        "The pair's version, quoted: send it back as If-Match", required=True, pattern='^"[0-9]+"$'
    ),
    "Retry-After": _header(
        "Seconds to wait before trying again", required=True, pattern="^[0-9]+$"
    ),
    "RetryAfterWhenPassing": _header(
        "Seconds to wait before trying again, when the cause is passing (a busy or "
        "unreachable database)",
        required=False,
        pattern="^[0-9]+$",
    ),
    "Idempotent-Replayed": _header(
        "`true` when this is the stored response of an earlier request with the same "
        "Idempotency-Key (the same operation); absent on the first",
        required=False,
        enum=["true"],
    ),
}

# (operation id, status) -> the headers (components above, by name) that response carries,
# besides X-Request-ID (on every response) and Retry-After (on 429s and 503s).
RESPONSE_HEADERS: dict[tuple[str, str], list[str]] = {
    ("failover", "202"): ["Location", "Idempotent-Replayed"],
    ("failback", "202"): ["Location", "Idempotent-Replayed"],
    ("retryDeployments", "202"): ["Location", "Idempotent-Replayed"],
    ("startDrill", "202"): ["Location", "Idempotent-Replayed"],
    ("cancelOperation", "202"): ["Location"],
    ("retryOperation", "202"): ["Location"],
    ("approveOperation", "202"): ["Location"],
    ("rejectOperation", "202"): ["Location"],
    ("registerPair", "201"): ["Location", "ETag"],
    ("getPair", "200"): ["ETag"],
    ("updatePair", "200"): ["ETag"],
    ("createToken", "201"): ["Location"],
    ("createWebhook", "201"): ["Location"],
    ("putSecret", "201"): ["Location"],
}


def refine(document: dict[str, Any]) -> None:
    """What FastAPI does not say, said in place (see the module's docstring)."""
    components = document.setdefault("components", {})
    components["headers"] = dict(HEADERS)
    _events_typed(document)
    for item in document["paths"].values():
        for operation in item.values():
            _optional_body(operation)
            _response_headers(operation)
    # A receiver authenticates Tandem by the signature, not by a token of Tandem's.
    for item in document.get("webhooks", {}).values():
        for operation in item.values():
            operation["security"] = []


def _ref(name: str, kind: str = "headers") -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _response_headers(operation: dict[str, Any]) -> None:
    for status, response in operation["responses"].items():
        headers = response.setdefault("headers", {})
        headers[REQUEST_ID_HEADER] = _ref(REQUEST_ID_HEADER)
        for name in RESPONSE_HEADERS.get((operation["operationId"], status), []):
            headers[name] = _ref(name)
        if status == "429":
            headers["Retry-After"] = _ref("Retry-After")
        elif status == "503":
            headers["Retry-After"] = _ref("RetryAfterWhenPassing")


def _optional_body(operation: dict[str, Any]) -> None:
    """A body that may be left out is documented as not required, never as JSON `null`: a
    generated client then omits it rather than sending `null` (or nothing it can encode)."""
    body = operation.get("requestBody")
    if body is None or body.get("required"):
        return
    for media in body["content"].values():
        schema = media["schema"]
        kept = [branch for branch in schema.get("anyOf", []) if branch != {"type": "null"}]
        if len(kept) == 1 and len(schema["anyOf"]) == 2:
            media["schema"] = kept[0]
    body["required"] = False


def _events_typed(document: dict[str, Any]) -> None:
    """`Event` is one schema per event type, told apart by `type`; the list and the stream
    refer to it (each webhook to the one type it carries: app.webhooks.docs)."""
    from pydantic.json_schema import models_json_schema

    schemas = document["components"]["schemas"]
    _, generated = models_json_schema(
        [(model, "serialization") for model in EVENT_MODELS.values()],
        ref_template="#/components/schemas/{model}",
    )
    for name, schema in generated.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas["Event"] = {
        "description": "One shape everywhere: the event list, the live stream and a webhook "
        "body; `data` depends on `type`.",
        "oneOf": [_ref(model.__name__, "schemas") for model in EVENT_MODELS.values()],
        "discriminator": {
            "propertyName": "type",
            "mapping": {
                event_type: f"#/components/schemas/{model.__name__}"
                for event_type, model in EVENT_MODELS.items()
            },
        },
    }
    _retarget(document, "#/components/schemas/EventOut", "#/components/schemas/Event")
    schemas.pop("EventOut", None)
    page = schemas.pop("Page_EventOut_")
    page["title"] = "Page[Event]"
    schemas["Page_Event_"] = page
    _retarget(document, "#/components/schemas/Page_EventOut_", "#/components/schemas/Page_Event_")


def _retarget(node: Any, old: str, new: str) -> None:
    """Every `$ref` to `old` made a `$ref` to `new`."""
    if isinstance(node, dict):
        if node.get("$ref") == old:
            node["$ref"] = new
        for value in node.values():
            _retarget(value, old, new)
    elif isinstance(node, list):
        for value in node:
            _retarget(value, old, new)
