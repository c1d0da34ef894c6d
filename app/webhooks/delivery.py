"""One webhook attempt over HTTP: the request (signed body, or a PagerDuty event), the
attempt itself, and when to try again."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

import httpx

from app.columns import utcnow
from app.config import Settings
from app.events.models import Event
from app.events.service import render
from app.webhooks import pagerduty, signing, urlguard
from app.webhooks.models import WebhookEndpoint


@dataclass(frozen=True)
class Request:
    url: str
    body: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int
    retry_after_s: float | None
    excerpt: str | None
    permanent: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def standard_body(event: Event) -> str:
    return json.dumps(render(event).model_dump(mode="json"), separators=(",", ":"))


def build_request(
    endpoint: WebhookEndpoint, event: Event, at: datetime, settings: Settings
) -> Request | None:
    if endpoint.kind == "pagerduty":
        payload = pagerduty.body(event, endpoint.routing_key or "")
        if payload is None:
            return None
        body = json.dumps(payload, separators=(",", ":"))
    else:
        body = standard_body(event)
    secrets = [endpoint.secret]
    if endpoint.previous_secret and (
        endpoint.previous_secret_expires_at is None or endpoint.previous_secret_expires_at > at
    ):
        secrets.append(endpoint.previous_secret)
    return Request(endpoint.url, body, signing.headers(event.id, at, body, secrets))


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - now).total_seconds(), 0.0)


def next_delay(attempts: int, retry_after_s: float | None, settings: Settings) -> float | None:
    """Seconds until the next attempt after `attempts` failed ones; None: give up."""
    schedule = settings.webhook_retry_schedule_s
    if attempts > len(schedule):
        return None
    if retry_after_s is not None:
        return min(
            max(retry_after_s, settings.webhook_retry_after_min_s),
            settings.webhook_retry_after_max_s,
        )
    base = schedule[attempts - 1]
    spread = settings.webhook_retry_jitter
    return base * random.uniform(1 - spread, 1 + spread)


async def send(http: httpx.AsyncClient, request: Request, settings: Settings) -> Outcome:
    started = time.perf_counter()

    def elapsed() -> int:
        return int((time.perf_counter() - started) * 1000)

    try:
        await urlguard.check(request.url, settings.webhook_allow_private)
    except urlguard.UnsafeURL as exc:
        return Outcome(None, f"refused: {exc}", elapsed(), None, None, permanent=True)
    try:
        response = await http.post(
            request.url,
            content=request.body.encode(),
            headers=request.headers,
            timeout=settings.webhook_timeout_s,
        )
    except httpx.HTTPError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:1000], elapsed(), None, None)
    return Outcome(
        response.status_code,
        None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}",
        elapsed(),
        retry_after_seconds(response.headers.get("retry-after"), utcnow()),
        response.text[:500] if response.text else None,
    )
