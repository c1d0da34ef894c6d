"""SQLModel tables. Importing this package registers every table on SQLModel.metadata."""

from app.models.cluster import Cluster
from app.models.driver_effect import DriverEffect
from app.models.event import Event
from app.models.idempotency import IdempotencyRecord
from app.models.operation import Operation, OperationStep

__all__ = ["Cluster", "DriverEffect", "Event", "IdempotencyRecord", "Operation", "OperationStep"]
