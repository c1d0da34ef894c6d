"""The drill's plan, its moves and its report: pure, no database (app.domain.drills,
app.domain.progress.next_drill_move)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from app.domain import drills
from app.domain.plans import OperationStatus, StepPlan, StepStatus
from app.domain.progress import (
    Call,
    EndDrill,
    OperationView,
    SkipRest,
    Start,
    StepView,
    TimeOut,
    Wait,
    next_drill_move,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CHECK = {"kind": "check", "urls": ["http://h/health"]}


def http(path: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "http", "url": f"http://h{path}", **extra}


def probes(settings: dict[str, Any]) -> bool:
    return settings["kind"] == "check" or "check_url" in settings


def test_drill_plan_rehearses_each_step_and_never_undoes() -> None:
    steps = [
        StepPlan(name="preflight", action=CHECK),
        StepPlan(name="fence", action=http("/fence"), undo=http("/unfence")),
        StepPlan(name="pause", action=http("/pause", check_url="http://h/c"), undo=http("/r")),
        StepPlan(
            name="promote", action=http("/promote"), point_of_no_return=True, drill=http("/d")
        ),
        StepPlan(name="verify", action=CHECK),  # after the point of no return: not probed
    ]
    cleanup = [StepPlan(name="teardown", action=http("/cleanup"))]
    plan = drills.drill_plan(steps, cleanup, probes)
    assert [(s.name, s.rehearsal, s.cleanup) for s in plan] == [
        ("preflight", "probe", False),
        ("fence", "skipped", False),
        ("pause", "probe", False),
        ("promote", "drill", False),
        ("verify", "skipped", False),
        ("teardown", None, True),
    ]
    assert all(s.undo is None for s in plan)
    assert plan[3].actions() == [http("/d")]
    # Kept as data on the operation, and read back the same.
    assert [StepPlan.from_dict(s.to_dict()) for s in plan] == plan


def view(status: OperationStatus, *steps: tuple[StepStatus, bool], **kw: Any) -> OperationView:
    return OperationView(
        status=status,
        steps=[StepView(s, True, kw.get("deadline"), cleanup) for s, cleanup in steps],
        wake_at=kw.get("wake_at"),
    )


P, R, S, F, K = (
    StepStatus.PENDING,
    StepStatus.RUNNING,
    StepStatus.SUCCEEDED,
    StepStatus.FAILED,
    StepStatus.SKIPPED,
)
RUNNING, CANCELLING = OperationStatus.RUNNING, OperationStatus.CANCELLING


def test_next_drill_move() -> None:
    # In order; a skipped step is passed; the cleanup after the rehearsal.
    assert next_drill_move(view(RUNNING, (S, False), (K, False), (P, True)), NOW) == Start(2)
    assert next_drill_move(view(RUNNING, (S, False), (R, False), (P, True)), NOW) == Call(1)
    parked = view(RUNNING, (R, False), (P, True), wake_at=NOW + timedelta(seconds=5))
    assert next_drill_move(parked, NOW) == Wait(NOW + timedelta(seconds=5))
    late = view(RUNNING, (R, False), (P, True), deadline=NOW)
    assert next_drill_move(late, NOW) == TimeOut(0)
    # A failed step: the rest is skipped, then the cleanup runs.
    failed = view(RUNNING, (F, False), (P, False), (P, False), (P, True))
    assert next_drill_move(failed, NOW) == SkipRest((1, 2))
    assert next_drill_move(view(RUNNING, (F, False), (K, False), (P, True)), NOW) == Start(2)
    # A cancel: the step under way and those not started are skipped; never an undo.
    cancelled = view(CANCELLING, (S, False), (R, False), (P, False), (P, True))
    assert next_drill_move(cancelled, NOW) == SkipRest((1, 2))
    assert next_drill_move(view(CANCELLING, (S, False), (K, False), (R, True)), NOW) == Call(2)
    # A failed cleanup step does not stop the next one.
    assert next_drill_move(view(RUNNING, (S, False), (F, True), (P, True)), NOW) == Start(2)
    assert next_drill_move(view(CANCELLING, (K, False), (F, True), (S, True)), NOW) == EndDrill()


@dataclass
class Row:
    name: str
    status: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: dict[str, Any] | None = None
    output: dict[str, Any] | None = None


def ran(name: str, seconds: float, status: str = "succeeded", **kw: Any) -> Row:
    return Row(name, status, NOW, NOW + timedelta(seconds=seconds), **kw)


def test_report_outcome_expected_rto_findings_and_lag() -> None:
    plan = drills.drill_plan(
        [
            StepPlan(name="preflight", action=CHECK),
            StepPlan(name="promote", action=http("/p"), point_of_no_return=True, drill=http("/d")),
            StepPlan(name="switch", action=http("/s")),
        ],
        [StepPlan(name="teardown", action=http("/c"))],
        probes,
    )
    lag = {"bytes": 10, "seconds": 0.5, "measured_at": "t"}
    check = {"step": "preflight", "name": "check", "ok": True, "detail": "1 URL(s) healthy"}
    rows = [
        ran("preflight", 1.5, output={"checks": [{**check, "replication_lag": lag}]}),
        ran("promote", 2.25, output={"source": {}, "lag": {**lag, "bytes": 5, "seconds": 1}}),
        Row("switch", "skipped"),
        ran("teardown", 0.5),
    ]
    report = drills.report("succeeded", plan, rows, done=True)
    assert report["outcome"] == "succeeded" and report["failed_step"] is None
    assert report["expected_rto_s"] == 3.75  # the cleanup is not part of it
    assert report["unmeasured_steps"] == ["switch"]
    assert report["readiness"] == [check]
    assert report["replication_lag"] == {**lag, "bytes": 5, "seconds": 1, "step": "promote"}
    assert [r["duration_s"] for r in report["steps"]] == [1.5, 2.25, None]
    # Not done yet: no outcome and no expected RTO.
    assert drills.report("running", plan, rows, done=False)["outcome"] is None
    # A failed step: its name, its error, no expected RTO; a failed cleanup fails the drill.
    rows[1] = ran("promote", 1, "failed", error={"code": "step_failed", "message": "x"})
    report = drills.report("failed", plan, rows, done=True)
    assert report["failed_step"] == "promote" and report["expected_rto_s"] is None
    assert report["steps"][1]["error"] == {"code": "step_failed", "message": "x"}
    assert drills.outcome("running", rows) is OperationStatus.FAILED
    ok = [ran("preflight", 1), ran("promote", 1), Row("switch", "skipped"), ran("teardown", 1)]
    assert drills.outcome("cancelling", ok) is OperationStatus.CANCELLED
    assert drills.outcome("running", ok) is OperationStatus.SUCCEEDED
    ok[3] = ran("teardown", 1, "failed")
    assert drills.outcome("cancelling", ok) is OperationStatus.FAILED
