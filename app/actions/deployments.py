"""The `deployments` action: validate the pair's deployments in the target region
(app.deployments.service). It changes nothing, so it needs no undo. A critical deployment
unhealthy fails the step, naming it; the others become warnings on the operation."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from app.actions.base import Action, ActionFailed, NotYet, Output, StepCall
from app.common import Strict
from app.deployments import service


class DeploymentsSettings(Strict):
    kind: Literal["deployments"]
    # validate: every deployment with a health check (validate_deployments); retry: the
    # named ones' retry actions; revalidate: the named ones' health again.
    # pause / resume / unpause: the Airflow deployments' DAGs in pause_schedulers (source),
    # resume_schedulers (target) and pause_schedulers' undo (source again).
    do: Literal["validate", "retry", "revalidate", "pause", "resume", "unpause"] = "validate"
    names: list[str] | None = None


class DeploymentsAction(Action):
    kind: ClassVar[str] = "deployments"
    Settings = DeploymentsSettings
    changes_nothing: ClassVar[bool] = True

    @classmethod
    def changes_nothing_with(cls, settings: dict[str, Any]) -> bool:
        # Checking health changes nothing; pausing DAGs or retrying does.
        return settings.get("do", "validate") in ("validate", "revalidate")

    async def undo(self, call: StepCall) -> Output | NotYet:
        return await self.do(call)

    async def do(self, call: StepCall) -> Output | NotYet:
        settings = DeploymentsSettings.model_validate(self.settings)
        named = [d for d in call.deployments if d.get("name") in (settings.names or [])]
        if settings.do == "retry":
            return await service.retry(self.deps, call, named)
        if settings.do in ("pause", "resume", "unpause"):
            return await service.pause_or_resume(self.deps, call, settings.do)
        deployments = named if settings.do == "revalidate" else call.deployments
        region, results = await service.validate(self.deps, call, deployments)
        failing = [r for r in results if not r.healthy]
        critical = [r for r in failing if r.critical]
        if critical:
            names = "; ".join(f"{r.name} ({r.detail})" for r in critical)
            raise ActionFailed(
                f"critical deployments unhealthy in {region}: {names}",
                deployments=[r.name for r in critical],
            )
        output: dict[str, Any] = {
            "region": region,
            "deployments": [{"name": r.name, "healthy": r.healthy} for r in results],
        }
        if failing:
            output["warnings"] = [
                f"deployment {r.name} is unhealthy in {region}: {r.detail}" for r in failing
            ]
        tasks = [r for r in results if r.failed_tasks]
        for r in tasks:
            output.setdefault("warnings", []).append(
                f"deployment {r.name}: {len(r.failed_tasks or [])} task instance(s) failed "
                f"since the operation began (POST .../deployments/retry clears them)"
            )
        return output


forget_pair = service.forget_pair
