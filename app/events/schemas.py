from __future__ import annotations

from datetime import datetime
from typing import Any

from app.common import Strict


class EventOut(Strict):
    """One shape everywhere: the event list, the live stream and a webhook body."""

    id: str
    type: str
    created_at: datetime
    cluster_id: str | None
    sequence: int
    data: dict[str, Any]
