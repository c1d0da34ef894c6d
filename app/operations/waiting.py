"""The long poll: an operation, once it is done or once the caller's wait runs out.

The poll reads the operation once, then sleeps until a worker says it changed (through
the Notifier), reading it again only then — or every FALLBACK_S, in case that wake-up
was lost — so a thousand waiters cost no database reads while nothing happens. Each
read is a short transaction of its own, never one held for the whole wait. A wait holds
a slot (app.events.capacity) only while it actually waits, and ends early, giving the
slot back, when the client hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import finish_even_if_cancelled, unit_of_work
from app.events.capacity import StreamSlots
from app.events.notify import Notifier
from app.operations import service
from app.operations.schemas import OperationOut

FALLBACK_S = 5.0


async def wait_until_done(
    sessions: async_sessionmaker[AsyncSession],
    notifier: Notifier,
    org_id: str,
    operation_id: str,
    wait_s: float,
    *,
    slots: StreamSlots | None = None,
    token_id: str = "",
    hung_up: Callable[[], Awaitable[None]] | None = None,
) -> OperationOut:
    """The operation when it is done, or as it is after `wait_s` seconds (0: at once).

    `hung_up` returns when the client has gone: the wait ends then (what it returns is
    sent to nobody)."""

    async def load() -> OperationOut:
        async with unit_of_work(sessions) as session:
            return await service.load(session, org_id, operation_id)

    deadline = time.monotonic() + wait_s
    with notifier.watch(operation_id) as changed:
        out = await finish_even_if_cancelled(load())
        if out.done or wait_s <= 0:
            return out
        with contextlib.ExitStack() as cleanup:
            if slots is not None:
                cleanup.enter_context(slots.take(token_id))
            gone: asyncio.Task[None] | None = None
            if hung_up is not None:
                gone = asyncio.ensure_future(hung_up())
                cleanup.callback(gone.cancel)
            while True:
                remaining = deadline - time.monotonic()
                if out.done or remaining <= 0:
                    return out
                woken = asyncio.ensure_future(changed.wait())
                try:
                    await asyncio.wait(
                        {woken} if gone is None else {woken, gone},
                        timeout=min(remaining, FALLBACK_S),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    woken.cancel()
                if gone is not None and gone.done():
                    return out
                changed.clear()
                out = await finish_even_if_cancelled(load())
