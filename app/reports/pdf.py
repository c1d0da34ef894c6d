"""The evidence report as a PDF (reportlab), for an auditor to read and file.

The same report as the JSON (app.reports.schemas.EvidenceReport), laid out: the pair and
the period, a summary, then one section per operation (who asked and approved, the
objectives against what was measured, a table of its steps with their timings), then the
readiness history. Built with reportlab's invariant mode and the PDF core fonts: the same
report gives the same bytes, and its text can be extracted (pdftotext) and tested.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import (
    CondPageBreak,
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from app.operations.schemas import DrillReport
from app.reports.schemas import EvidenceReport, Objective, ReadinessChange, ReportOperation
from app.reports.service import SWITCHES

FONT, BOLD = "Helvetica", "Helvetica-Bold"
MARGIN = 15 * mm
WIDTH = A4[0] - 2 * MARGIN

TITLE = ParagraphStyle("title", fontName=BOLD, fontSize=16, leading=20, spaceAfter=4)
HEADING = ParagraphStyle("heading", fontName=BOLD, fontSize=12, leading=15, spaceBefore=8)
SUBHEADING = ParagraphStyle("subheading", fontName=BOLD, fontSize=10, leading=13, spaceBefore=6)
BODY = ParagraphStyle("body", fontName=FONT, fontSize=9, leading=11.5, alignment=TA_LEFT)
CELL = ParagraphStyle("cell", fontName=FONT, fontSize=8, leading=10)
CELL_BOLD = ParagraphStyle("cell-bold", parent=CELL, fontName=BOLD)

GRID = TableStyle(
    [
        ("FONTNAME", (0, 0), (-1, -1), FONT),
        ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8e8e8")),
        ("TOPPADDING", (0, 0), (-1, -1), 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
    ]
)
# Label-value tables: the labels in the first column, shaded.
FIELDS = TableStyle(
    [
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#f2f2f2")),
        ("TOPPADDING", (0, 0), (-1, -1), 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
    ]
)
OUTCOME_COLOURS = {"met": colors.HexColor("#1b7a1b"), "MISSED": colors.HexColor("#b00020")}


def when(value: datetime | None) -> str:
    """A time as an auditor reads it: UTC, to the millisecond."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def target(value: float | None) -> str:
    return "none set" if value is None else seconds(value)


def outcome(objective: Objective) -> str:
    if objective.met is None:
        return "no target" if objective.target_s is None else "not measured"
    return "met" if objective.met else "MISSED"


def _text(value: Any, style: ParagraphStyle = CELL) -> Paragraph:
    """A cell or line that wraps; what people typed (a reason, a comment) is escaped."""
    return Paragraph(escape("-" if value is None or value == "" else str(value)), style)


def _fields(rows: list[tuple[str, Any]], label_width: float = 32 * mm) -> Table:
    table = Table(
        [[_text(label, CELL_BOLD), _text(value)] for label, value in rows],
        colWidths=[label_width, WIDTH - label_width],
    )
    table.setStyle(FIELDS)
    return table


def _grid(header: list[str], rows: list[list[Any]], widths: list[float]) -> Table:
    cells = [[_text(h, CELL_BOLD) for h in header]]
    cells += [[v if isinstance(v, Flowable) else _text(v) for v in row] for row in rows]
    table = Table(cells, colWidths=widths, repeatRows=1)
    table.setStyle(GRID)
    return table


def _pair(report: EvidenceReport) -> list[Flowable]:
    pair = report.pair

    def site(s: Any) -> str:
        return f"{s.name} in {s.region} ({s.cloud})"

    return [
        Paragraph("The pair", HEADING),
        _fields(
            [
                ("Pair", f"{pair.name} ({pair.id})"),
                ("Primary", site(pair.primary)),
                ("Secondary", site(pair.secondary)),
                ("RTO target", target(pair.rto_target_s)),
                ("RPO target", target(pair.rpo_target_s)),
            ]
        ),
    ]


