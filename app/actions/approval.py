"""The `approval` action: the step waits for a person (DESIGN.md section 8).

It answers "not yet, ask again at the deadline" until a decision is recorded under the
call's idempotency key (`POST /v1/operations/{op}/approve` or `/reject`), so a waiting
step holds no worker slot. The executor shows the step `waiting` and emits
`operation.approval_requested` once. Approved: the step succeeds, its output says who
and why. Rejected before the point of no return, the operation is cancelled by the
decision itself (it rolls back); past it, the step fails and the operation needs
attention. No decision by the deadline: `step_timed_out`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import StringConstraints
from sqlmodel import Field, SQLModel

from app.actions.base import Action, ActionFailed, NotYet, Output, StepCall
from app.columns import UTCDateTime, utcnow
from app.common import NO_NUL, Strict
from app.db import unit_of_work


class ApprovalSettings(Strict):
    kind: Literal["approval"]
    # The approver must be another token than the one that started the operation.
    two_person: bool = False
    # Shown to whoever is asked to decide.
    message: Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)] | None = None


class Decision(SQLModel, table=True):
    """A person's decision on one attempt of an approval step."""

    __tablename__ = "approval_decisions"

    idempotency_key: str = Field(primary_key=True, max_length=160)
    cluster_id: str = Field(max_length=40, index=True)
    operation_id: str = Field(max_length=40, index=True)
    step: str = Field(max_length=40)
    approved: bool
    decided_by: str = Field(max_length=200)
    comment: str | None = Field(default=None, max_length=1000)
    decided_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ApprovalAction(Action):
    kind: ClassVar[str] = "approval"
    Settings = ApprovalSettings
    changes_nothing: ClassVar[bool] = True

    async def do(self, call: StepCall) -> Output | NotYet:
        async with unit_of_work(self.deps.sessions) as session:
            decision = await session.get(Decision, call.idempotency_key, populate_existing=True)
        if decision is None:
            return NotYet(call.deadline_at, "awaiting approval", waiting=True)
        if not decision.approved:
            why = f": {decision.comment}" if decision.comment else ""
            raise ActionFailed(f"rejected by {decision.decided_by}{why}", code="rejected")
        return {
            "approved_by": decision.decided_by,
            "comment": decision.comment,
            "decided_at": decision.decided_at.isoformat(),
        }
