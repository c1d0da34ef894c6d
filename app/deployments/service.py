"""Deployments validated in the target region after a switch (DESIGN.md section 11).

Every deployment with a health check is checked at once, one GET each (5 s at most, no
waiting for it to get better); each result is recorded. A critical one unhealthy fails
the step; another one unhealthy is a warning on the operation.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

import httpx
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app import outbound
from app.actions import templating
from app.actions.base import ActionDeps, ActionFailed, NotYet, Output, StepCall
from app.actions.check import contains
from app.actions.http import HttpAction, excerpt
from app.columns import utcnow
from app.db import unit_of_work
from app.deployments.models import DeploymentResult

GET_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Health:
    name: str
    critical: bool
    healthy: bool
    detail: str
    failed_tasks: list[dict[str, Any]] | None = None


def checked(deployments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The deployments that have a health check."""
    return [d for d in deployments if d.get("health") or d.get("kind") == "airflow"]


async def _http_health(
    deps: ActionDeps, call: StepCall, deployment: dict[str, Any], region: str
) -> Health:
    name, critical = str(deployment["name"]), bool(deployment.get("critical"))
    health = deployment["health"]
    url = health["url"]
    if isinstance(url, dict):
        if region not in url:
            return Health(name, critical, False, f"no health URL for region {region}")
        url = url[region]

    async def secret(secret_name: str) -> str:
        return await deps.secrets(call.cluster_id, secret_name)

    values = {**call.placeholders(), "region": region, "name": name}
    url = str(await templating.render(url, values, secret))
    try:
        response = await deps.http.get(
            url,
            headers={"user-agent": "Tandem-Deployments/1"},
            timeout=httpx.Timeout(GET_TIMEOUT_S),
            extensions=outbound.reach(deps.networks),
        )
    except outbound.Refused as exc:
        return Health(name, critical, False, f"{url} is not reachable from here: {exc}")
    except (httpx.HTTPError, ValueError) as exc:
        return Health(name, critical, False, f"{url}: {type(exc).__name__} {exc}".strip())
    if not response.is_success:
        detail = f"{url}: HTTP {response.status_code} {excerpt(response.text)}"
        return Health(name, critical, False, detail)
    expect = health.get("expect")
    if expect:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not contains(body, expect):
            return Health(name, critical, False, f"{url}: the body does not contain {expect}")
    return Health(name, critical, True, f"{url}: HTTP {response.status_code}")


async def check_one(
    deps: ActionDeps, call: StepCall, deployment: dict[str, Any], region: str
) -> Health:
    if deployment.get("kind") == "airflow":
        return Health(
            str(deployment["name"]),
            bool(deployment.get("critical")),
            False,
            "airflow deployments are not validated yet",
        )
    return await _http_health(deps, call, deployment, region)


async def validate(
    deps: ActionDeps, call: StepCall, deployments: list[dict[str, Any]]
) -> tuple[str, list[Health]]:
    """Check every deployment with a health check in the call's target region, at once,
    and record the results. (target region, results)"""
    region = str(call.target.get("region"))
    results = list(
        await asyncio.gather(*(check_one(deps, call, d, region) for d in checked(deployments)))
    )
    await record(deps, call, region, results)
    return region, results


async def record(deps: ActionDeps, call: StepCall, region: str, results: list[Health]) -> None:
    now = utcnow()
    async with unit_of_work(deps.sessions) as session:
        for result in results:
            row = await session.get(
                DeploymentResult, (call.cluster_id, result.name), populate_existing=True
            )
            values: dict[str, Any] = {
                "region": region,
                "healthy": result.healthy,
                "critical": result.critical,
                "detail": result.detail[:2000],
                "operation_id": call.operation_id,
                "failed_tasks": result.failed_tasks,
                "checked_at": now,
            }
            if row is None:
                session.add(
                    DeploymentResult(cluster_id=call.cluster_id, name=result.name, **values)
                )
            else:
                for key, value in values.items():
                    setattr(row, key, value)


async def results_of(session: AsyncSession, cluster_id: str) -> dict[str, DeploymentResult]:
    rows = await session.scalars(
        select(DeploymentResult).where(col(DeploymentResult.cluster_id) == cluster_id)
    )
    return {row.name: row for row in rows}


async def forget_pair(session: AsyncSession, cluster_id: str) -> None:
    await session.execute(
        delete(DeploymentResult).where(col(DeploymentResult.cluster_id) == cluster_id)
    )


async def retry(deps: ActionDeps, call: StepCall, deployments: list[dict[str, Any]]) -> Output:
    """Each deployment's retry action, at once, each call with a key of its own
    (`op:step:attempt:name`); a deployment without one is only validated again."""
    async def one(deployment: dict[str, Any]) -> dict[str, Any]:
        name = str(deployment["name"])
        settings = deployment.get("retry")
        if not settings:
            return {"name": name, "retried": False}
        key = f"{call.idempotency_key}:{name}"
        item = replace(call, idempotency_key=key, item=None)
        outcome = await HttpAction(settings, deps).do(item)  # a retry is an http action
        if isinstance(outcome, NotYet):
            raise ActionFailed(f"the retry of {name} is still running", transient=True)
        return {"name": name, "retried": True, "output": outcome}

    results = await asyncio.gather(*(one(d) for d in deployments), return_exceptions=True)
    failed = [
        f"{d['name']}: {r.message if isinstance(r, ActionFailed) else r}"
        for d, r in zip(deployments, results, strict=True)
        if isinstance(r, BaseException)
    ]
    if failed:
        transient = all(
            isinstance(r, ActionFailed) and r.transient
            for r in results
            if isinstance(r, BaseException)
        )
        raise ActionFailed("retry failed: " + "; ".join(failed), transient=transient)
    return {"retried": [r for r in results if isinstance(r, dict)]}
