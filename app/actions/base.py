"""The action interface: what carries out one step of a plan.

An action is built from its settings (the plan's `{"kind": ..., ...}` object) and the
dependencies every action may use. The executor calls `do` (or `undo`, on rollback) with a
`StepCall` that carries the step's deadline and the call's idempotency key
(`op_id:step:attempt`, `op_id:step:undo:n`, plus `:i` for the i-th action of a parallel
step). A call repeated with the same key, after a worker died mid-step, must not apply
its side effect a second time: a real action passes the key to the system it calls.

An action answers in one of three ways:
- it returns the step's output (a small JSON object): done;
- it returns `NotYet(at)`: nothing failed, ask again at `at` — the worker records it,
  gives its slot back and runs the operation again then, so a waiting step holds no slot;
- it raises `ActionFailed`: `transient=True` is retried with backoff inside the step's
  deadline, with the same key; otherwise the step fails.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.outbound import Networks

Output = dict[str, Any]
# (pair id, secret name) -> its value; raises ActionFailed when it is not set.
SecretResolver = Callable[[str, str], Awaitable[str]]


@dataclass(frozen=True)
class NotYet:
    """Not done and not failed: call again at `at`."""

    at: datetime
    detail: str | None = None
    # Waiting for a person's decision (the step shows `waiting`), not for a system.
    waiting: bool = False


class ActionFailed(Exception):
    """The action did not do what it should; the message is shown to the operator."""

    def __init__(self, message: str, *, transient: bool = False, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.details = details


@dataclass(frozen=True)
class ActionDeps:
    """What every action may use: built once per worker, shared by all calls."""

    sessions: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    secrets: SecretResolver
    # What outbound calls of actions may reach (TANDEM_ACTION_NETWORKS).
    networks: Networks = Networks.PRIVATE


@dataclass(frozen=True)
class StepCall:
    cluster_id: str
    cluster_name: str
    operation_id: str
    kind: str
    mode: str
    step: str
    # "do" or "undo"
    phase: str
    # The step's attempt for "do"; the undo attempt for "undo".
    attempt: int
    idempotency_key: str
    deadline_at: datetime
    source: dict[str, Any]
    target: dict[str, Any]
    deployments: list[dict[str, Any]]
    # The switch the call works toward, `failover` or `failback`, when `kind` is not one
    # (a drill rehearses the one its pair allows next); None: `kind` says it.
    direction: str | None = None
    # The pair's runbook secrets: the current one, and the previous one while it overlaps.
    signing_secrets: tuple[str, ...] = ()
    # When the operation was created: the window in which deployments' failures count.
    operation_created_at: datetime | None = None
    # Its index in a `parallel` step: the step calls every item again until all are done,
    # so an item that is done remembers its output (app.actions.progress).
    item: int | None = None

    def placeholders(self) -> dict[str, str]:
        """The values of the placeholders of DESIGN.md section 8 for this call."""
        return {
            "pair.name": self.cluster_name,
            "pair.id": self.cluster_id,
            "source.region": str(self.source.get("region", "")),
            "source.name": str(self.source.get("name", "")),
            "target.region": str(self.target.get("region", "")),
            "target.name": str(self.target.get("name", "")),
            "operation.id": self.operation_id,
            "operation.kind": self.kind,
            "operation.mode": self.mode,
        }


class Action(ABC):
    kind: ClassVar[str]
    # Its settings' shape, checked when a plan is saved.
    Settings: ClassVar[type[BaseModel]]
    # True for actions that change nothing (check, approval, ...): a step before the
    # point of no return needs an undo unless its action changes nothing.
    changes_nothing: ClassVar[bool] = False

    @classmethod
    def changes_nothing_with(cls, settings: dict[str, Any]) -> bool:
        """Whether these settings change nothing (most kinds: the class says)."""
        return cls.changes_nothing

    @classmethod
    def probes_with(cls, settings: dict[str, Any]) -> bool:
        """Whether `probe` has something to check with these settings (most kinds: no)."""
        return False

    @classmethod
    def rehearses_with(cls, settings: dict[str, Any]) -> bool:
        """Whether a drill can rehearse a step of this action without a `drill` action of
        its own (app.domain.drills): by default, when it has a readiness probe."""
        return cls.probes_with(settings)

    def __init__(self, settings: dict[str, Any], deps: ActionDeps) -> None:
        self.settings = settings
        self.deps = deps

    @abstractmethod
    async def do(self, call: StepCall) -> Output | NotYet: ...

    async def undo(self, call: StepCall) -> Output | NotYet:
        raise ActionFailed(f"the {self.kind} action has no undo")

    async def probe(self, call: StepCall) -> tuple[bool, str, int] | None:
        """Readiness: one bounded round of a check that changes nothing, as (ok, detail,
        duration in ms); None when this action has nothing to probe."""
        return None

    async def rehearse(self, call: StepCall) -> tuple[bool, str, int] | None:
        """A drill's rehearsal of a step with no `drill` action: its readiness probe (it
        changes nothing), unless the kind says otherwise."""
        return await self.probe(call)

    def measurement(self) -> dict[str, Any] | None:
        """What the last probe or call of this instance measured, for readiness to keep
        (the postgres action's replication lag); None for most kinds."""
        return None


def call_key(operation_id: str, step: str, phase: str, attempt: int, index: int | None) -> str:
    """The idempotency key of DESIGN.md section 4."""
    key = (
        f"{operation_id}:{step}:{attempt}"
        if phase == "do"
        else f"{operation_id}:{step}:undo:{attempt}"
    )
    return key if index is None else f"{key}:{index}"
