"""The embedded driver: no infrastructure, per-pair latency and failure injection.

Each side effect is a row in `driver_effects` keyed by the call's idempotency key, so a
call repeated after a crash finds its row and applies nothing again.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.actions.base import Driver, Output, StepContext, StepFailed
from app.actions.effects import DriverEffect
from app.db import unit_of_work


class SimulatedDriver(Driver):
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: dict[str, Any]):
        self._sessions = sessions
        self._delay_s = int(settings.get("step_delay_ms", 0)) / 1000
        self._fail: dict[str, int] = dict(settings.get("fail") or {})

    async def _effect(self, ctx: StepContext, action: str, output: Output) -> Output:
        if action == "apply" and ctx.attempt <= self._fail.get(ctx.step, 0):
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            raise StepFailed(
                f"simulated failure of {ctx.step} (attempt {ctx.attempt})",
                injected=True,
                attempt=ctx.attempt,
            )
        key = ctx.idempotency_key if action == "apply" else ctx.undo_key
        async with unit_of_work(self._sessions) as session:
            existing = await session.get(DriverEffect, key)
            if existing is None:
                session.add(
                    DriverEffect(
                        idempotency_key=key,
                        cluster_id=ctx.cluster_id,
                        operation_id=ctx.operation_id,
                        step=ctx.step,
                        action=action,
                        attempt=ctx.attempt,
                        output=output,
                    )
                )
            else:
                output = dict(existing.output)
        # The effect is recorded before the latency so that a worker killed during the
        # wait leaves an applied effect behind, as a real remote call would.
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        return output

    async def preflight(self, ctx: StepContext) -> Output:
        return await self._effect(
            ctx, "apply", {"target_region": ctx.target["region"], "target_healthy": True}
        )

    async def pause_schedulers(self, ctx: StepContext) -> Output:
        return await self._effect(ctx, "apply", {"paused_region": ctx.source["region"]})

    async def drain_replication(self, ctx: StepContext) -> Output:
        return await self._effect(ctx, "apply", {"replication_lag_ms": 0})

    async def promote_target(self, ctx: StepContext) -> Output:
        return await self._effect(ctx, "apply", {"promoted": ctx.target["name"]})

    async def switch_traffic(self, ctx: StepContext) -> Output:
        return await self._effect(ctx, "apply", {"endpoint_region": ctx.target["region"]})

    async def validate_deployments(self, ctx: StepContext) -> Output:
        names = [d["name"] for d in ctx.deployments]
        return await self._effect(ctx, "apply", {"healthy": names, "unhealthy": []})

    async def resume_schedulers(self, ctx: StepContext) -> Output:
        return await self._effect(ctx, "apply", {"resumed_region": ctx.target["region"]})

    async def undo_preflight(self, ctx: StepContext) -> Output:
        return await self._effect(ctx, "undo", {})

    async def undo_pause_schedulers(self, ctx: StepContext) -> Output:
        return await self._effect(ctx, "undo", {"resumed_region": ctx.source["region"]})

    async def undo_drain_replication(self, ctx: StepContext) -> Output:
        return await self._effect(ctx, "undo", {})
