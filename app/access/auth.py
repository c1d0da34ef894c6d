"""Who is calling: bearer tokens, roles, and the dependencies that check them.

Roles are ordered: viewer (read everything of its organization) < operator (also fail
over, fail back, cancel, retry) < admin (also pairs, webhooks, tokens).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import RowMapping, select

from app.access import ratelimit
from app.access.models import ApiToken, UiSession
from app.access.sessions import SESSION_COOKIE, session_digest
from app.columns import utcnow
from app.db import unit_of_work
from app.errors import Forbidden, Unauthorized

TOKEN_PREFIX = "tdm_"


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Principal:
    org_id: str
    token_id: str
    token_name: str
    role: Role
    rate_limit_per_minute: int | None = None

    @property
    def actor(self) -> str:
        return f"token:{self.token_name} ({self.token_id})"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer tdm_…`")


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("send an API token: Authorization: Bearer tdm_…")
    token = credentials.credentials
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise Unauthorized("the token is not valid")
    digest = hash_token(token)
    # A short transaction of its own: the request's session may be long (?wait=60).
    tokens = ApiToken.__table__  # type: ignore[attr-defined]
    async with unit_of_work(request.app.state.context.sessions) as session:
        row = (
            (await session.execute(select(tokens).where(tokens.c.token_hash == digest)))
            .mappings()
            .first()
        )
    if row is not None and not hmac.compare_digest(row["token_hash"], digest):
        row = None
    return _principal(request, row)


def _principal(request: Request, row: RowMapping | None) -> Principal:
    """The caller of a token row (looked up by its hash), or 401."""
    now = utcnow()
    if (
        row is None
        or row["revoked_at"] is not None
        or (row["expires_at"] is not None and row["expires_at"] <= now)
    ):
        raise Unauthorized("the token is not valid, has expired or was revoked")
    principal = Principal(
        org_id=row["org_id"],
        token_id=row["id"],
        token_name=row["name"],
        role=Role(row["role"]),
        rate_limit_per_minute=row["rate_limit_per_minute"],
    )
    request.state.principal = principal
    return principal


async def authenticate_or_session(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """A bearer token, or else the web page's session cookie (a browser's EventSource cannot
    send headers). Only for routes that read: the cookie alone never changes anything."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if credentials is not None or not cookie:
        return await authenticate(request, credentials)
    tokens = ApiToken.__table__  # type: ignore[attr-defined]
    ui_sessions = UiSession.__table__  # type: ignore[attr-defined]
    query = (
        select(tokens)
        .join(ui_sessions, ui_sessions.c.token_id == tokens.c.id)
        .where(ui_sessions.c.id == session_digest(cookie), ui_sessions.c.expires_at > utcnow())
    )
    async with unit_of_work(request.app.state.context.sessions) as session:
        row = (await session.execute(query)).mappings().first()
    if row is None:
        raise Unauthorized("the session has ended: sign in again")
    return _principal(request, row)


MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def require(role: Role, *, session_cookie: bool = False) -> Callable[..., Awaitable[Principal]]:
    who = authenticate_or_session if session_cookie else authenticate

    # A default, not Annotated: the annotations are strings and `who` is a local name.
    async def check(request: Request, principal: Principal = Depends(who)) -> Principal:
        if principal.role.rank < role.rank:
            raise Forbidden(
                f"this needs the {role.value} role; the token has {principal.role.value}",
                required_role=role.value,
            )
        if request.method in MUTATING:
            context = request.app.state.context
            settings = context.settings
            per_minute = principal.rate_limit_per_minute or settings.rate_limit_per_minute
            await ratelimit.check_token(
                context.redis, settings.redis_prefix, principal.token_id, per_minute
            )
        return principal

    check.required_role = role  # type: ignore[attr-defined]  # read by the OpenAPI document
    return check


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
# The event stream: a bearer token or the web page's session cookie.
StreamViewer = Annotated[Principal, Depends(require(Role.VIEWER, session_cookie=True))]