def _summary(report: EvidenceReport) -> list[Flowable]:
    summary = report.summary

    def counts(found: dict[str, int]) -> str:
        return ", ".join(f"{name}: {n}" for name, n in sorted(found.items())) or "none"

    return [
        Paragraph("Summary", HEADING),
        _fields(
            [
                ("Operations", str(summary.operations)),
                ("By kind", counts(summary.by_kind)),
                ("By status", counts(summary.by_status)),
                ("RTO", f"met {summary.rto_met}, missed {summary.rto_missed}"),
                ("RPO", f"met {summary.rpo_met}, missed {summary.rpo_missed}"),
                ("Readiness changes", str(summary.readiness_changes)),
            ]
        ),
    ]


def _objective_row(name: str, objective: Objective, extra: str = "") -> list[Any]:
    verdict = outcome(objective)
    style = ParagraphStyle(
        f"outcome-{verdict}",
        parent=CELL_BOLD,
        textColor=OUTCOME_COLOURS.get(verdict, colors.black),
    )
    breaches = "; ".join(
        f"breached at {when(b.at)}: {seconds(b.measured_s)} over {seconds(b.target_s)}"
        for b in objective.breaches
    )
    notes = " ".join(part for part in (extra, breaches) if part)
    return [
        name,
        seconds(objective.target_s),
        seconds(objective.measured_s),
        _text(verdict, style),
        notes or "-",
    ]


def _operation(operation: ReportOperation) -> list[Flowable]:
    title = f"{operation.kind} {operation.id}: {operation.status}"
    decisions = "; ".join(
        f"{'approved' if d.approved else 'rejected'} {d.step} by {d.decided_by} at "
        f"{when(d.decided_at)}" + (f" ({d.comment})" if d.comment else "")
        for d in operation.decisions
    )
    fields = [
        ("Mode", operation.mode or "-"),
        ("Requested by", operation.requested_by),
        ("Approved by", ", ".join(operation.approved_by) or "no approval step"),
        ("Reason", operation.reason),
        ("Created", when(operation.created_at)),
        ("Started", when(operation.started_at)),
        ("Finished", when(operation.finished_at)),
        ("Duration", seconds(operation.duration_s)),
    ]
    if decisions:
        fields.append(("Decisions", decisions))
    if operation.batch_id:
        fields.append(("Batch", operation.batch_id))
    if operation.error:
        fields.append(("Error", operation.error))
    if operation.needs_attention:
        fields.append(("Needs attention", "yes: left the pair mid-switch"))
    loss = operation.data_loss or {}
    lost = (
        f"data loss {loss.get('bytes', '-')} bytes, {seconds(loss.get('seconds'))}"
        if operation.data_loss
        else ""
    )
    objectives: Flowable = _grid(
        ["Objective", "Target", "Measured", "Result", "Notes"],
        [
            _objective_row("RTO", operation.rto),
            _objective_row("RPO (data loss)", operation.rpo, lost),
        ],
        [28 * mm, 24 * mm, 24 * mm, 26 * mm, WIDTH - 102 * mm],
    )
    steps = _steps(operation)
    if operation.kind not in SWITCHES:
        # A drill or a deployment retry moves nothing: no recovery time or data loss.
        objectives = _text(f"A {operation.kind} switches nothing: no RTO or RPO to measure.")
    if operation.drill is not None and operation.expected_rto is not None:
        objectives = _drill(operation.drill, operation.expected_rto)
    return [
        CondPageBreak(60 * mm),
        KeepTogether([Paragraph(escape(title), SUBHEADING), Spacer(1, 2), _fields(fields)]),
        Spacer(1, 3),
        objectives,
        Spacer(1, 3),
        steps,
    ]


