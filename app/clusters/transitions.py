"""The one function that changes a cluster's state, and the one that appends events.

Both run inside the caller's transaction: a state change and its event row commit
together or not at all (the transactional outbox of DESIGN.md section 4).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlmodel import col

from app.clusters.models import Cluster
from app.columns import utcnow
from app.domain.states import ClusterState, Trigger, next_state, serves_from_primary
from app.events.service import emit_event


async def current_state(session: AsyncSession, cluster_id: str) -> ClusterState:
    """The pair's state, with its row locked for the rest of the transaction."""
    state = await session.scalar(
        select(col(Cluster.state)).where(Cluster.id == cluster_id).with_for_update()  # type: ignore[arg-type]
    )
    if state is None:
        raise LookupError(cluster_id)
    return ClusterState(state)


async def apply_transition(
    session: AsyncSession,
    cluster_id: str,
    trigger: Trigger,
    operation_id: str,
    events: list[tuple[str, dict[str, Any]]] | None = None,
    *,
    locked: Cluster | None = None,
    last_operation: bool = False,
) -> None:
    """Move the pair along `trigger` (or raise TransitionRefused) and log the change: its
    event is appended now, or added to `events` for the caller to append with its own.

    `locked`: the caller's copy of the pair, read under its row lock in this transaction
    (its state is not read again). `last_operation`: the operation becomes the pair's
    `last_operation_id` in the same UPDATE."""
    if locked is not None:
        state, primary, secondary = locked.state, locked.primary, locked.secondary
    else:
        row = (
            await session.execute(
                select(col(Cluster.state), col(Cluster.primary), col(Cluster.secondary))
                .where(col(Cluster.id) == cluster_id)
                .with_for_update()
            )
        ).first()
        if row is None:
            raise LookupError(cluster_id)
        state, primary, secondary = row
    from_state = ClusterState(state)
    to_state = next_state(from_state, trigger)
    active_region = str((primary if serves_from_primary(to_state) else secondary)["region"])
    now = utcnow()
    values: dict[str, Any] = {
        "state": to_state.value,
        "active_region": active_region,
        "updated_at": now,
    }
    if last_operation:
        values["last_operation_id"] = operation_id
    version = await session.scalar(
        update(Cluster)
        .where(col(Cluster.id) == cluster_id, col(Cluster.state) == from_state.value)
        .values(version=Cluster.version + 1, **values)
        .returning(col(Cluster.version))
        .execution_options(synchronize_session=False)
    )
    if version is None:
        # The row lock above makes this unreachable unless another writer ignores it.
        raise RuntimeError(f"cluster {cluster_id} changed state under a lock")
    # A copy of the pair this session already holds shows the change (without a query).
    loaded = session.sync_session.identity_map.get(identity_key(Cluster, cluster_id))
    if loaded is not None:
        for name, value in (*values.items(), ("version", version)):
            set_committed_value(loaded, name, value)
    changed = {
        "from": from_state.value,
        "to": to_state.value,
        "operation_id": operation_id,
        "active_region": active_region,
    }
    if events is None:
        await emit_event(session, cluster_id, "cluster.state_changed", changed)
    else:
        events.append(("cluster.state_changed", changed))
