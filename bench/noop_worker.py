"""The baseline: a bare arq worker with a no-op job, on the same Redis as Tandem.

Run as `python -m bench.noop_worker`; configured by BENCH_REDIS_URL, BENCH_QUEUE and
BENCH_POLL_DELAY_S. It logs like `tandem worker` does (INFO, one line per job).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from arq import func
from arq.connections import RedisSettings
from arq.worker import Worker


async def noop(ctx: dict[str, Any]) -> int:
    return 1


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    worker = Worker(
        functions=[func(noop, name="noop")],  # type: ignore[list-item]
        redis_settings=RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"]),
        queue_name=os.environ["BENCH_QUEUE"],
        poll_delay=float(os.environ["BENCH_POLL_DELAY_S"]),
        keep_result=120,
        max_jobs=20,
    )
    worker.run()


if __name__ == "__main__":
    main()
