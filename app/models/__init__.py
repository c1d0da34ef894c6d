"""SQLModel tables. Importing this package registers every table on SQLModel.metadata."""

from app.models.access import ApiToken, AuditRecord, Organization
from app.models.cluster import Cluster
from app.models.coordination import Counter, Lease
from app.models.driver_effect import DriverEffect
from app.models.event import Event
from app.models.idempotency import IdempotencyRecord
from app.models.operation import Operation, OperationStep
from app.models.webhook import WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = [
    "ApiToken",
    "AuditRecord",
    "Organization",
    "Cluster",
    "Counter",
    "DriverEffect",
    "Event",
    "IdempotencyRecord",
    "Lease",
    "Operation",
    "OperationStep",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
