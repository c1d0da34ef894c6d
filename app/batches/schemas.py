from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StrictBool, StringConstraints, model_validator

from app.batches.models import BatchStatus, ItemStatus
from app.clusters.schemas import Labels
from app.common import NO_NUL, Strict
from app.domain.plans import Mode, OperationKind


class EvacuateRequest(Strict):
    mode: Mode = Mode.PLANNED
    reason: Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)] | None = None
    accept_data_loss: StrictBool = False
    # A pair whose last readiness evaluation says it is not ready is skipped unless set.
    ignore_readiness: StrictBool = False
    # At most this many of the batch's operations run at once.
    max_parallel: Annotated[int, Field(ge=1, le=1000)] = 20
    # Only pairs with every one of these labels (and values).
    labels: Labels = Field(default_factory=dict)

    @model_validator(mode="after")
    def _forced_needs_consent(self) -> EvacuateRequest:
        if self.mode is Mode.FORCED and not self.accept_data_loss:
            raise ValueError('a forced evacuation requires "accept_data_loss": true')
        return self


class BatchCounts(Strict):
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    skipped: int = 0


class BatchPair(Strict):
    cluster_id: str
    name: str
    kind: OperationKind
    status: ItemStatus
    operation_id: str | None
    # Why it was skipped, or what refused it.
    detail: str | None


class BatchOut(Strict):
    id: str
    kind: str
    region: str
    status: BatchStatus
    done: bool
    mode: Mode
    reason: str | None
    max_parallel: int
    labels: dict[str, str]
    ignore_readiness: bool
    requested_by: str | None
    cancel_requested: bool
    total: int
    counts: BatchCounts
    # A page of the batch's pairs, in the order they are started; `next_page_token` reads on.
    pairs: list[BatchPair]
    next_page_token: str | None = None
    created_at: datetime
    finished_at: datetime | None
    links: dict[str, str] = Field(default_factory=dict)