def _steps(operation: ReportOperation) -> Table:
    """Each step's timing; a drill's say how they were rehearsed (its drill action, a
    probe, skipped, cleanup) instead of their attempts."""
    drill = operation.drill
    third, value = ("Attempts", lambda s: str(s.attempts))
    if drill is not None:
        rehearsal = {r.name: r.rehearsal for r in drill.steps + drill.cleanup}
        third, value = ("Rehearsal", lambda s: rehearsal.get(s.name, "-"))
    return _grid(
        ["Step", "Status", third, "Started", "Finished", "Duration"],
        [
            [
                s.name,
                s.status,
                value(s),
                when(s.started_at),
                when(s.finished_at),
                seconds(s.duration_s),
            ]
            for s in operation.steps
        ],
        [32 * mm, 18 * mm, 18 * mm, 47 * mm, 47 * mm, WIDTH - 162 * mm],
    )


def _drill(drill: DrillReport, expected: Objective) -> Flowable:
    """What a drill found: its expected RTO against the target, what it could not measure,
    the readiness checks that failed and the replication lag it saw."""
    lag = drill.replication_lag
    failing = [f"{c.step}/{c.name}: {c.detail}" for c in drill.readiness if not c.ok]
    return _grid(
        ["Drill", "Found"],
        [
            ["Outcome", drill.outcome or "not finished"],
            [
                "Expected RTO",
                f"{seconds(expected.measured_s)} against {target(expected.target_s)}: "
                f"{outcome(expected)}",
            ],
            ["Not measured", ", ".join(drill.unmeasured_steps) or "-"],
            ["Failed step", drill.failed_step or "-"],
            ["Failing checks", "; ".join(failing) or "-"],
            [
                "Replication lag",
                f"{lag.get('bytes')} bytes, {seconds(lag.get('seconds'))} ({lag.get('step')})"
                if lag
                else "not measured",
            ],
        ],
        [32 * mm, WIDTH - 32 * mm],
    )


def _change(change: ReadinessChange) -> list[Any]:
    failing = "; ".join(f"{c.step}/{c.name}: {c.detail}" for c in change.failing)
    return [when(change.at), "ready" if change.ready else "NOT READY", failing or "-"]


def _readiness(report: EvidenceReport) -> list[Flowable]:
    start = report.readiness_at_start
    opening = (
        f"At the start of the period: {'ready' if start.ready else 'not ready'} "
        f"(since {when(start.at)})."
        if start is not None
        else "At the start of the period: no readiness change recorded before it."
    )
    found: list[Flowable] = [
        CondPageBreak(40 * mm),
        Paragraph("Readiness history", HEADING),
        _text(opening, BODY),
        Spacer(1, 3),
    ]
    if report.readiness:
        found.append(
            _grid(
                ["Time", "Readiness", "Failing checks"],
                [_change(c) for c in report.readiness],
                [47 * mm, 22 * mm, WIDTH - 69 * mm],
            )
        )
    else:
        found.append(_text("No change of readiness in the period.", BODY))
    return found


def render(report: EvidenceReport) -> bytes:
    """The report as PDF bytes (the same report gives the same bytes)."""
    buffer = io.BytesIO()
    title = f"Evidence report: {report.pair.name}"
    span = f"{when(report.period.from_)} to {when(report.period.to)}"

    def footer(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(FONT, 7)
        canvas.drawString(MARGIN, 8 * mm, f"Tandem evidence report - {report.pair.name} - {span}")
        canvas.drawRightString(A4[0] - MARGIN, 8 * mm, f"page {doc.page}")
        canvas.restoreState()

    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN + 4 * mm,
        title=title,
        subject=f"Failovers, failbacks and drills from {span}",
        author="Tandem",
        creator="Tandem",
        invariant=True,
    )
    story: list[Flowable] = [
        _text(title, TITLE),
        _text(f"Period: {span}, its end excluded (operations by their creation).", BODY),
        _text(f"Generated at {when(report.generated_at)}.", BODY),
        *_pair(report),
        *_summary(report),
        Paragraph("Operations", HEADING),
    ]
    if report.operations:
        for operation in report.operations:
            story.extend(_operation(operation))
    else:
        story.append(_text("No failover, failback, drill or deployment retry in the period.", BODY))
    story.extend(_readiness(report))
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()
