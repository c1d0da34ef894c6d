"""Putting work on the arq queue. Redis holds only work to do; losing it loses nothing."""

from __future__ import annotations

import logging

from arq.connections import ArqRedis

log = logging.getLogger("tandem.queue")

RUN_OPERATION = "run_operation"


def job_id(operation_id: str, lease_epoch: int) -> str:
    # arq refuses a job id it still remembers, so a re-enqueue after a crash needs a
    # new one: the lease epoch goes up each time a worker takes the operation.
    return f"run:{operation_id}:{lease_epoch}"


async def enqueue_run(
    redis: ArqRedis, queue_name: str, operation_id: str, lease_epoch: int
) -> None:
    try:
        await redis.enqueue_job(
            RUN_OPERATION,
            operation_id,
            _job_id=job_id(operation_id, lease_epoch),
            _queue_name=queue_name,
        )
    except Exception:
        # The operation is committed; the sweeper will enqueue it once Redis is back.
        log.warning("could not enqueue %s; the sweeper will", operation_id, exc_info=True)
