"""Traces of operations over OTLP/HTTP, when TANDEM_OTLP_ENDPOINT is set: an operation is a
trace, each step that ran a span under it, so a tracing tool shows where a failover spent
its time.

No span lives across calls: an operation can move between workers (one dies, another takes
over; a waiting step parks it and any worker resumes it), so the whole trace is built when
the operation ends, from the start and end of every step that OperationEnded carries, each
span given its recorded times.

Ids are derived, not drawn: the trace id from the operation id alone, so an operation that
ends a second time (an operator retried it) adds to the same trace; the span ids from the
operation id and that ending's `finished_at`, so each ending is a root span of its own with
its steps under it, and the same ending exported twice is the same spans, not new ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import Status, StatusCode

from app.config import Settings
from app.operations import observe

log = logging.getLogger("tandem.tracing")

SERVICE_NAME = "tandem"
SCOPE = "tandem.operations"
TRACES_PATH = "/v1/traces"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class OperationIds(IdGenerator):
    """The ids the caller planned for the next span (`planned`); random ones otherwise."""

    def __init__(self) -> None:
        self._planned: ContextVar[tuple[int, int] | None] = ContextVar(
            "tandem_planned_span_ids", default=None
        )
        self._random = RandomIdGenerator()

    @contextmanager
    def planned(self, trace_id: int, span_id: int) -> Iterator[None]:
        token = self._planned.set((trace_id, span_id))
        try:
            yield
        finally:
            self._planned.reset(token)

    def generate_trace_id(self) -> int:
        planned = self._planned.get()
        return planned[0] if planned else self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        planned = self._planned.get()
        return planned[1] if planned else self._random.generate_span_id()


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(("tandem", *parts)).encode()).digest()


def trace_id_of(operation_id: str) -> int:
    """The operation's trace id: 128 bits of a hash of its id (never 0, the invalid id)."""
    return int.from_bytes(_digest("trace", operation_id)[:16], "big") or 1


def span_id_of(operation_id: str, ending: str, part: str) -> int:
    """A span's id: 64 bits of a hash of the operation, the ending and the part ("operation"
    or a step's position)."""
    return int.from_bytes(_digest("span", operation_id, ending, part)[:8], "big") or 1


def nanoseconds(moment: datetime) -> int:
    """Nanoseconds since the epoch, exactly (a naive datetime is UTC, as SQLite returns it)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def new_provider(processor: SpanProcessor, ids: OperationIds) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": SERVICE_NAME}),
        id_generator=ids,
        shutdown_on_exit=False,
    )
    provider.add_span_processor(processor)
    return provider


def record(tracer: trace.Tracer, ids: OperationIds, event: observe.OperationEnded) -> None:
    """The operation's trace: a root span named after its kind, from its creation to its end,
    and under it one span per step that started, each with its recorded start and end."""
    op_id = event.operation_id
    trace_id = trace_id_of(op_id)
    ending = event.finished_at.isoformat() if event.finished_at else "unfinished"
    ran = [step for step in event.steps if step.get("started_at") is not None]
    finishes = [step["finished_at"] for step in ran if step.get("finished_at") is not None]
    start = nanoseconds(event.created_at)
    end = nanoseconds(event.finished_at or max(finishes, default=event.created_at))
    common: dict[str, Any] = {
        "tandem.org.id": event.org_id,
        "tandem.pair.id": event.cluster_id,
        "tandem.operation.id": op_id,
        "tandem.operation.kind": event.kind,
        "tandem.operation.mode": event.mode or "",
        "tandem.source.region": event.source_region,
        "tandem.target.region": event.target_region,
    }
    with ids.planned(trace_id, span_id_of(op_id, ending, "operation")):
        root = tracer.start_span(
            event.kind,
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            attributes={
                **common,
                "tandem.outcome": event.outcome,
                "tandem.operation.needs_attention": event.needs_attention,
                "tandem.operation.steps": len(event.steps),
            },
            start_time=start,
        )
    if event.started_at is not None:
        # Time before it is time in the queue.
        root.add_event("started", timestamp=nanoseconds(event.started_at))
    parent = trace.set_span_in_context(root)
    failed_codes: list[str] = []
    for index, step in enumerate(event.steps):
        if step.get("started_at") is None:
            continue  # never ran (pending, or skipped before it started)
        step_start = nanoseconds(step["started_at"])
        step_end = nanoseconds(step["finished_at"]) if step.get("finished_at") else end
        attributes = {
            **common,
            "tandem.step.name": str(step["name"]),
            "tandem.step.index": index,
            "tandem.step.actions": [str(a) for a in step.get("actions") or ()],
            "tandem.outcome": str(step["status"]),
        }
        if step.get("error_code"):
            attributes["tandem.error.code"] = str(step["error_code"])
        with ids.planned(trace_id, span_id_of(op_id, ending, str(index))):
            span = tracer.start_span(
                str(step["name"]), context=parent, attributes=attributes, start_time=step_start
            )
        if step["status"] == "failed":
            code = str(step.get("error_code") or "step_failed")
            failed_codes.append(code)
            span.set_status(Status(StatusCode.ERROR, code))
        elif step["status"] == "succeeded":
            span.set_status(Status(StatusCode.OK))
        span.end(end_time=max(step_start, step_end))
    if event.outcome == "succeeded":
        root.set_status(Status(StatusCode.OK))
    elif event.outcome == "failed":
        root.set_status(Status(StatusCode.ERROR, failed_codes[-1] if failed_codes else "failed"))
    root.end(end_time=max(start, end))


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector's base URL (as OTEL_EXPORTER_OTLP_ENDPOINT)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


class _Exporting:
    def __init__(self, provider: TracerProvider, ids: OperationIds) -> None:
        self.provider = provider
        self.ids = ids
        self.tracer = provider.get_tracer(SCOPE)

    async def operation_ended(self, event: observe.OperationEnded) -> None:
        # Spans are only queued here; the batch processor's thread sends them.
        record(self.tracer, self.ids, event)


_installed: _Exporting | None = None


def install(settings: Settings) -> bool:
    """Export a trace of every operation this process ends, if TANDEM_OTLP_ENDPOINT is set.
    Headers, timeout, compression and batching follow the standard OTEL_EXPORTER_OTLP_* and
    OTEL_BSP_* variables."""
    global _installed
    if not settings.otlp_endpoint or _installed is not None:
        return False
    ids = OperationIds()
    exporter = OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint))
    _installed = _Exporting(new_provider(BatchSpanProcessor(exporter), ids), ids)
    observe.OPERATION_OBSERVERS.append(_installed.operation_ended)
    log.info("operation traces go to %s", traces_url(settings.otlp_endpoint))
    return True


async def shutdown() -> None:
    """Send what is queued (bounded by the exporter's timeout) and stop exporting."""
    global _installed
    exporting, _installed = _installed, None
    if exporting is None:
        return
    observe.OPERATION_OBSERVERS.remove(exporting.operation_ended)
    await asyncio.to_thread(exporting.provider.shutdown)
