from __future__ import annotations

from datetime import datetime
from typing import Any

from typing_extensions import TypeAliasType

from app.common import Strict
from app.domain.plans import OperationKind

# {"bytes", "seconds", "measured_at", "cloud_region", ...}: what the postgres action measured.
ReplicationLag = TypeAliasType("ReplicationLag", dict[str, Any])


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
    # The replication lag the probes measured into the target region (the last one
    # measured for this operation when the source does not answer now); null: none.
    replication_lag: ReplicationLag | None = None
