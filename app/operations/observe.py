"""What the executor tells observers (metrics, traces) once a write has committed: a step
ended, an operation ended. Observers register here; a failing observer never stops an
operation."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger("tandem.observe")


@dataclass(frozen=True)
class StepEnded:
    org_id: str
    cluster_id: str
    operation_id: str
    kind: str
    mode: str | None
    step: str
    # The action kinds the step ran (several for a parallel step).
    actions: tuple[str, ...]
    # succeeded | failed | rolled_back | skipped
    outcome: str
    # The error's code (step_timed_out, step_failed, ...) when it failed.
    error_code: str | None
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class OperationEnded:
    org_id: str
    cluster_id: str
    operation_id: str
    kind: str
    mode: str | None
    # succeeded | failed | cancelled
    outcome: str
    needs_attention: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # Each step: name, actions, status, started_at, finished_at, error code.
    steps: tuple[dict[str, Any], ...]
    source_region: str
    target_region: str
    # The batch that started it (a region's evacuation), if any.
    batch_id: str | None = None


StepObserver = Callable[[StepEnded], Awaitable[None]]
OperationObserver = Callable[[OperationEnded], Awaitable[None]]

STEP_OBSERVERS: list[StepObserver] = []
OPERATION_OBSERVERS: list[OperationObserver] = []


async def step_ended(event: StepEnded) -> None:
    for observer in tuple(STEP_OBSERVERS):
        try:
            await observer(event)
        except Exception:
            log.exception("step observer %r failed", observer)


async def operation_ended(event: OperationEnded) -> None:
    for observer in tuple(OPERATION_OBSERVERS):
        try:
            await observer(event)
        except Exception:
            log.exception("operation observer %r failed", observer)
