from __future__ import annotations

from datetime import datetime

from app.common import Strict
from app.domain.plans import OperationKind


class ReadinessCheck(Strict):
    step: str
    # The action's kind (with its index in a parallel step), or `secret:<name>`.
    name: str
    ok: bool
    detail: str
    duration_ms: int


class ReadinessOut(Strict):
    ready: bool
    checked_at: datetime
    # The operation it was evaluated for: the one the pair's state allows next.
    operation: OperationKind | None
    checks: list[ReadinessCheck]
