"""Metrics counted by the process that did the work (DESIGN.md section 11): operation and
step durations, step timeouts, webhook deliveries, HTTP requests. Each sample carries an
`org` label; a scrape shows its token's organization only (`OrgView`), the API on its
port, a worker on its health port.

The executor reports ended steps and operations through app.operations.observe; this
module registers its observers there when it is imported (app.metrics.api in the API,
app.health.worker in a worker).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.metrics_core import Metric

from app.operations import observe

# The `_created` series double every counter's and histogram's output and say nothing a
# dashboard here uses.
disable_created_metrics()

REGISTRY = CollectorRegistry(auto_describe=True)

OPERATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
STEP_BUCKETS = (0.05, 0.25, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

OPERATION_DURATION = Histogram(
    "tandem_operation_duration_seconds",
    "Ended operations, from creation to the end (queueing included), by kind, mode "
    "(empty for kinds without one) and outcome (succeeded, failed, cancelled)",
    ["org", "kind", "mode", "outcome"],
    buckets=OPERATION_BUCKETS,
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "tandem_step_duration_seconds",
    "Ended steps, from their start to their end, by step, action (the action kinds the "
    "step ran, comma-separated) and outcome (succeeded, failed, rolled_back)",
    ["org", "step", "action", "outcome"],
    buckets=STEP_BUCKETS,
    registry=REGISTRY,
)
STEP_TIMEOUTS = Counter(
    "tandem_step_timeouts_total",
    "Steps that failed because their timeout (or an approval's deadline) passed",
    ["org", "step"],
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "tandem_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: succeeded (a 2xx answer) or failed (any other "
    "answer, or none)",
    ["org", "outcome"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "tandem_http_requests_total",
    "HTTP requests answered, by method, route template and status",
    ["org", "method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "tandem_http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of its body), by method and route template",
    ["org", "method", "route"],
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)

TIMED_OUT = "step_timed_out"

# The standard process_* and python_* families of the process that answers the scrape
# (they hold nothing of any organization).
RUNTIME = CollectorRegistry()
ProcessCollector(registry=RUNTIME)
PlatformCollector(registry=RUNTIME)
GCCollector(registry=RUNTIME)


def webhook_delivered(org_id: str, ok: bool) -> None:
    WEBHOOK_DELIVERIES.labels(org_id, "succeeded" if ok else "failed").inc()


async def step_ended(event: observe.StepEnded) -> None:
    if event.started_at is not None and event.finished_at is not None:
        seconds = max((event.finished_at - event.started_at).total_seconds(), 0.0)
        action = ",".join(dict.fromkeys(event.actions))
        STEP_DURATION.labels(event.org_id, event.step, action, event.outcome).observe(seconds)
    if event.error_code == TIMED_OUT:
        STEP_TIMEOUTS.labels(event.org_id, event.step).inc()


async def operation_ended(event: observe.OperationEnded) -> None:
    if event.finished_at is None:
        return
    seconds = max((event.finished_at - event.created_at).total_seconds(), 0.0)
    OPERATION_DURATION.labels(event.org_id, event.kind, event.mode or "", event.outcome).observe(
        seconds
    )


def _register() -> None:
    if step_ended not in observe.STEP_OBSERVERS:
        observe.STEP_OBSERVERS.append(step_ended)
    if operation_ended not in observe.OPERATION_OBSERVERS:
        observe.OPERATION_OBSERVERS.append(operation_ended)


_register()


class OrgView:
    """A collector for one scrape: the process-counted families with only `org_id`'s
    samples (every family, even one with none yet), then whatever `extra` yields."""

    def __init__(self, org_id: str, extra: Iterable[Metric] = ()) -> None:
        self.org_id = org_id
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        yield from self.extra
        for family in REGISTRY.collect():
            mine = Metric(family.name, family.documentation, family.type, family.unit)
            mine.samples = [s for s in family.samples if s.labels.get("org") == self.org_id]
            yield mine
        yield from RUNTIME.collect()
