"""The problem-details body (RFC 9457), for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from app.errors import PROBLEM_JSON


class ProblemDetails(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str


_DESCRIPTIONS = {
    400: "Bad request (missing Idempotency-Key, malformed JSON, bad page token)",
    401: "No token, or an unknown, expired or revoked one",
    403: "The token's role does not allow this",
    404: "Not found",
    406: "None of the media types in Accept can be served (the problem names those that can)",
    409: "Conflict with the current state (names it and the allowed actions)",
    412: "If-Match does not match the current version",
    413: "The request body is over 1 MiB",
    422: "Validation failed, or an Idempotency-Key reused with another request",
    429: "Too many changes with this token; see Retry-After",
    503: "Not ready",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {
            "description": _DESCRIPTIONS[code],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
        }
        for code in codes
    }
