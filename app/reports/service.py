"""The evidence report of a pair (DESIGN.md section 14): every failover, failback, drill and
deployment retry of a period, who asked and who approved, each step's timing, the recovery
objectives against what was measured, and the readiness history.

A read model: it reads the operations, their steps, the approval decisions and the pair's
events as they are stored (as app.metrics does), and `assemble` turns those rows into the
report without I/O. The period is [from, to): an operation belongs to the period it was
created in, so consecutive periods never list one twice.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.actions.approval import Decision
from app.clusters import service as cluster_service
from app.clusters.models import Cluster
from app.columns import utcnow
from app.domain import drills
from app.domain.plans import OperationKind, StepPlan, measured_data_loss
from app.errors import ValidationFailed
from app.events.models import Event
from app.operations.models import Operation, OperationStep
from app.operations.schemas import DrillReport
from app.readiness.schemas import ReadinessCheck
from app.reports.schemas import (
    EvidenceReport,
    Objective,
    ObjectiveBreach,
    ReadinessChange,
    ReportDecision,
    ReportOperation,
    ReportPair,
    ReportPeriod,
    ReportSite,
    ReportStep,
    ReportSummary,
)

# Without `from`, the period is the 90 days up to `to`.
DEFAULT_PERIOD = timedelta(days=90)
# A year (a leap one included); events and operations are kept 400 days by default
# (TANDEM_RETAIN_*_DAYS), so a longer period would report on what is partly gone.
MAX_PERIOD = timedelta(days=366)
# The operations an auditor asks about; retry_deployments is part of a recovery too.
KINDS = ("failover", "failback", "drill", "retry_deployments")
# The kinds whose time to recover is measured (the others switch nothing).
SWITCHES = frozenset({OperationKind.FAILOVER.value, OperationKind.FAILBACK.value})
READINESS_CHANGED = "cluster.readiness_changed"
BREACHES = {"operation.rto_breached": "rto", "operation.rpo_breached": "rpo"}

# RFC 3339's date-time (`t`, `z` and a space for `T` allowed, as its section 5.6 says); an
# offset's `+` that reached us as a space (an unencoded `+` in a query string) is taken back.
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)([Zz]|[+\- ]\d{2}:\d{2})$"
)


def _invalid(where: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"query.{where}: {message}",
        errors=[{"loc": ["query", where], "msg": message, "type": "value_error"}],
    )


def parse_time(value: str, where: str) -> datetime:
    """An RFC 3339 timestamp (with its offset) as an aware UTC datetime; 422 otherwise."""
    found = _RFC3339.match(value.strip())
    if found is None:
        raise _invalid(where, "not an RFC 3339 timestamp (e.g. 2026-01-31T00:00:00Z)")
    day, clock, offset = found.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset.replace(" ", "+")
    try:
        return datetime.fromisoformat(f"{day}T{clock}{offset}").astimezone(UTC)
    except (ValueError, OverflowError):
        raise _invalid(where, "not a valid date and time") from None


def period(start: str | None, end: str | None, now: datetime | None = None) -> ReportPeriod:
    """The period asked for: [from, to), by default the 90 days up to now; at most 366
    days, and `from` before `to` (422 otherwise)."""
    to = parse_time(end, "to") if end is not None else (now or utcnow())
    try:
        since = parse_time(start, "from") if start is not None else to - DEFAULT_PERIOD
    except OverflowError:
        raise _invalid("to", "too early to count 90 days back from it") from None
    if since >= to:
        raise _invalid("from", "must be before `to`")
    if to - since > MAX_PERIOD:
        days = MAX_PERIOD.days
        raise _invalid("from", f"the period is at most {days} days: ask for several reports")
    return ReportPeriod(from_=since, to=to)


async def build(
    session: AsyncSession, org_id: str, cluster_id: str, span: ReportPeriod
) -> EvidenceReport:
    """The report of the pair (404 when it is not the organization's) over `span`."""
    cluster = await cluster_service.get(session, org_id, cluster_id)
    operations = list(
        await session.scalars(
            select(Operation)
            .where(
                col(Operation.cluster_id) == cluster.id,
                col(Operation.kind).in_(KINDS),
                col(Operation.created_at) >= span.from_,
                col(Operation.created_at) < span.to,
            )
            .order_by(col(Operation.created_at), col(Operation.id))
        )
    )
    ids = [operation.id for operation in operations]
    steps: list[OperationStep] = []
    decisions: list[Decision] = []
    breaches: list[Event] = []
    if ids:
        steps = list(
            await session.scalars(
                select(OperationStep)
                .where(col(OperationStep.operation_id).in_(ids))
                .order_by(col(OperationStep.operation_id), col(OperationStep.position))
            )
        )
        decisions = list(
            await session.scalars(
                select(Decision)
                .where(col(Decision.operation_id).in_(ids))
                .order_by(col(Decision.decided_at))
            )
        )
        # Emitted when an operation ends: at or after the first one's creation.
        breaches = await _events(session, cluster.id, list(BREACHES), since=span.from_)
    readiness = await _events(
        session, cluster.id, [READINESS_CHANGED], since=span.from_, before=span.to
    )
    at_start = await _events(
        session, cluster.id, [READINESS_CHANGED], before=span.from_, latest_only=True
    )
    return assemble(
        cluster,
        span,
        utcnow(),
        operations,
        steps,
        decisions,
        breaches,
        readiness,
        at_start[0] if at_start else None,
    )


async def _events(
    session: AsyncSession,
    cluster_id: str,
    types: list[str],
    *,
    since: datetime | None = None,
    before: datetime | None = None,
    latest_only: bool = False,
) -> list[Event]:
    query = select(Event).where(col(Event.cluster_id) == cluster_id, col(Event.type).in_(types))
    if since is not None:
        query = query.where(col(Event.created_at) >= since)
    if before is not None:
        query = query.where(col(Event.created_at) < before)
    if latest_only:
        query = query.order_by(col(Event.sequence).desc()).limit(1)
    else:
        query = query.order_by(col(Event.sequence))
    return list(await session.scalars(query))


def assemble(
    cluster: Cluster,
    span: ReportPeriod,
    now: datetime,
    operations: Sequence[Operation],
    steps: Sequence[OperationStep],
    decisions: Sequence[Decision],
    breaches: Sequence[Event],
    readiness: Sequence[Event],
    readiness_before: Event | None,
) -> EvidenceReport:
    """The report from the stored rows (no I/O): operations oldest first, each with its
    steps (in plan order), decisions and breach events."""
    steps_of: dict[str, list[OperationStep]] = {}
    for step in sorted(steps, key=lambda s: (s.operation_id, s.position)):
        steps_of.setdefault(step.operation_id, []).append(step)
    decisions_of: dict[str, list[Decision]] = {}
    for decision in sorted(decisions, key=lambda d: d.decided_at):
        decisions_of.setdefault(decision.operation_id, []).append(decision)
    breaches_of: dict[tuple[str, str], list[ObjectiveBreach]] = {}
    for event in breaches:
        objective = BREACHES.get(event.type)
        data = event.data or {}
        if objective is None or "operation_id" not in data:
            continue
        breaches_of.setdefault((str(data["operation_id"]), objective), []).append(
            ObjectiveBreach(
                at=event.created_at,
                target_s=float(data.get("target_s") or 0),
                measured_s=float(data.get("measured_s") or 0),
            )
        )
    listed = [
        _operation(
            operation,
            steps_of.get(operation.id, []),
            decisions_of.get(operation.id, []),
            cluster,
            breaches_of,
        )
        for operation in sorted(operations, key=lambda o: (o.created_at, o.id))
    ]
    changes = [_readiness(event) for event in readiness]
    return EvidenceReport(
        pair=ReportPair(
            id=cluster.id,
            name=cluster.name,
            primary=_site(cluster.primary),
            secondary=_site(cluster.secondary),
            rto_target_s=cluster.rto_target_s,
            rpo_target_s=cluster.rpo_target_s,
        ),
        period=span,
        generated_at=now,
        summary=_summary(listed, changes),
        operations=listed,
        readiness_at_start=_readiness(readiness_before) if readiness_before else None,
        readiness=changes,
    )


def _site(site: dict[str, Any]) -> ReportSite:
    return ReportSite(
        name=str(site.get("name", "")),
        region=str(site.get("region", "")),
        cloud=str(site.get("cloud", "")),
    )


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def _objective(
    target: float | None, measured: float | None, breaches: list[ObjectiveBreach]
) -> Objective:
    met = None if target is None or measured is None else measured <= target
    return Objective(target_s=target, measured_s=measured, met=met, breaches=breaches)


def _error(error: dict[str, Any] | None) -> str | None:
    if not error:
        return None
    title, detail = error.get("title"), error.get("detail")
    if title and detail and detail != title:
        return f"{title}: {detail}"
    return str(detail or title or error.get("code") or "failed")


def _operation(
    operation: Operation,
    steps: list[OperationStep],
    decisions: list[Decision],
    cluster: Cluster,
    breaches: dict[tuple[str, str], list[ObjectiveBreach]],
) -> ReportOperation:
    # The operation keeps what it measured when it succeeded; a switch that failed past its
    # promotion still has the promote step's measurement.
    loss = operation.data_loss or measured_data_loss([step.output for step in steps])
    lost_s = (loss or {}).get("seconds")
    rto_s = operation.measured_rto_s if operation.kind in SWITCHES else None
    drill = _drill(operation, steps)
    return ReportOperation(
        id=operation.id,
        kind=operation.kind,  # type: ignore[arg-type]
        mode=operation.mode,  # type: ignore[arg-type]
        status=operation.status,  # type: ignore[arg-type]
        reason=operation.reason,
        requested_by=operation.requested_by,
        approved_by=list(dict.fromkeys(d.decided_by for d in decisions if d.approved)),
        decisions=[
            ReportDecision(
                step=d.step,
                approved=d.approved,
                decided_by=d.decided_by,
                comment=d.comment,
                decided_at=d.decided_at,
            )
            for d in decisions
        ],
        batch_id=operation.batch_id,
        needs_attention=operation.needs_attention,
        error=_error(operation.error),
        created_at=operation.created_at,
        started_at=operation.started_at,
        finished_at=operation.finished_at,
        duration_s=_seconds(operation.created_at, operation.finished_at),
        steps=[
            ReportStep(
                name=step.name,
                status=step.status,  # type: ignore[arg-type]
                attempts=step.attempts,
                started_at=step.started_at,
                finished_at=step.finished_at,
                duration_s=_seconds(step.started_at, step.finished_at),
            )
            for step in steps
        ],
        rto=_objective(cluster.rto_target_s, rto_s, breaches.get((operation.id, "rto"), [])),
        data_loss=loss,
        rpo=_objective(
            cluster.rpo_target_s,
            float(lost_s) if isinstance(lost_s, int | float) else None,
            breaches.get((operation.id, "rpo"), []),
        ),
        drill=drill,
        expected_rto=(
            _objective(cluster.rto_target_s, drill.expected_rto_s, []) if drill else None
        ),
    )


def _drill(operation: Operation, steps: list[OperationStep]) -> DrillReport | None:
    """A drill's report, as the operation shows it (app.domain.drills)."""
    if operation.kind != OperationKind.DRILL.value or not operation.plan:
        return None
    plan = [StepPlan.from_dict(spec) for spec in operation.plan]
    if len(plan) != len(steps):
        return None
    return DrillReport.model_validate(drills.report(operation.status, plan, steps, operation.done))


def _readiness(event: Event) -> ReadinessChange:
    data = event.data or {}
    return ReadinessChange(
        at=event.created_at,
        ready=bool(data.get("ready")),
        failing=[
            ReadinessCheck(
                step=str(check.get("step", "")),
                name=str(check.get("name", "")),
                ok=bool(check.get("ok")),
                detail=str(check.get("detail", "")),
                duration_ms=int(check.get("duration_ms") or 0),
            )
            for check in data.get("failing") or []
            if isinstance(check, dict)
        ],
    )


def _summary(operations: list[ReportOperation], changes: list[ReadinessChange]) -> ReportSummary:
    return ReportSummary(
        operations=len(operations),
        by_kind=dict(Counter(str(o.kind) for o in operations)),
        by_status=dict(Counter(str(o.status) for o in operations)),
        rto_met=sum(1 for o in operations if o.rto.met is True),
        rto_missed=sum(1 for o in operations if o.rto.met is False),
        rpo_met=sum(1 for o in operations if o.rpo.met is True),
        rpo_missed=sum(1 for o in operations if o.rpo.met is False),
        readiness_changes=len(changes),
    )
