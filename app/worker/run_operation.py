"""The job that carries out an operation; the work itself is in app/services/executor.py."""

from __future__ import annotations

from typing import Any

from app.services.executor import Executor


async def run_operation(ctx: dict[str, Any], operation_id: str) -> bool:
    executor: Executor = ctx["executor"]
    return await executor.run(operation_id)
