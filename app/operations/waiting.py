"""The long poll: an operation, once it is done or once the caller's wait runs out.

Each look is a short transaction of its own, never one held for the whole wait; between
looks the poll sleeps until a worker says the operation changed (or a second passes, in
case that wake-up was lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import finish_even_if_cancelled, unit_of_work
from app.events.notify import Notifier
from app.operations import service
from app.operations.schemas import OperationOut

RECHECK_S = 1.0


async def wait_until_done(
    sessions: async_sessionmaker[AsyncSession],
    notifier: Notifier,
    org_id: str,
    operation_id: str,
    wait_s: float,
) -> OperationOut:
    """The operation when it is done, or as it is after `wait_s` seconds (0: at once)."""

    async def load() -> OperationOut:
        async with unit_of_work(sessions) as session:
            return await service.load(session, org_id, operation_id)

    deadline = time.monotonic() + wait_s
    with notifier.watch(operation_id) as changed:
        while True:
            changed.clear()
            out = await finish_even_if_cancelled(load())
            remaining = deadline - time.monotonic()
            if out.done or remaining <= 0:
                return out
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=min(remaining, RECHECK_S))
