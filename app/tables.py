"""Every table of every capability, for Alembic and for tests that need the metadata."""

from app.access.models import ApiToken, AuditRecord, Organization, UiSession
from app.actions.approval import Decision
from app.actions.progress import ActionProgress
from app.actions.simulated import SimulatedEffect, SimulatedGate
from app.batches.models import Batch, BatchItem
from app.clusters.models import Cluster
from app.coordination import Counter, Lease
from app.deployments.models import DeploymentResult
from app.events.models import Event
from app.operations.models import IdempotencyRecord, Operation, OperationStep
from app.secrets.models import PairSecret
from app.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = [
    "ActionProgress",
    "ApiToken",
    "AuditRecord",
    "Batch",
    "BatchItem",
    "Cluster",
    "Counter",
    "Decision",
    "DeploymentResult",
    "Event",
    "IdempotencyRecord",
    "Lease",
    "Operation",
    "OperationStep",
    "Organization",
    "PairSecret",
    "SimulatedEffect",
    "SimulatedGate",
    "UiSession",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
