"""Action kinds by name: the one place that knows them all."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.actions import progress, simulated
from app.actions.base import Action, ActionDeps, ActionFailed

KINDS: dict[str, type[Action]] = {
    simulated.SimulatedAction.kind: simulated.SimulatedAction,
}


def build(settings: dict[str, Any], deps: ActionDeps) -> Action:
    kind = settings.get("kind", "simulated")
    try:
        return KINDS[kind](settings, deps)
    except KeyError:
        raise ActionFailed(f"unknown action kind {kind!r}") from None


async def forget_pair(session: AsyncSession, cluster_id: str) -> None:
    """Remove what the actions kept about a pair that is being deleted."""
    await simulated.forget_pair(session, cluster_id)
    await progress.forget_pair(session, cluster_id)


async def no_secrets(cluster_id: str, name: str) -> str:
    """The secret resolver until secrets can be stored: every secret is missing."""
    raise ActionFailed(f"secret {name!r} is not set on pair {cluster_id}")
