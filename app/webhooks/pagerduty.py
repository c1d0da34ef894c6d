"""PagerDuty Events API v2 bodies for operation events.

trigger when a failover or failback starts or waits for an approval (warning), misses
its RTO or RPO target (error), fails or has a step pass its deadline (critical); resolve
when it succeeds or is cancelled. dedup_key is the
operation id, so one incident follows one operation from start to end. The operation
events of drills and deployment retries never page; a failed drill triggers a warning
through drill.finished (dedup_key: the drill's operation id).

A batch (a region's evacuation) is one incident of its own (dedup_key: the batch id), opened
at warning when it starts and resolved when it ends. Its operations open no incident each
when they start (one page for the region, not one per pair); a failure of one still pages
(operation.failed, critical).
"""

from __future__ import annotations

from typing import Any

from app.events.models import Event

EVENT_TYPES = frozenset(
    {
        "cluster.readiness_changed",
        "operation.created",
        "operation.approval_requested",
        "operation.failed",
        "operation.step_timed_out",
        "operation.rto_breached",
        "operation.rpo_breached",
        "operation.succeeded",
        "operation.cancelled",
        "batch.created",
        "batch.finished",
        "drill.finished",
    }
)
# Their operation.* events never page (DESIGN.md section 5); a drill pages only through a
# failed drill.finished.
QUIET_KINDS = frozenset({"drill", "retry_deployments"})
CRITICAL = frozenset({"operation.failed", "operation.step_timed_out"})
ERROR = frozenset({"operation.rto_breached", "operation.rpo_breached"})


def _readiness(event: Event, routing_key: str) -> dict[str, Any]:
    """Not ready: a warning that stays open until the pair is ready again (resolve)."""
    dedup = f"ready:{event.cluster_id}"
    if event.data.get("ready"):
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup}
    failing = ", ".join(f"{c.get('step')}/{c.get('name')}" for c in event.data.get("failing", []))
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup,
        "payload": {
            "summary": f"Tandem: DR pair {event.cluster_id} is not ready: {failing}"[:1024],
            "source": f"tandem/{event.cluster_id}",
            "severity": "warning",
            "component": str(event.cluster_id),
            "group": "disaster-recovery",
            "class": event.type,
            "timestamp": event.created_at.isoformat(),
            "custom_details": {"event_id": event.id, "sequence": event.sequence, **event.data},
        },
    }


def _batch(event: Event, routing_key: str) -> dict[str, Any]:
    data = event.data
    dedup = str(data.get("batch_id"))
    if event.type == "batch.finished":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup}
    summary = (
        f"Tandem: evacuating region {data.get('region')}: {data.get('to_start')} pair(s) "
        f"to move, {data.get('skipped')} skipped (batch {dedup})"
    )
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup,
        "payload": {
            "summary": summary[:1024],
            "source": f"tandem/region/{data.get('region')}",
            "severity": "warning",
            "component": f"region/{data.get('region')}",
            "group": "disaster-recovery",
            "class": event.type,
            "timestamp": event.created_at.isoformat(),
            "custom_details": {"event_id": event.id, **data},
        },
    }


def _drill(event: Event, routing_key: str) -> dict[str, Any] | None:
    """A failed drill: a warning, its own incident (dedup_key: the operation id)."""
    data = event.data
    if data.get("outcome") != "failed":
        return None
    step = data.get("failed_step")
    summary = f"Tandem: drill {data.get('operation_id')} of DR pair {event.cluster_id} failed" + (
        f" at step {step}" if step else ""
    )
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": str(data.get("operation_id")),
        "payload": {
            "summary": summary[:1024],
            "source": f"tandem/{event.cluster_id}",
            "severity": "warning",
            "component": str(event.cluster_id),
            "group": "disaster-recovery",
            "class": event.type,
            "timestamp": event.created_at.isoformat(),
            "custom_details": {"event_id": event.id, "sequence": event.sequence, **data},
        },
    }


def body(event: Event, routing_key: str) -> dict[str, Any] | None:
    if event.type == "cluster.readiness_changed":
        return _readiness(event, routing_key)
    if event.type.startswith("batch."):
        return _batch(event, routing_key)
    if event.type == "drill.finished":
        return _drill(event, routing_key)
    data = event.data
    if data.get("kind") in QUIET_KINDS:
        return None
    if event.type == "operation.created" and data.get("batch_id"):
        return None  # the batch's incident covers it
    operation_id = data.get("operation_id")
    if event.type not in EVENT_TYPES or not operation_id:
        return None
    kind = data.get("kind", "operation")
    if event.type in ("operation.succeeded", "operation.cancelled"):
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": operation_id}
    failed = event.type in CRITICAL
    if event.type == "operation.step_timed_out":
        what = f"step {data.get('step')} passed its deadline"
    elif event.type in ERROR:
        objective = "RTO" if event.type == "operation.rto_breached" else "RPO"
        what = (
            f"missed its {objective} target: {data.get('measured_s')} s "
            f"against {data.get('target_s')} s"
        )
    elif event.type == "operation.approval_requested":
        what = f"waits for an approval of step {data.get('step')}"
    elif failed:
        what = "failed" + (" and needs attention" if data.get("needs_attention") else "")
    else:
        what = "started"
    summary = f"Tandem: {kind} {operation_id} of DR pair {event.cluster_id} {what}"
    # A missed objective is an incident of its own: the operation's resolves when it ends.
    dedup = f"{operation_id}:{event.type.split('.')[1]}" if event.type in ERROR else operation_id
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup,
        "payload": {
            "summary": summary[:1024],
            "source": f"tandem/{event.cluster_id}",
            "severity": "critical" if failed else "error" if event.type in ERROR else "warning",
            "component": str(event.cluster_id),
            "group": "disaster-recovery",
            "class": event.type,
            "timestamp": event.created_at.isoformat(),
            "custom_details": {"event_id": event.id, "sequence": event.sequence, **data},
        },
    }
