"""Opaque keyset cursors: a page token is the sort key of the last item, base64url JSON."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import BadRequest

# The largest key an int cursor may carry: a 32-bit column's, unless the caller says more.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


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
        raise _refuse() from None
    if not isinstance(key, list) or len(key) != arity:
        raise _refuse()
    return key


def _refuse() -> BadRequest:
    return BadRequest("page_token is not a token this service issued")


def decode_time_key(token: str | None) -> tuple[datetime, str] | None:
    """A (created_at, id) cursor, checked: any other content is a 400, never a 500."""
    key = decode_token(token, 2)
    if key is None:
        return None
    if not isinstance(key[0], str) or not storable_text(key[1]):
        raise _refuse()
    try:
        created = datetime.fromisoformat(key[0])
        # The database compares in UTC: a time that overflows there is refused here.
        created = created.astimezone(UTC) if created.tzinfo is not None else created
    except (ValueError, OverflowError):
        raise _refuse() from None
    if created.tzinfo is None:
        raise _refuse()
    return created, key[1]


def storable_text(value: object) -> bool:
    """A str a database can store and compare: UTF-8 encodable (no lone surrogates), no NUL."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encode_time_key(created: datetime, item_id: str) -> str:
    return encode_token([created.isoformat(), item_id])


def decode_int_key(token: str | None, maximum: int = INT32_MAX) -> int | None:
    """An int cursor in 0..maximum, the range of the column it is compared with."""
    key = decode_token(token, 1)
    if key is None:
        return None
    if not isinstance(key[0], int) or isinstance(key[0], bool) or not 0 <= key[0] <= maximum:
        raise _refuse()
    return key[0]


async def page_by_creation(
    session: AsyncSession,
    query: Select[Any],
    model: Any,
    page_size: int,
    page_token: str | None,
    *,
    newest_first: bool = False,
) -> tuple[list[Any], str | None]:
    """One page of `query`'s rows of `model`, ordered by (created_at, id), and the token
    of the next page (None on the last)."""
    created_col, id_col = col(model.created_at), col(model.id)
    after = decode_time_key(page_token)
    if after is not None:
        created, last_id = after
        if newest_first:
            query = query.where(
                (created_col < created) | ((created_col == created) & (id_col < last_id))
            )
        else:
            query = query.where(
                (created_col > created) | ((created_col == created) & (id_col > last_id))
            )
    order = (created_col.desc(), id_col.desc()) if newest_first else (created_col, id_col)
    rows = list(await session.scalars(query.order_by(*order).limit(page_size + 1)))
    more = len(rows) > page_size
    rows = rows[:page_size]
    return rows, encode_time_key(rows[-1].created_at, rows[-1].id) if more else None
