"""Per-token rate limit on mutating requests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from app.auth import Principal


async def check_rate(request: Request, principal: Principal) -> None:
    from app import ratelimit
    from app.errors import TooManyRequests

    context = request.app.state.context
    limit = principal.rate_limit_per_minute or context.settings.rate_limit_per_minute
    retry_after = await ratelimit.hit(context.redis, f"tandem:rate:{principal.token_id}", limit, 60)
    if retry_after is not None:
        raise TooManyRequests(
            f"more than {limit} changes a minute with this token; retry later",
            retry_after=retry_after,
        )
