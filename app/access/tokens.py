"""Organizations and API tokens: who is calling, create, list, revoke, bootstrap."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.access.auth import Principal, Role, hash_token, new_token
from app.access.models import ApiToken, Organization
from app.access.schemas import Me, TokenCreate, TokenCreated, TokenOut
from app.columns import new_id, utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.pagination import page_by_creation


async def me(session: AsyncSession, principal: Principal) -> Me:
    org = await session.get(Organization, principal.org_id)
    if org is None:
        raise NotFound("the token's organization no longer exists")
    return Me(
        org_id=org.id,
        org_name=org.name,
        token_id=principal.token_id,
        token_name=principal.token_name,
        role=principal.role,
    )


def render(token: ApiToken) -> TokenOut:
    return TokenOut(
        id=token.id,
        name=token.name,
        role=Role(token.role),
        prefix=token.prefix,
        rate_limit_per_minute=token.rate_limit_per_minute,
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
    )


async def issue(
    session: AsyncSession,
    org_id: str,
    name: str,
    role: Role,
    *,
    expires_at: datetime | None = None,
    rate_limit_per_minute: int | None = None,
    created_by: str | None = None,
    token: str | None = None,
) -> tuple[ApiToken, str]:
    """A new token of `org_id`; returns the row and the token (shown once)."""
    if expires_at is not None and expires_at.tzinfo is None:
        raise Unprocessable("expires_at must carry a timezone", field="expires_at")
    secret = token or new_token()
    row = ApiToken(
        id=new_id("tok"),
        org_id=org_id,
        name=name,
        role=role.value,
        token_hash=hash_token(secret),
        prefix=secret[:8],
        rate_limit_per_minute=rate_limit_per_minute,
        created_by=created_by,
        expires_at=expires_at,
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("that token is already registered") from None
    return row, secret


async def create(
    session: AsyncSession, org_id: str, body: TokenCreate, created_by: str
) -> TokenCreated:
    row, secret = await issue(
        session,
        org_id,
        body.name,
        body.role,
        expires_at=body.expires_at,
        rate_limit_per_minute=body.rate_limit_per_minute,
        created_by=created_by,
    )
    return TokenCreated(**render(row).model_dump(), token=secret)


async def list_tokens(
    session: AsyncSession, org_id: str, page_size: int, page_token: str | None
) -> tuple[list[TokenOut], str | None]:
    query = select(ApiToken).where(col(ApiToken.org_id) == org_id)
    rows, token = await page_by_creation(session, query, ApiToken, page_size, page_token)
    return [render(t) for t in rows], token


async def revoke(session: AsyncSession, org_id: str, token_id: str) -> None:
    row = await session.get(ApiToken, token_id)
    if row is None or row.org_id != org_id:
        raise NotFound(f"token {token_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()


async def create_org(session: AsyncSession, name: str) -> tuple[Organization, str]:
    """A new organization and its first admin token."""
    org = Organization(id=new_id("org"), name=name)
    session.add(org)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"an organization named {name!r} already exists") from None
    _, secret = await issue(session, org.id, "first-admin", Role.ADMIN)
    return org, secret


async def bootstrap(session: AsyncSession, token: str | None) -> tuple[Organization, str] | None:
    """On a database without tokens: an organization (the oldest, or a new "default")
    and an admin token, `token` when given. None when tokens exist already."""
    if await session.scalar(select(func.count()).select_from(ApiToken)):
        if token is not None:
            # TANDEM_BOOTSTRAP_TOKEN set on a database that has tokens: make sure it works.
            existing = await session.scalar(
                select(ApiToken).where(col(ApiToken.token_hash) == hash_token(token))
            )
            if existing is None:
                org = await session.scalar(
                    select(Organization).order_by(col(Organization.created_at))
                )
                assert org is not None
                await issue(session, org.id, "bootstrap", Role.ADMIN, token=token)
                return org, token
        return None
    org = await session.scalar(select(Organization).order_by(col(Organization.created_at)))
    if org is None:
        org = Organization(id=new_id("org"), name="default")
        session.add(org)
        await session.flush()
    _, secret = await issue(session, org.id, "bootstrap", Role.ADMIN, token=token)
    return org, secret
