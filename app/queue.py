"""Putting work on the arq queue. Redis holds only work to do; losing it loses nothing."""

from __future__ import annotations

import logging
from datetime import datetime

from arq.connections import ArqRedis

log = logging.getLogger("tandem.queue")

RUN_OPERATION = "run_operation"


def job_id(operation_id: str, lease_epoch: int, deferred: bool = False) -> str:
    # arq refuses a job id it still remembers, so a re-enqueue after a crash needs a
    # new one: the lease epoch goes up each time a worker takes the operation. A parked
    # operation's wake-up has an id of its own, so that a cancel is not held behind it.
    return f"run:{operation_id}:{lease_epoch}" + (":wake" if deferred else "")


async def enqueue_run(
    redis: ArqRedis,
    queue_name: str,
    operation_id: str,
    lease_epoch: int,
    at: datetime | None = None,
) -> None:
    try:
        await redis.enqueue_job(
            RUN_OPERATION,
            operation_id,
            _job_id=job_id(operation_id, lease_epoch, deferred=at is not None),
            _queue_name=queue_name,
            _defer_until=at,
        )
    except Exception:
        # The operation is committed; the sweeper will enqueue it once Redis is back.
        log.warning("could not enqueue %s; the sweeper will", operation_id, exc_info=True)
