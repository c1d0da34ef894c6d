"""Traces: an operation is a trace, each step that ran a span under its root.

The trace-building function alone, into the SDK's in-memory exporter; then a real worker
with TANDEM_OTLP_ENDPOINT pointed at a loopback collector (a plain HTTP server decoding
the OTLP protobuf), carrying out real failovers.
"""

from __future__ import annotations

import gzip
import signal
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from app.config import Settings
from app.operations import tracing
from app.operations.observe import OperationEnded
from tests.backends import backends
from tests.conftest import BACKEND
from tests.helpers import create_cluster, start_ok, wait_done, wait_for
from tests.stack import Process, Stack

_FIRST_BACKEND = backends()[0]
on_first_backend_only = pytest.mark.skipif(
    _FIRST_BACKEND != BACKEND,
    reason=f"independent of the database backend; runs in the {_FIRST_BACKEND} pass only",
)

STEPS = [
    "preflight",
    "pause_schedulers",
    "drain_replication",
    "promote_target",
    "switch_traffic",
    "validate_deployments",
    "resume_schedulers",
]


# --- The trace-building function alone ---------------------------------------------------


def ended(**changes: Any) -> OperationEnded:
    t0 = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    steps = []
    for n, name in enumerate(STEPS):
        ran = n < 5  # the last two never started
        steps.append(
            {
                "name": name,
                "actions": ["simulated"] if name != "validate_deployments" else ["deployments"],
                "status": ("succeeded" if n < 4 else "failed") if ran else "pending",
                "started_at": t0 + timedelta(seconds=1 + 2 * n) if ran else None,
                "finished_at": t0 + timedelta(seconds=2 + 2 * n) if ran else None,
                "error_code": "step_failed" if n == 4 else None,
            }
        )
    fields: dict[str, Any] = {
        "org_id": "org_1",
        "cluster_id": "cls_1",
        "operation_id": "op_1",
        "kind": "failover",
        "mode": "planned",
        "outcome": "failed",
        "needs_attention": True,
        "created_at": t0,
        "started_at": t0 + timedelta(milliseconds=500),
        "finished_at": t0 + timedelta(seconds=11),
        "steps": tuple(steps),
        "source_region": "us-east-1",
        "target_region": "us-west-2",
    }
    return OperationEnded(**{**fields, **changes})


def built(event: OperationEnded) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    ids = tracing.OperationIds()
    provider = tracing.new_provider(SimpleSpanProcessor(exporter), ids)
    tracing.record(provider.get_tracer("test"), ids, event)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def test_the_trace_of_an_ended_operation() -> None:
    event = ended()
    spans = built(event)
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 1
    root = roots[0]
    children = sorted((s for s in spans if s.parent is not None), key=lambda s: s.start_time or 0)
    # The steps that started, in order; the two that never did have no span.
    assert [s.name for s in children] == STEPS[:5]
    assert root.name == "failover"
    assert root.context is not None and root.context.trace_id == tracing.trace_id_of("op_1")
    assert root.resource.attributes["service.name"] == "tandem"
    for child in children:
        assert child.context is not None and child.parent is not None
        assert child.context.trace_id == root.context.trace_id
        assert child.parent.span_id == root.context.span_id
    assert root.start_time == ns(event.created_at) and root.end_time == ns(event.finished_at)
    assert [e.name for e in root.events] == ["started"]
    assert root.events[0].timestamp == ns(event.started_at)  # type: ignore[arg-type]
    for child, step in zip(children, event.steps, strict=False):
        assert child.start_time == ns(step["started_at"])
        assert child.end_time == ns(step["finished_at"])
    assert dict(root.attributes or {}) == {
        "tandem.org.id": "org_1",
        "tandem.pair.id": "cls_1",
        "tandem.operation.id": "op_1",
        "tandem.operation.kind": "failover",
        "tandem.operation.mode": "planned",
        "tandem.source.region": "us-east-1",
        "tandem.target.region": "us-west-2",
        "tandem.outcome": "failed",
        "tandem.operation.needs_attention": True,
        "tandem.operation.steps": 7,
    }
    failed = children[4].attributes or {}
    assert failed["tandem.step.name"] == "switch_traffic" and failed["tandem.step.index"] == 4
    assert failed["tandem.outcome"] == "failed" and failed["tandem.error.code"] == "step_failed"
    assert tuple(failed["tandem.step.actions"]) == ("simulated",)  # type: ignore[arg-type]
    assert failed["tandem.pair.id"] == "cls_1" and failed["tandem.target.region"] == "us-west-2"
    assert children[4].status.status_code is StatusCode.ERROR
    assert children[4].status.description == "step_failed"
    assert {c.status.status_code for c in children[:4]} == {StatusCode.OK}
    assert root.status.status_code is StatusCode.ERROR


