"""Opaque keyset cursors: a page token is the sort key of the last item, base64url JSON."""

from __future__ import annotations

import base64
import json
from typing import Any

from app.errors import BadRequest


def encode_token(key: list[Any]) -> str:
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str | None, arity: int) -> list[Any] | None:
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("page_token is not a token this service issued") from None
    if not isinstance(key, list) or len(key) != arity:
        raise BadRequest("page_token is not a token this service issued")
    return key
