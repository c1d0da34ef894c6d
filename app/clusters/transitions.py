"""The one function that changes a cluster's state, and the one that appends events.

Both run inside the caller's transaction: a state change and its event row commit
together or not at all (the transactional outbox of DESIGN.md section 4).
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.clusters.models import Cluster
from app.columns import utcnow
from app.domain.states import ClusterState, Trigger, next_state, serves_from_primary
from app.events.models import Event
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
    session: AsyncSession, cluster_id: str, trigger: Trigger, operation_id: str
) -> Event:
    """Move the pair along `trigger` (or raise TransitionRefused) and log the change."""
    from_state = await current_state(session, cluster_id)
    to_state = next_state(from_state, trigger)
    cluster = await session.get(Cluster, cluster_id)
    assert cluster is not None
    active_region = (
        cluster.primary["region"] if serves_from_primary(to_state) else cluster.secondary["region"]
    )
    result = await session.execute(
        update(Cluster)
        .where(Cluster.id == cluster_id, Cluster.state == from_state.value)  # type: ignore[arg-type]
        .values(
            state=to_state.value,
            active_region=active_region,
            version=Cluster.version + 1,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        # The row lock above makes this unreachable unless another writer ignores it.
        raise RuntimeError(f"cluster {cluster_id} changed state under a lock")
    await session.refresh(cluster)
    return await emit_event(
        session,
        cluster_id,
        "cluster.state_changed",
        {
            "from": from_state.value,
            "to": to_state.value,
            "operation_id": operation_id,
            "active_region": active_region,
        },
    )