def test_trace_ids_are_derived_from_the_operation() -> None:
    def ids(spans: list[ReadableSpan]) -> list[tuple[int, int]]:
        return sorted((s.context.trace_id, s.context.span_id) for s in spans if s.context)

    first = built(ended())
    # The same ending exported again: the very same spans.
    assert ids(built(ended())) == ids(first)
    # The operation ending a second time (retried): the same trace, a root of its own.
    later = built(ended(outcome="succeeded", finished_at=datetime(2031, 5, 6, 8, tzinfo=UTC)))
    assert {t for t, _ in ids(later)} == {t for t, _ in ids(first)} == {tracing.trace_id_of("op_1")}
    assert not {s for _, s in ids(later)} & {s for _, s in ids(first)}
    # Another operation: another trace.
    other = built(ended(operation_id="op_2"))
    assert {t for t, _ in ids(other)} == {tracing.trace_id_of("op_2")} != {t for t, _ in ids(first)}


def test_an_operation_that_never_started_is_a_root_span_alone() -> None:
    steps = tuple({**s, "started_at": None, "finished_at": None} for s in ended().steps)
    spans = built(ended(steps=steps, started_at=None, outcome="cancelled"))
    assert len(spans) == 1 and spans[0].parent is None and spans[0].events == ()
    assert spans[0].status.status_code is StatusCode.UNSET


def test_times_are_exact_nanoseconds_and_naive_ones_are_utc() -> None:
    moment = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert tracing.nanoseconds(moment) == 1_935_817_689_123_456_000
    assert tracing.nanoseconds(moment.replace(tzinfo=None)) == tracing.nanoseconds(moment)


def test_the_endpoint_setting() -> None:
    assert tracing.traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert tracing.traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert tracing.traces_url("https://c/otlp/v1/traces") == "https://c/otlp/v1/traces"
    assert Settings(otlp_endpoint="").otlp_endpoint == ""
    with pytest.raises(ValueError):
        Settings(otlp_endpoint="collector:4318")
    assert tracing.install(Settings(otlp_endpoint=None)) is False


# --- A real worker and a loopback collector ----------------------------------------------


