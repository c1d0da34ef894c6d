"""Drills: a rehearsal of the failover (or failback) a pair allows next, that moves nothing
(DESIGN.md section 14). Pure: the plan a drill runs, its outcome and its report.

How a drill rehearses each step of the pair's plan:
- a step with a `drill` action runs it (before the point of no return or after it);
- else, before the point of no return, its readiness probe (what app.readiness evaluates:
  a `check` runs once, an `http` step asks its `check_url`, a postgres `check` reads roles
  and lag); a step whose actions have no probe is skipped;
- else (the point of no return and every step after it) it is skipped: a drill never
  runs a real action from there on.
No step's `undo` ever runs. The plan's `cleanup` steps follow, and run also when a step
failed or the drill was cancelled. Nothing a drill does is past a point of no return, so
every one of its steps is reversible and a drill can always be cancelled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from app.domain.plans import OperationStatus, StepPlan, StepStatus

DRILL, PROBE, SKIPPED, CLEANUP = "drill", "probe", "skipped", "cleanup"


def drill_plan(
    steps: list[StepPlan],
    cleanup: list[StepPlan],
    probes: Callable[[dict[str, Any]], bool],
) -> list[StepPlan]:
    """The steps a drill runs: the plan's steps as rehearsals, then its cleanup.
    `probes(settings)` says whether an action has a readiness probe."""
    planned: list[StepPlan] = []
    before = True
    for step in steps:
        before = before and not step.point_of_no_return
        if step.drill is not None:
            planned.append(
                replace(step, action=dict(step.drill), parallel=(), undo=None, rehearsal=DRILL)
            )
        elif before and any(probes(a) for a in step.actions()):
            planned.append(replace(step, undo=None, rehearsal=PROBE))
        else:
            planned.append(replace(step, undo=None, rehearsal=SKIPPED))
    return planned + [replace(step, undo=None, cleanup=True, rehearsal=None) for step in cleanup]


class _Step(Protocol):
    name: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    error: dict[str, Any] | None
    output: dict[str, Any] | None


def outcome(status: str, steps: Sequence[_Step]) -> OperationStatus:
    """How a drill ends once its cleanup has run: failed when a step (cleanup included)
    failed, else cancelled when it was being cancelled, else succeeded."""
    if any(s.status == StepStatus.FAILED.value for s in steps):
        return OperationStatus.FAILED
    if status == OperationStatus.CANCELLING.value:
        return OperationStatus.CANCELLED
    return OperationStatus.SUCCEEDED


def failed_step(steps: Sequence[_Step]) -> _Step | None:
    """The first step that failed: a rehearsed step before a cleanup step."""
    failed = [s for s in steps if s.status == StepStatus.FAILED.value]
    return failed[0] if failed else None


def _duration(step: _Step) -> float | None:
    if step.started_at is None or step.finished_at is None:
        return None
    return round((step.finished_at - step.started_at).total_seconds(), 3)


def _lags(step: _Step) -> list[dict[str, Any]]:
    """The replication lag a step measured: a postgres `check` run as a drill action
    (`lag` in its output) or as a probe (`replication_lag` of a check)."""
    output = step.output or {}
    found = []
    for item in [output, *(output.get("results") or [])]:
        if isinstance(item, dict) and isinstance(item.get("lag"), dict):
            found.append(item["lag"])
    for check in output.get("checks") or []:
        if isinstance(check, dict) and isinstance(check.get("replication_lag"), dict):
            found.append(check["replication_lag"])
    return [lag for lag in found if lag.get("bytes") is not None]


def report(
    status: str, plan: Sequence[StepPlan], steps: Sequence[_Step], done: bool
) -> dict[str, Any]:
    """The drill's report: each step's outcome and duration, the expected RTO, the
    readiness findings and the replication lag seen.

    expected_rto_s is the sum of the durations of the plan's steps as the drill measured
    them (a drill action's or a probe's run time); steps the drill skipped count for
    nothing and are named in `unmeasured_steps`. Null unless every step was rehearsed
    without failing."""
    rows: list[dict[str, Any]] = []
    cleanup: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    lags: list[dict[str, Any]] = []
    for spec, step in zip(plan, steps, strict=True):
        row = {
            "name": step.name,
            "rehearsal": CLEANUP if spec.cleanup else spec.rehearsal or SKIPPED,
            "status": step.status,
            "duration_s": _duration(step),
            "error": step.error if step.status == StepStatus.FAILED.value else None,
        }
        (cleanup if spec.cleanup else rows).append(row)
        for check in (step.output or {}).get("checks") or []:
            if isinstance(check, dict):
                findings.append({k: v for k, v in check.items() if k != "replication_lag"})
        lags.extend({**lag, "step": step.name} for lag in _lags(step))
    rehearsed = [r for r in rows if r["rehearsal"] != SKIPPED]
    complete = all(
        r["status"] in (StepStatus.SUCCEEDED.value, StepStatus.SKIPPED.value) for r in rows
    ) and all(r["status"] == StepStatus.SUCCEEDED.value for r in rehearsed)
    expected = (
        round(sum(r["duration_s"] or 0.0 for r in rehearsed), 3) if complete and done else None
    )
    failed = failed_step(steps)
    ended = status if done else None
    return {
        "outcome": ended,
        "failed_step": failed.name if failed is not None else None,
        "expected_rto_s": expected,
        "unmeasured_steps": [r["name"] for r in rows if r["rehearsal"] == SKIPPED],
        "steps": rows,
        "cleanup": cleanup,
        "readiness": findings,
        # The largest seen (by seconds, then bytes), and where.
        "replication_lag": max(
            lags, key=lambda m: (m.get("seconds") or 0, m.get("bytes") or 0), default=None
        ),
    }
