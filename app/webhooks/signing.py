"""Standard Webhooks signatures: `webhook-id`, `webhook-timestamp`, `webhook-signature`."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from standardwebhooks import Webhook


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def mask(secret: str) -> str:
    return secret[:10] + "…" + secret[-4:]


def headers(message_id: str, at: datetime, body: str, signing_secrets: list[str]) -> dict[str, str]:
    """Every secret signs; signatures are space-separated so a rotation loses nothing."""
    signatures = " ".join(Webhook(s).sign(message_id, at, body) for s in signing_secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
        "user-agent": "Tandem-Webhooks/1",
    }
