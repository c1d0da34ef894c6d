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
from app.actions import progress, templating
from app.actions.base import ActionDeps, ActionFailed, NotYet, Output, StepCall
from app.actions.check import verdict
from app.actions.http import HttpAction
from app.columns import utcnow
from app.db import unit_of_work
from app.deployments.airflow import AirflowClient, AirflowError
from app.deployments.models import DeploymentResult

GET_TIMEOUT_S = 5.0
# Health checks at once (httpcore's pool bookkeeping grows with the square of its open
# connections: 200 GETs took ~1.1 s all at once, ~0.26 s 12 at a time, here).
CONCURRENCY = 12


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
    healthy, detail = verdict(url, response, health.get("expect"))
    return Health(name, critical, healthy, detail)


async def airflow_client(
    deps: ActionDeps, call: StepCall, deployment: dict[str, Any], region: str
) -> AirflowClient | None:
    """The deployment's Airflow in `region` (None: it has none there)."""
    url = (deployment.get("api_url") or {}).get(region)
    if url is None:
        return None

    async def secret(secret_name: str) -> str:
        return await deps.secrets(call.cluster_id, secret_name)

    values = {**call.placeholders(), "region": region, "name": str(deployment["name"])}
    return AirflowClient(
        deps.http,
        str(await templating.render(url, values, secret)),
        username=str(deployment["username"]),
        password=str(await templating.render(deployment["password"], values, secret)),
        extensions=outbound.reach(deps.networks),
        timeout=GET_TIMEOUT_S,
    )


async def _airflow_health(
    deps: ActionDeps, call: StepCall, deployment: dict[str, Any], region: str
) -> Health:
    """Healthy is Airflow's own health; the task instances that failed or went up for
    retry since the operation began are listed, and make it eligible for retry."""
    name, critical = str(deployment["name"]), bool(deployment.get("critical"))
    try:
        client = await airflow_client(deps, call, deployment, region)
    except ActionFailed as exc:  # a secret that is not set
        return Health(name, critical, False, exc.message)
    if client is None:
        return Health(name, critical, False, f"no api_url for region {region}")
    healthy, detail = await client.health()
    failed: list[dict[str, Any]] | None = None
    since = call.operation_created_at or utcnow()
    try:
        failed = [dict(ti) for ti in await client.failed_task_instances(since)]
    except AirflowError as exc:
        detail = f"{detail}; failed task instances unknown: {exc.message}"
    if failed:
        detail = f"{detail}; {len(failed)} task instance(s) failed since the operation began"
    return Health(name, critical, healthy, detail, failed or None)


async def check_one(
    deps: ActionDeps, call: StepCall, deployment: dict[str, Any], region: str
) -> Health:
    if deployment.get("kind") == "airflow":
        return await _airflow_health(deps, call, deployment, region)
    return await _http_health(deps, call, deployment, region)


async def validate(
    deps: ActionDeps, call: StepCall, deployments: list[dict[str, Any]]
) -> tuple[str, list[Health]]:
    """Check every deployment with a health check in the call's target region, at once,
    and record the results. (target region, results)"""
    region = str(call.target.get("region"))
    limit = asyncio.Semaphore(CONCURRENCY)

    async def bounded(deployment: dict[str, Any]) -> Health:
        async with limit:
            return await check_one(deps, call, deployment, region)

    results = list(await asyncio.gather(*(bounded(d) for d in checked(deployments))))
    await record(deps, call, region, results)
    return region, results


async def record(deps: ActionDeps, call: StepCall, region: str, results: list[Health]) -> None:
    now = utcnow()
    async with unit_of_work(deps.sessions) as session:
        # One read of the pair's rows and one flush, not a round trip per deployment.
        rows = await results_of(session, call.cluster_id)
        for result in results:
            row = rows.get(result.name)
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
    async with unit_of_work(deps.sessions) as session:
        last = await results_of(session, call.cluster_id)
    region = str(call.target.get("region"))

    async def one(deployment: dict[str, Any]) -> dict[str, Any]:
        name = str(deployment["name"])
        if deployment.get("kind") == "airflow":
            return await _clear(deps, call, deployment, region, last.get(name))
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


async def _clear(
    deps: ActionDeps,
    call: StepCall,
    deployment: dict[str, Any],
    region: str,
    last: DeploymentResult | None,
) -> dict[str, Any]:
    """An Airflow deployment's retry: clear exactly the task instances its last
    validation listed, so Airflow runs them again."""
    name = str(deployment["name"])
    tasks = list((last.failed_tasks if last is not None else None) or [])
    client = await airflow_client(deps, call, deployment, region)
    if client is None:
        raise ActionFailed(f"{name} has no api_url for region {region}")
    try:
        cleared = await client.clear(tasks, note=f"retried by Tandem ({call.operation_id})")  # type: ignore[arg-type]
    except AirflowError as exc:
        raise ActionFailed(f"{name}: {exc.message}", transient=exc.transient) from None
    return {"name": name, "retried": True, "cleared": [dict(t) for t in cleared]}


async def pause_or_resume(deps: ActionDeps, call: StepCall, do: str) -> Output:
    """Airflow deployments in pause_schedulers (pause every unpaused DAG on the source,
    remembering which), resume_schedulers (unpause those on the target) and the pause's
    undo (unpause them on the source). A DAG a person had paused stays paused."""
    region = str((call.source if do in ("pause", "unpause") else call.target).get("region"))
    done: dict[str, list[str]] = {}
    for deployment in call.deployments:
        if deployment.get("kind") != "airflow":
            continue
        name = str(deployment["name"])
        key = f"{call.operation_id}:airflow-paused:{name}"
        client = await airflow_client(deps, call, deployment, region)
        if client is None:
            continue
        try:
            if do == "pause":
                remembered = await progress.recall(deps.sessions, key)
                paused: list[str] = []
                try:
                    paused = await client.pause_all()
                except AirflowError as exc:
                    paused = exc.paused
                    raise
                finally:
                    if paused or remembered is None:
                        before = list((remembered or {}).get("dags", []))
                        await progress.remember(
                            deps.sessions,
                            key,
                            call.cluster_id,
                            {"dags": sorted(set(before) | set(paused))},
                        )
                done[name] = paused
            else:
                dags = list((await progress.recall(deps.sessions, key) or {}).get("dags", []))
                done[name] = await client.resume(dags)
        except AirflowError as exc:
            raise ActionFailed(f"{name}: {exc.message}", transient=exc.transient) from None
    verb = {"pause": "paused", "resume": "resumed", "unpause": "resumed"}[do]
    return {verb: done, "region": region}