class Collector:
    """A plain HTTP server answering POST /v1/traces, keeping every decoded request."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with collector.lock:
                    collector.requests.append(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self, operation_id: str) -> list[Received]:
        with self.lock:
            requests = list(self.requests)
        found = []
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        attrs = attributes(span.attributes)
                        if attrs.get("tandem.operation.id") == operation_id:
                            found.append(Received(span, attrs, resource))
        return found

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Received:
    span: Span
    attributes: dict[str, Any]
    resource: dict[str, Any]


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: value(pair.value) for pair in pairs}


def at(text: str) -> int:
    return ns(datetime.fromisoformat(text.replace("Z", "+00:00")))


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    yield running
    running.stop()


@pytest.fixture
def traced_worker(live_stack: Stack, collector: Collector) -> Iterator[Process]:
    """The only worker for the test's duration, exporting to the collector (the stack's
    workers, which would take the jobs too, are stopped and started again afterwards)."""
    for worker in live_stack.live_workers():
        worker.kill(signal.SIGTERM)
    worker = live_stack.start_worker(
        TANDEM_OTLP_ENDPOINT=collector.url,
        # The batch processor sends after 100 ms, not the default 5 s.
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    try:
        yield worker
    finally:
        worker.kill(signal.SIGTERM)
        live_stack.ensure_workers()


async def received(collector: Collector, operation_id: str, count: int) -> list[Received]:
    async def arrived() -> list[Received]:
        spans = collector.spans(operation_id)
        return spans if len(spans) >= count else []

    spans: list[Received] = await wait_for(arrived, timeout_s=30, interval_s=0.1)
    return spans


def check_trace(spans: list[Received], operation: dict[str, Any], cluster: dict[str, Any]) -> None:
    """One root span (the operation) and one span per step, under it, in order."""
    roots = [r for r in spans if not r.span.parent_span_id]
    assert len(roots) == 1, [r.span.name for r in spans]
    root = roots[0]
    children = sorted(
        (r for r in spans if r.span.parent_span_id), key=lambda r: r.span.start_time_unix_nano
    )
    assert [r.span.name for r in children] == [s["name"] for s in operation["steps"]]
    assert root.span.name == operation["kind"]
    assert root.resource["service.name"] == "tandem"
    trace_id = tracing.trace_id_of(operation["id"]).to_bytes(16, "big")
    assert {r.span.trace_id for r in spans} == {trace_id}
    assert {r.span.parent_span_id for r in children} == {root.span.span_id}
    assert len({r.span.span_id for r in spans}) == len(spans)
    source, target = (
        (cluster["primary"], cluster["secondary"])
        if operation["kind"] == "failover"
        else (cluster["secondary"], cluster["primary"])
    )
    for r in spans:
        assert r.attributes["tandem.pair.id"] == cluster["id"]
        assert r.attributes["tandem.operation.kind"] == operation["kind"]
        assert r.attributes["tandem.operation.mode"] == operation["mode"]
        assert r.attributes["tandem.source.region"] == source["region"]
        assert r.attributes["tandem.target.region"] == target["region"]
    assert root.attributes["tandem.outcome"] == operation["status"]
    # Times: the root spans the operation; each step's span is its recorded run, in order.
    assert root.span.start_time_unix_nano == at(operation["created_at"])
    assert root.span.end_time_unix_nano == at(operation["finished_at"])
    assert [e.name for e in root.span.events] == ["started"]
    assert root.span.events[0].time_unix_nano == at(operation["started_at"])
    previous_end = root.span.start_time_unix_nano
    for r, step in zip(children, operation["steps"], strict=True):
        assert r.attributes["tandem.step.name"] == step["name"]
        assert r.attributes["tandem.outcome"] == step["status"]
        assert r.attributes["tandem.step.actions"] == ["simulated"]
        assert r.span.start_time_unix_nano == at(step["started_at"])
        assert r.span.end_time_unix_nano == at(step["finished_at"])
        assert previous_end <= r.span.start_time_unix_nano <= r.span.end_time_unix_nano
        previous_end = r.span.end_time_unix_nano
    assert previous_end <= root.span.end_time_unix_nano


@on_first_backend_only
async def test_each_operation_is_one_trace_with_a_span_per_step(
    client: httpx.AsyncClient, traced_worker: Process, collector: Collector
) -> None:
    cluster = await create_cluster(client, step_delay_ms=20)
    op = await start_ok(client, cluster["id"])
    done = await wait_done(client, op["id"])
    assert done["status"] == "succeeded", done
    assert len(done["steps"]) == 7
    spans = await received(collector, op["id"], 8)
    check_trace(spans, done, cluster)
    assert {r.span.status.code for r in spans} == {Status.STATUS_CODE_OK}

    # A failback of the same pair: a trace of its own, its regions the other way round.
    back = await start_ok(client, cluster["id"], "failback")
    back_done = await wait_done(client, back["id"])
    assert back_done["status"] == "succeeded", back_done
    check_trace(await received(collector, back["id"], 8), back_done, cluster)
    # The failover's trace arrived once: nothing more came for it since.
    assert len(collector.spans(op["id"])) == 8
    assert traced_worker.alive(), traced_worker.tail()


@on_first_backend_only
async def test_an_operation_ending_again_after_a_retry_stays_in_its_trace(
    client: httpx.AsyncClient, traced_worker: Process, collector: Collector
) -> None:
    # switch_traffic fails once, past the point of no return: failed, needs attention.
    cluster = await create_cluster(client, fail={"switch_traffic": 1})
    op = await start_ok(client, cluster["id"])
    failed = await wait_done(client, op["id"])
    assert failed["status"] == "failed" and failed["needs_attention"] is True, failed
    first = await received(collector, op["id"], 6)  # the root and five steps that ran
    assert len(first) == 6
    first_root = next(r for r in first if not r.span.parent_span_id)
    assert first_root.attributes["tandem.outcome"] == "failed"
    assert first_root.attributes["tandem.operation.needs_attention"] is True
    assert first_root.span.status.code == Status.STATUS_CODE_ERROR
    switch = next(r for r in first if r.span.name == "switch_traffic")
    assert switch.span.status.code == Status.STATUS_CODE_ERROR
    assert switch.attributes["tandem.outcome"] == "failed"
    assert "tandem.error.code" in switch.attributes

    retried = await client.post(f"/v1/operations/{op['id']}/retry")
    assert retried.status_code == 202, retried.text
    done = await wait_done(client, op["id"])
    assert done["status"] == "succeeded", done
    spans = await received(collector, op["id"], 6 + 8)
    assert len(spans) == 14
    # The second ending: the same trace id, a root of its own with every step under it.
    second = [r for r in spans if r.span.span_id not in {f.span.span_id for f in first}]
    assert len(second) == 8
    check_trace(second, done, cluster)
    assert {r.span.trace_id for r in spans} == {first_root.span.trace_id}
