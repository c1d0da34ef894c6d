"""Action kinds by name: the one place that knows them all."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.actions import (
    approval,
    check,
    deployments,
    http,
    postgres,
    progress,
    simulated,
    templating,
)
from app.actions.base import Action, ActionDeps, ActionFailed

KINDS: dict[str, type[Action]] = {
    kind.kind: kind
    for kind in (
        simulated.SimulatedAction,
        http.HttpAction,
        check.CheckAction,
        approval.ApprovalAction,
        deployments.DeploymentsAction,
        postgres.PostgresAction,
    )
}


def settings_problems(settings: object) -> list[str]:
    """What is wrong with one action's settings in a plan (empty: nothing)."""
    if not isinstance(settings, dict):
        return ['an action is an object {"kind": ..., ...}']
    kind = settings.get("kind")
    action = KINDS.get(kind) if isinstance(kind, str) else None
    if action is None:
        return [f"unknown action kind {kind!r} (known: {', '.join(sorted(KINDS))})"]
    found = templating.problems({k: v for k, v in settings.items() if k != "kind"})
    if found:
        return found
    try:
        action.Settings.model_validate(settings)
    except ValidationError as exc:
        return [
            f"{'.'.join(str(p) for p in err['loc']) or kind}: {err['msg']}" for err in exc.errors()
        ]
    return []


def changes_nothing(settings: dict[str, Any]) -> bool:
    action = KINDS.get(str(settings.get("kind")))
    return action is not None and action.changes_nothing_with(settings)


def rehearses(settings: dict[str, Any]) -> bool:
    """Whether a drill can rehearse this action without a `drill` action (its probe)."""
    action = KINDS.get(str(settings.get("kind")))
    return action is not None and action.rehearses_with(settings)


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
    await deployments.forget_pair(session, cluster_id)
    await session.execute(
        delete(approval.Decision).where(col(approval.Decision.cluster_id) == cluster_id)
    )
