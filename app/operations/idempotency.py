"""Idempotency-Key handling (IETF draft "The Idempotency-Key HTTP Header Field").

A key is claimed by inserting its record inside the transaction that does the work, so
the record and the operation commit together. A concurrent request with the same key
waits on the row (PostgreSQL) or on the write lock (SQLite), then replays the winner's
stored response. A failed request stores nothing, so its key can be used again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.columns import utcnow
from app.db import unit_of_work
from app.errors import BadRequest, IdempotencyInFlight, IdempotencyKeyMissing, IdempotencyKeyReused
from app.operations.models import IdempotencyRecord

RETENTION = timedelta(hours=24)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: dict[str, Any]
    headers: dict[str, str]
    replayed: bool


def validate_key(key: str | None) -> str:
    if key is None or key == "":
        raise IdempotencyKeyMissing("send an Idempotency-Key header (any unique string)")
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise BadRequest(f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters")
    return key


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


class _KeyTaken(Exception):
    pass


Produce = Callable[[AsyncSession], Awaitable[tuple[int, dict[str, Any], dict[str, str]]]]


async def run_once(
    sessions: async_sessionmaker[AsyncSession],
    scope: str,
    key: str,
    print_: str,
    produce: Produce,
    *,
    cluster_id: str | None = None,
) -> StoredResponse:
    for _ in range(5):
        try:
            return await _attempt(sessions, scope, key, print_, produce, cluster_id)
        except _KeyTaken:
            continue
    raise IdempotencyInFlight("another request with this Idempotency-Key is in flight")


async def _attempt(
    sessions: async_sessionmaker[AsyncSession],
    scope: str,
    key: str,
    print_: str,
    produce: Produce,
    cluster_id: str | None,
) -> StoredResponse:
    async with unit_of_work(sessions) as session:
        record = await session.get(IdempotencyRecord, (scope, key), populate_existing=True)
        if record is not None and record.expires_at <= utcnow():
            await session.delete(record)
            await session.flush()
            record = None
        if record is not None:
            if record.fingerprint != print_:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used with another request body or path"
                )
            return StoredResponse(record.status_code, record.body, record.headers, replayed=True)
        now = utcnow()
        record = IdempotencyRecord(
            scope=scope,
            key=key,
            fingerprint=print_,
            status_code=0,
            body={},
            headers={},
            created_at=now,
            expires_at=now + RETENTION,
            cluster_id=cluster_id,
        )
        session.add(record)
        try:
            await session.flush()
        except IntegrityError:
            raise _KeyTaken() from None
        status_code, body, headers = await produce(session)
        record.status_code, record.body, record.headers = status_code, body, headers
        await session.flush()
    return StoredResponse(status_code, body, headers, replayed=False)
