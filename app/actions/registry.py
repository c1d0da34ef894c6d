from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.actions.base import Driver
from app.actions.simulated import SimulatedDriver


def driver_for(settings: dict[str, Any], sessions: async_sessionmaker[AsyncSession]) -> Driver:
    kind = settings.get("kind", "simulated")
    if kind == "simulated":
        return SimulatedDriver(sessions, settings)
    raise ValueError(f"unknown driver kind {kind!r}")
