"""The driver interface: one method per step, and an undo for each reversible step.

Every call carries `ctx.idempotency_key` (`op_id:step:attempt`, or `op_id:step:undo:N`).
A call repeated with the same key, after a worker died mid-step, must not apply its
side effect a second time: a real driver passes the key to the system it calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StepContext:
    cluster_id: str
    cluster_name: str
    operation_id: str
    kind: str
    mode: str
    step: str
    attempt: int
    source: dict[str, Any]
    target: dict[str, Any]
    deployments: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        return f"{self.operation_id}:{self.step}:{self.attempt}"

    @property
    def undo_key(self) -> str:
        return f"{self.operation_id}:{self.step}:undo:{self.attempt}"


class StepFailed(Exception):
    """The step did not do what it should; the message is shown to the operator."""

    def __init__(self, message: str, *, retryable: bool = True, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.details = details


Output = dict[str, Any]


class Driver(ABC):
    @abstractmethod
    async def preflight(self, ctx: StepContext) -> Output: ...

    @abstractmethod
    async def pause_schedulers(self, ctx: StepContext) -> Output: ...

    @abstractmethod
    async def drain_replication(self, ctx: StepContext) -> Output: ...

    @abstractmethod
    async def promote_target(self, ctx: StepContext) -> Output: ...

    @abstractmethod
    async def switch_traffic(self, ctx: StepContext) -> Output: ...

    @abstractmethod
    async def validate_deployments(self, ctx: StepContext) -> Output: ...

    @abstractmethod
    async def resume_schedulers(self, ctx: StepContext) -> Output: ...

    @abstractmethod
    async def undo_preflight(self, ctx: StepContext) -> Output: ...

    @abstractmethod
    async def undo_pause_schedulers(self, ctx: StepContext) -> Output: ...

    @abstractmethod
    async def undo_drain_replication(self, ctx: StepContext) -> Output: ...

    async def run(self, ctx: StepContext) -> Output:
        method = getattr(self, ctx.step)
        return await method(ctx)  # type: ignore[no-any-return]

    async def undo(self, ctx: StepContext) -> Output:
        method = getattr(self, f"undo_{ctx.step}")
        return await method(ctx)  # type: ignore[no-any-return]
