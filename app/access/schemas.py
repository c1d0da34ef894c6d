from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, StringConstraints
from typing_extensions import TypeAliasType

from app.access.auth import Role
from app.access.models import AuditOutcome
from app.common import JSON_NUMBER, Strict

TokenName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
]


def _rfc3339_text(value: Any) -> Any:
    # Field(strict=True) would refuse every JSON string: FastAPI validates the parsed body in
    # Python mode, where a strict datetime must already be a datetime. Refuse numbers (Unix
    # times) here instead; AwareDatetime then refuses a time without an offset.
    if not isinstance(value, str | datetime):
        raise ValueError("expected an RFC 3339 time with its offset")
    return value


def _future_utc(value: datetime) -> datetime:
    # Stored and compared in UTC: a time with no UTC equivalent (year 9999 at -23:59) is
    # refused here rather than by the database.
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None
    if utc <= datetime.now(UTC):
        raise ValueError("the time has already passed")
    return utc


class TokenCreate(Strict):
    name: TokenName
    role: Role
    expires_at: (
        Annotated[AwareDatetime, BeforeValidator(_rfc3339_text), AfterValidator(_future_utc)] | None
    ) = Field(
        default=None, description="An RFC 3339 time in the future, with its offset; none: never"
    )
    rate_limit_per_minute: Annotated[int, Field(ge=1, le=100_000), JSON_NUMBER] | None = Field(
        default=None, description="Mutating requests a minute (default: server's)"
    )


class TokenOut(Strict):
    id: str
    name: str
    role: Role
    prefix: str = Field(description="The token's first characters, to recognise it")
    rate_limit_per_minute: int | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself: shown this once, stored only as a hash")


class Me(Strict):
    org_id: str
    org_name: str
    token_id: str
    token_name: str
    role: Role


# What the request did (its operation's id, a replay, ...).
AuditDetail = TypeAliasType("AuditDetail", dict[str, Any])


class AuditOut(Strict):
    id: str
    token_id: str | None
    token_name: str | None
    action: str
    method: str
    path: str
    target: str | None
    request_id: str | None
    outcome: AuditOutcome
    status_code: int
    detail: AuditDetail | None
    created_at: datetime
