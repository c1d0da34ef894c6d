"""GET /v1/clusters/{id}/report: the evidence report of a pair, as JSON or as a PDF."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.access.auth import Viewer
from app.deps import ClusterId, SessionDep
from app.errors import NotAcceptable
from app.problems import problems
from app.reports import pdf, service
from app.reports.schemas import EvidenceReport

router = APIRouter(tags=["reports"])

JSON, PDF = "application/json", "application/pdf"
# What the route serves, in the order it prefers when the client has no preference.
SERVED = (JSON, PDF)


def _timestamp(alias: str, what: str) -> object:
    return Query(
        alias=alias,
        max_length=64,
        json_schema_extra={"format": "date-time"},
        description=f"{what}: RFC 3339, with its offset (e.g. 2026-01-31T00:00:00Z).",
    )


From = Annotated[
    str | None, _timestamp("from", "The period's first instant (default: `to` - 90 days)")
]
To = Annotated[str | None, _timestamp("to", "The instant the period ends, excluded (default: now)")]


def negotiate(accept: str | None) -> str:
    """The media type to answer with (RFC 9110 section 12.5.1): the served type the client
    weighs highest, JSON on a tie or without Accept; 406 when it accepts neither."""
    if accept is None or not accept.strip():
        return JSON
    best: tuple[float, int, str] | None = None
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        media = media.lower()
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        for rank, served in enumerate(SERVED):
            kind = served.split("/")[0]
            # An exact type outranks a wildcard of the same weight (a lower number wins).
            precise = 0 if media == served else 1 if media in (f"{kind}/*", "*/*") else None
            if precise is None:
                continue
            candidate = (-q, precise * len(SERVED) + rank, served)
            if best is None or candidate < best:
                best = candidate
    if best is None:
        raise NotAcceptable(
            f"this report is served as {' or '.join(SERVED)}; Accept was {accept!r}",
            available=list(SERVED),
        )
    return best[2]


@router.get(
    "/v1/clusters/{cluster_id}/report",
    response_model=EvidenceReport,
    summary="The pair's evidence report: its operations, objectives and readiness over a period",
    description="Every failover, failback, drill and deployment retry created in the period "
    "(at or after `from`, before `to`), oldest first: who asked and who approved, each "
    "step's timing, the measured RTO and data loss against the pair's targets, and the "
    "readiness changes. Without `from` and `to`: the 90 days up to now; a period is at "
    "most 366 days (422 otherwise, as for `from` not before `to` or a value that is not "
    "RFC 3339). JSON by default; `Accept: application/pdf` gives the same report as a PDF "
    "(406 when Accept names neither).",
    responses={
        200: {
            "description": "The report: JSON, or a PDF with `Accept: application/pdf`",
            "content": {PDF: {"schema": {"type": "string", "format": "binary"}}},
        },
        **problems(404, 406, 422),
    },
)
async def get_pair_report(
    cluster_id: ClusterId,
    request: Request,
    session: SessionDep,
    principal: Viewer,
    from_: From = None,
    to: To = None,
) -> Response:
    media = negotiate(request.headers.get("accept"))
    span = service.period(from_, to)
    report = await service.build(session, principal.org_id, cluster_id, span)
    headers = {"Vary": "Accept"}
    if media == PDF:
        day = "%Y%m%dT%H%M%SZ"
        name = f"{report.pair.name}-{span.from_.strftime(day)}-{span.to.strftime(day)}.pdf"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
        # reportlab works on the CPU: off the event loop.
        body = await run_in_threadpool(pdf.render, report)
        return Response(body, media_type=PDF, headers=headers)
    return Response(report.model_dump_json(by_alias=True), media_type=JSON, headers=headers)
