"""PagerDuty Events API v2 bodies for operation events.

trigger when a failover or failback starts or waits for an approval (warning), fails or
has a step pass its deadline (critical); resolve when it succeeds or is cancelled. dedup_key is the
operation id, so one incident follows one operation from start to end.
"""

from __future__ import annotations

from typing import Any

from app.events.models import Event

EVENT_TYPES = frozenset(
    {
        "operation.created",
        "operation.approval_requested",
        "operation.failed",
        "operation.step_timed_out",
        "operation.succeeded",
        "operation.cancelled",
    }
)
CRITICAL = frozenset({"operation.failed", "operation.step_timed_out"})


def body(event: Event, routing_key: str) -> dict[str, Any] | None:
    data = event.data
    operation_id = data.get("operation_id")
    if event.type not in EVENT_TYPES or not operation_id:
        return None
    kind = data.get("kind", "operation")
    if event.type in ("operation.succeeded", "operation.cancelled"):
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": operation_id}
    failed = event.type in CRITICAL
    if event.type == "operation.step_timed_out":
        what = f"step {data.get('step')} passed its deadline"
    elif event.type == "operation.approval_requested":
        what = f"waits for an approval of step {data.get('step')}"
    elif failed:
        what = "failed" + (" and needs attention" if data.get("needs_attention") else "")
    else:
        what = "started"
    summary = f"Tandem: {kind} {operation_id} of DR pair {event.cluster_id} {what}"
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": operation_id,
        "payload": {
            "summary": summary[:1024],
            "source": f"tandem/{event.cluster_id}",
            "severity": "critical" if failed else "warning",
            "component": str(event.cluster_id),
            "group": "disaster-recovery",
            "class": event.type,
            "timestamp": event.created_at.isoformat(),
            "custom_details": {"event_id": event.id, "sequence": event.sequence, **data},
        },
    }
