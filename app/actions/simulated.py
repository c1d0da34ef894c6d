"""The simulated action: no infrastructure, per-pair latency and failure injection.

Settings (a pair's `driver`): `step_delay_ms`; `fail: {step: n}` — the first n attempts of
that step fail for good (each needs an operator retry); `fail_transient: {step: n}` — the
first n calls fail transiently and are retried inside the step; `fail_undo: {step: n}` —
the first n undo attempts fail; `gate: ["step", "step:undo"]` — the call answers "not
yet" (the worker slot is given back) until a row in `simulated_gates` opens it; `hold:
["step", "step:undo"]` — the call records its effect, then keeps its slot and waits inside
the call until that row opens it. A test holds a step exactly where it wants, without
racing a clock.

Each side effect is a row in `simulated_effects` keyed by the call's idempotency key, so a
call repeated after a crash finds its row and applies nothing again.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import StringConstraints
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel, col

from app.actions.base import Action, ActionFailed, NotYet, Output, StepCall
from app.columns import JSONType, UTCDateTime, utcnow
from app.common import Strict
from app.db import statement_by_statement, unit_of_work

# How often a gated call asks again.
GATE_POLL_S = 0.1


class SimulatedEffect(SQLModel, table=True):
    """One applied side effect per idempotency key (or one refused call, `transient`)."""

    __tablename__ = "simulated_effects"

    idempotency_key: str = Field(primary_key=True, max_length=160)
    cluster_id: str = Field(max_length=40, index=True)
    operation_id: str = Field(max_length=40, index=True)
    step: str = Field(max_length=40)
    # apply | undo | transient
    action: str = Field(max_length=12)
    attempt: int
    output: dict[str, Any] = Field(sa_type=JSONType)
    applied_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


_EFFECTS = SimulatedEffect.__table__  # type: ignore[attr-defined]


class SimulatedGate(SQLModel, table=True):
    """An opened gate: `name` is a step, or `step:undo`."""

    __tablename__ = "simulated_gates"

    cluster_id: str = Field(primary_key=True, max_length=40)
    name: str = Field(primary_key=True, max_length=60)
    opened_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


def _outputs(call: StepCall) -> Output:
    return {
        "preflight": {"target_region": call.target["region"], "target_healthy": True},
        "pause_schedulers": {"paused_region": call.source["region"]},
        "drain_replication": {"replication_lag_ms": 0},
        "promote_target": {"promoted": call.target["name"]},
        "switch_traffic": {"endpoint_region": call.target["region"]},
        "validate_deployments": {
            "healthy": [d["name"] for d in call.deployments],
            "unhealthy": [],
        },
        "resume_schedulers": {"resumed_region": call.target["region"]},
    }.get(call.step, {"step": call.step})


Count = Annotated[int, Field(ge=0, le=1000)]
StepKey = Annotated[str, StringConstraints(min_length=1, max_length=60)]


class SimulatedSettings(Strict):
    """Its settings in a plan's step (a pair's `driver` is checked by its own schema)."""

    kind: Literal["simulated"]
    step_delay_ms: int = Field(default=0, ge=0, le=600_000)
    fail: dict[StepKey, Count] = Field(default_factory=dict)
    fail_transient: dict[StepKey, Count] = Field(default_factory=dict)
    fail_undo: dict[StepKey, Count] = Field(default_factory=dict)
    gate: list[StepKey] = Field(default_factory=list, max_length=100)
    hold: list[StepKey] = Field(default_factory=list, max_length=100)


class SimulatedAction(Action):
    kind: ClassVar[str] = "simulated"
    Settings = SimulatedSettings

    @property
    def _delay_s(self) -> float:
        return int(self.settings.get("step_delay_ms", 0)) / 1000

    def _count(self, setting: str, step: str) -> int:
        return int((self.settings.get(setting) or {}).get(step, 0))

    async def do(self, call: StepCall) -> Output | NotYet:
        if await self._gated(call, call.step):
            return NotYet(utcnow() + timedelta(seconds=GATE_POLL_S), "gate closed")
        if call.attempt <= self._count("fail", call.step):
            await asyncio.sleep(self._delay_s)
            raise ActionFailed(
                f"simulated failure of {call.step} (attempt {call.attempt})",
                injected=True,
                attempt=call.attempt,
            )
        await self._maybe_transient(call)
        return await self._effect(call, "apply", _outputs(call), call.step)

    @classmethod
    def rehearses_with(cls, settings: dict[str, Any]) -> bool:
        return True

    async def rehearse(self, call: StepCall) -> tuple[bool, str, int] | None:
        """A drill's rehearsal: the step's delay and its injected failure (`fail`), with
        no effect applied."""
        await asyncio.sleep(self._delay_s)
        ms = int(self._delay_s * 1000)
        if self._count("fail", call.step) > 0:
            return False, f"simulated failure of {call.step}", ms
        return True, "simulated", ms

    async def undo(self, call: StepCall) -> Output | NotYet:
        if await self._gated(call, f"{call.step}:undo"):
            return NotYet(utcnow() + timedelta(seconds=GATE_POLL_S), "gate closed")
        if call.attempt <= self._count("fail_undo", call.step):
            await asyncio.sleep(self._delay_s)
            raise ActionFailed(
                f"simulated failure of the undo of {call.step} (attempt {call.attempt})",
                injected=True,
                attempt=call.attempt,
            )
        output = (
            {"resumed_region": call.source["region"]} if call.step == "pause_schedulers" else {}
        )
        return await self._effect(call, "undo", output, f"{call.step}:undo")

    async def _closed(self, call: StepCall, name: str) -> bool:
        async with unit_of_work(self.deps.sessions) as session:
            opened = await session.get(SimulatedGate, (call.cluster_id, name))
        return opened is None

    async def _gated(self, call: StepCall, name: str) -> bool:
        return name in (self.settings.get("gate") or ()) and await self._closed(call, name)

    async def _maybe_transient(self, call: StepCall) -> None:
        allowed = self._count("fail_transient", call.step)
        if not allowed:
            return
        async with unit_of_work(self.deps.sessions) as session:
            failed = await session.scalar(
                select(func.count()).where(
                    col(SimulatedEffect.operation_id) == call.operation_id,
                    col(SimulatedEffect.step) == call.step,
                    col(SimulatedEffect.action) == "transient",
                )
            )
            if int(failed or 0) >= allowed:
                return
            session.add(
                SimulatedEffect(
                    idempotency_key=f"{call.idempotency_key}:transient:{int(failed or 0) + 1}",
                    cluster_id=call.cluster_id,
                    operation_id=call.operation_id,
                    step=call.step,
                    action="transient",
                    attempt=call.attempt,
                    output={"key": call.idempotency_key},
                )
            )
        raise ActionFailed(f"simulated transient failure of {call.step}", transient=True)

    async def _effect(self, call: StepCall, action: str, output: Output, name: str) -> Output:
        row = {
            "idempotency_key": call.idempotency_key,
            "cluster_id": call.cluster_id,
            "operation_id": call.operation_id,
            "step": call.step,
            "action": action,
            "attempt": call.attempt,
            "output": output,
            "applied_at": utcnow(),
        }
        async with statement_by_statement(self.deps.sessions) as session:
            # One round trip when the effect is new; a call repeated after a crash finds
            # the row already there and answers with what the first call applied.
            dialect = session.get_bind().dialect.name
            insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
            applied = await session.scalar(
                insert_(_EFFECTS)
                .values(row)
                .on_conflict_do_nothing(index_elements=["idempotency_key"])
                .returning(_EFFECTS.c.idempotency_key)
            )
            if applied is None:
                output = dict(
                    await session.scalar(
                        select(_EFFECTS.c.output).where(
                            _EFFECTS.c.idempotency_key == call.idempotency_key
                        )
                    )
                    or {}
                )
        # The effect is recorded before the latency (and the hold) so that a worker killed
        # during the wait leaves an applied effect behind, as a real remote call would.
        if name in (self.settings.get("hold") or ()):
            while await self._closed(call, name):  # noqa: ASYNC110  (the gate is a row)
                await asyncio.sleep(GATE_POLL_S)
        await asyncio.sleep(self._delay_s)
        return output


async def forget_pair(session: AsyncSession, cluster_id: str) -> None:
    """A deleted pair's simulated effects and gates go with it."""
    await session.execute(
        delete(SimulatedEffect).where(col(SimulatedEffect.cluster_id) == cluster_id)
    )
    await session.execute(delete(SimulatedGate).where(col(SimulatedGate.cluster_id) == cluster_id))
