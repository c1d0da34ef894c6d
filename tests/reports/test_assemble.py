"""The report's assembly from stored rows and its PDF, without a server: the cases a live
history makes slowly or not at all (a missed RTO, a switch that failed past its promotion
with the promote step's data loss, a rejection, a drill), and the period's parsing."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.actions.approval import Decision
from app.clusters.models import Cluster
from app.domain.plans import StepPlan
from app.errors import ValidationFailed
from app.events.models import Event
from app.operations.models import Operation, OperationStep
from app.reports import pdf, service
from app.reports.api import negotiate
from app.reports.schemas import EvidenceReport
from tests.backends import backends
from tests.conftest import BACKEND

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def cluster() -> Cluster:
    return Cluster(
        id="cl_audit",
        org_id="org_1",
        name="payments <eu> & co",
        primary={"name": "pay-fra", "region": "eu-central-1", "cloud": "aws"},
        secondary={"name": "pay-dub", "region": "eu-west-1", "cloud": "aws"},
        driver={},
        runbook_secret="whsec_x",
        deployments=[],
        state="primary-active",
        active_region="eu-central-1",
        rto_target_s=60,
        rpo_target_s=5,
    )


def operation(op_id: str, kind: str, created: float, **fields: Any) -> Operation:
    values: dict[str, Any] = {
        "cluster_id": "cl_audit",
        "org_id": "org_1",
        "mode": "planned" if kind in ("failover", "failback") else None,
        "status": "succeeded",
        "done": True,
        "from_state": "primary-active",
        "target_state": "secondary-active",
        "requested_by": "token:oncall (tok_1)",
        "created_at": at(created),
        "started_at": at(created + 0.5),
        "finished_at": at(created + 100),
    }
    return Operation(id=op_id, kind=kind, **{**values, **fields})


def step(op_id: str, position: int, name: str, start: float | None, end: float | None, **f: Any):  # type: ignore[no-untyped-def]
    return OperationStep(
        operation_id=op_id,
        position=position,
        name=name,
        status=f.pop("status", "succeeded"),
        reversible=True,
        attempts=f.pop("attempts", 1),
        started_at=None if start is None else at(start),
        finished_at=None if end is None else at(end),
        **f,
    )


def event(sequence: int, type_: str, seconds: float, data: dict[str, Any]) -> Event:
    return Event(
        id=f"evt_{sequence}",
        cluster_id="cl_audit",
        org_id="org_1",
        sequence=sequence,
        position=sequence,
        org_position=sequence,
        type=type_,
        created_at=at(seconds),
        data=data,
    )


lagging = {
    "step": "preflight",
    "name": "check",
    "ok": False,
    "detail": "standby 9 s behind",
    "duration_ms": 40,
}


def report() -> EvidenceReport:
    span = service.period("2026-02-01T00:00:00Z", "2026-04-01T00:00:00+02:00")
    operations = [
        # Given out of order: the report lists them oldest first.
        operation(
            "op_failed",
            "failback",
            1000,
            status="failed",
            needs_attention=True,
            error={"title": "Step failed", "detail": "switch: HTTP 500", "code": "step_failed"},
        ),
        operation("op_slow", "failover", 0, measured_rto_s=75.25, data_loss=None),
        operation(
            "op_drill",
            "drill",
            2000,
            plan=[
                StepPlan("preflight", {"kind": "check"}, rehearsal="probe").to_dict(),
                StepPlan("promote", {"kind": "http"}, rehearsal="skipped").to_dict(),
                StepPlan("tidy", {"kind": "http"}, cleanup=True).to_dict(),
            ],
        ),
    ]
    steps = [
        step("op_slow", 0, "promote", 1, 70),
        step("op_slow", 1, "switch", 70, 75.25),
        step("op_failed", 1, "switch", 1031, 1032, status="failed", attempts=2),
        step(
            "op_failed",
            0,
            "promote",
            1001,
            1030,
            output={"lsn": "0/3000060", "data_loss": {"bytes": 4096, "seconds": 7.5}},
        ),
        step("op_failed", 2, "validate", None, None, status="pending", attempts=0),
        step("op_drill", 0, "preflight", 2001, 2003.5, output={"checks": [dict(lagging)]}),
        step("op_drill", 1, "promote", None, None, status="skipped", attempts=0),
        step("op_drill", 2, "tidy", 2004, 2005),
    ]
    decisions = [
        Decision(
            idempotency_key="op_failed:approve:do:1",
            cluster_id="cl_audit",
            operation_id="op_failed",
            step="approve",
            approved=False,
            decided_by="token:alice (tok_2)",
            comment="not during the freeze",
            decided_at=at(1000.5),
        ),
        Decision(
            idempotency_key="op_failed:approve:do:2",
            cluster_id="cl_audit",
            operation_id="op_failed",
            step="approve",
            approved=True,
            decided_by="token:bob (tok_3)",
            comment=None,
            decided_at=at(1000.7),
        ),
    ]
    slow = {"operation_id": "op_slow", "target_s": 30, "measured_s": 75.25}
    # Another operation's (outside the period): not this report's.
    other = {"operation_id": "op_other", "target_s": 5, "measured_s": 9}
    breaches = [
        event(7, "operation.rto_breached", 100, slow),
        event(9, "operation.rpo_breached", 100, other),
    ]
    failing = {
        "step": "promote",
        "name": "postgres",
        "ok": False,
        "detail": "lag 9 s > 5 s",
        "duration_ms": 12,
    }
    readiness = [
        event(3, "cluster.readiness_changed", -50, {"ready": False, "failing": [failing]}),
        event(4, "cluster.readiness_changed", -10, {"ready": True, "failing": []}),
    ]
    before = event(1, "cluster.readiness_changed", -(40 * 86400), {"ready": True, "failing": []})
    return service.assemble(
        cluster(), span, at(5000), operations, steps, decisions, breaches, readiness, before
    )


def test_assembled_figures() -> None:
    built = report()
    assert built.period.from_ == datetime(2026, 2, 1, tzinfo=UTC)
    assert built.period.to == datetime(2026, 3, 31, 22, tzinfo=UTC)
    slow, failed, drill = built.operations
    assert [o.id for o in built.operations] == ["op_slow", "op_failed", "op_drill"]

    # RTO over the target of now, and the breach event of then.
    assert (slow.rto.target_s, slow.rto.measured_s, slow.rto.met) == (60, 75.25, False)
    assert [(b.target_s, b.measured_s) for b in slow.rto.breaches] == [(30, 75.25)]
    assert slow.data_loss is None and slow.rpo.met is None and slow.rpo.measured_s is None
    assert [(s.name, s.duration_s) for s in slow.steps] == [("promote", 69.0), ("switch", 5.25)]
    assert slow.duration_s == 100 and slow.approved_by == [] and slow.decisions == []

    # Failed past its promotion: no RTO, but the promote step's data loss, over the RPO.
    assert failed.rto.measured_s is None and failed.rto.met is None
    assert failed.data_loss == {"bytes": 4096, "seconds": 7.5}
    assert (failed.rpo.measured_s, failed.rpo.met, failed.rpo.breaches) == (7.5, False, [])
    assert failed.error == "Step failed: switch: HTTP 500" and failed.needs_attention
    assert [s.name for s in failed.steps] == ["promote", "switch", "validate"]
    assert failed.steps[2].duration_s is None
    assert failed.approved_by == ["token:bob (tok_3)"]
    assert [(d.decided_by, d.approved) for d in failed.decisions] == [
        ("token:alice (tok_2)", False),
        ("token:bob (tok_3)", True),
    ]

    # A drill measures no RTO, and has no mode; its own report says what it expects.
    assert drill.kind == "drill" and drill.mode is None and drill.rto.met is None
    assert drill.drill is not None and drill.expected_rto is not None
    assert drill.drill.outcome == "succeeded" and drill.drill.expected_rto_s == 2.5
    assert drill.drill.unmeasured_steps == ["promote"]
    assert [(r.name, r.rehearsal) for r in drill.drill.cleanup] == [("tidy", "cleanup")]
    assert (drill.expected_rto.target_s, drill.expected_rto.met) == (60, True)
    assert slow.drill is None and slow.expected_rto is None

    assert built.summary.model_dump() == {
        "operations": 3,
        "by_kind": {"failover": 1, "failback": 1, "drill": 1},
        "by_status": {"succeeded": 2, "failed": 1},
        "rto_met": 0,
        "rto_missed": 1,
        "rpo_met": 0,
        "rpo_missed": 1,
        "readiness_changes": 2,
    }
    assert [c.ready for c in built.readiness] == [False, True]
    assert built.readiness[0].failing[0].detail == "lag 9 s > 5 s"
    assert built.readiness_at_start is not None and built.readiness_at_start.ready
    # The JSON names the period's bounds `from` and `to`.
    assert set(built.model_dump(mode="json", by_alias=True)["period"]) == {"from", "to"}


@pytest.mark.skipif(
    backends()[0] != BACKEND,
    reason=f"independent of the database backend; runs in the {backends()[0]} pass only",
)
def test_the_pdf_reads_as_the_report(tmp_path: Path) -> None:
    data = pdf.render(report())
    # Invariant: the same report, the same bytes.
    assert pdf.render(report()) == data
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    text = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(text.split())
    assert "Evidence report: payments <eu> & co" in flat
    assert "2026-02-01 00:00:00.000 UTC to 2026-03-31 22:00:00.000 UTC" in flat
    assert (
        flat.index("failover op_slow")
        < flat.index("failback op_failed")
        < flat.index("drill op_drill")
    )
    assert "75.250 s" in flat and "MISSED" in flat
    assert "rejected approve by token:alice (tok_2)" in flat and "not during the freeze" in flat
    assert "data loss 4096 bytes, 7.500 s" in flat
    assert "Step failed: switch: HTTP 500" in flat
    assert "lag 9 s > 5 s" in flat and "NOT READY" in flat
    assert "At the start of the period: ready" in flat
    # The drill's findings.
    assert "2.500 s against 60.000 s: met" in flat
    assert "preflight/check: standby 9 s behind" in flat
    assert "preflight succeeded probe" in flat and "tidy succeeded cleanup" in flat


@pytest.mark.parametrize(
    ("start", "end", "wanted"),
    [
        ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00z", (datetime(2026, 1, 1, tzinfo=UTC), 1)),
        (
            "2026-01-01t00:00:00.5+01:00",
            None,
            (datetime(2025, 12, 31, 23, 0, 0, 500000, UTC), None),
        ),
        # An unencoded `+` in a query string arrives as a space.
        ("2026-01-01T00:00:00 01:00", None, (datetime(2025, 12, 31, 23, tzinfo=UTC), None)),
        (None, "2026-04-01T00:00:00Z", (datetime(2026, 1, 1, tzinfo=UTC), 90)),
    ],
)
def test_periods(start: str | None, end: str | None, wanted: tuple[datetime, int | None]) -> None:
    now = datetime(2026, 3, 15, tzinfo=UTC)
    span = service.period(start, end, now=now)
    assert span.from_ == wanted[0]
    if wanted[1] is not None:
        assert (span.to - span.from_).days == wanted[1]
    else:
        assert span.to == now


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-01-01", None),
        ("2026-01-01T00:00:00", None),
        ("2026-13-01T00:00:00Z", None),
        ("9999-12-31T23:59:59-23:59", None),
        (None, "0001-01-02T00:00:00Z"),
        ("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"),
        ("2025-01-01T00:00:00Z", "2026-01-02T00:00:01Z"),
    ],
)
def test_bad_periods(start: str | None, end: str | None) -> None:
    with pytest.raises(ValidationFailed):
        service.period(start, end, now=datetime(2026, 3, 15, tzinfo=UTC))


@pytest.mark.parametrize(
    ("accept", "served"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/pdf", "application/pdf"),
        ("APPLICATION/PDF; q=1", "application/pdf"),
        ("application/*;q=0.9, application/pdf", "application/pdf"),
        ("application/pdf;q=0.9, */*", "application/json"),
        ("text/html, */*;q=0.1", "application/json"),
        ("text/html", None),
        ("application/json;q=0, application/pdf;q=oops", None),
    ],
)
def test_negotiation(accept: str | None, served: str | None) -> None:
    if served is None:
        with pytest.raises(Exception, match="served as application/json or application/pdf"):
            negotiate(accept)
    else:
        assert negotiate(accept) == served
