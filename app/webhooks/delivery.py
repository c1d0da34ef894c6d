"""One webhook attempt over HTTP: the request (signed body, or a PagerDuty event), the
attempt itself, and when to try again."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from app import outbound
from app.columns import utcnow
from app.config import Settings
from app.events.models import Event
from app.events.service import render
from app.webhooks import pagerduty, signing
from app.webhooks.models import ERROR_MAX, EXCERPT_MAX, EndpointKind, WebhookEndpoint

log = logging.getLogger("tandem.webhooks")


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


def networks(settings: Settings) -> outbound.Networks:
    """What a webhook may reach: public addresses, or with TANDEM_WEBHOOK_ALLOW_PRIVATE
    private and loopback ones too (never link-local)."""
    return outbound.Networks.ALL if settings.webhook_allow_private else outbound.Networks.PUBLIC


def standard_body(event: Event) -> str:
    return json.dumps(render(event).model_dump(mode="json"), separators=(",", ":"))


def build_request(
    endpoint: WebhookEndpoint, event: Event, at: datetime, settings: Settings
) -> Request | None:
    if endpoint.kind == EndpointKind.PAGERDUTY:
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
    if when.tzinfo is None:  # "-0000": UTC, says RFC 5322
        when = when.replace(tzinfo=UTC)
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


def clean(text: str, limit: int) -> str:
    """Text a receiver had a hand in, made storable: PostgreSQL text holds no NUL, and
    neither database takes a lone surrogate (not UTF-8); at most `limit` characters."""
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text[:limit]


def excerpt(head: bytes) -> str | None:
    """The start of an answer, read as UTF-8 whatever charset it declares: a declared
    charset can fail to decode, or decode to text that cannot be stored."""
    return clean(head.decode("utf-8", "replace"), EXCERPT_MAX) or None


async def _head(response: httpx.Response, limit: int) -> bytes:
    """The first `limit` bytes of the body, or fewer; the rest is never read."""
    head = bytearray()
    async for chunk in response.aiter_bytes():
        head += chunk
        if len(head) >= limit:
            break
    return bytes(head[:limit])


async def send(http: httpx.AsyncClient, request: Request, settings: Settings) -> Outcome:
    """One attempt. Call it with no transaction open: it waits on a stranger."""
    started = time.perf_counter()

    def elapsed() -> int:
        return int((time.perf_counter() - started) * 1000)

    try:
        # One deadline for the whole attempt, not only for each read: a receiver
        # answering a byte at a time would otherwise hold its lane as long as it likes.
        async with (
            asyncio.timeout(settings.webhook_timeout_s),
            http.stream(
                "POST",
                request.url,
                content=request.body.encode(),
                headers=request.headers,
                timeout=settings.webhook_timeout_s,
                # The client's guarded transport checks the address it connects to.
                extensions=outbound.reach(networks(settings)),
            ) as response,
        ):
            # UTF-8 takes at most 4 bytes a character.
            head = await _head(response, EXCERPT_MAX * 4)
    except outbound.Refused as exc:
        error = clean(f"refused: {exc}", ERROR_MAX)
        return Outcome(None, error, elapsed(), None, None, permanent=True)
    except TimeoutError:
        error = f"no answer within {settings.webhook_timeout_s:g} s"
        return Outcome(None, error, elapsed(), None, None)
    except httpx.HTTPError as exc:
        error = clean(f"{type(exc).__name__}: {exc}", ERROR_MAX)
        return Outcome(None, error, elapsed(), None, None)
    except Exception as exc:
        # Whatever a receiver's answer made go wrong is a failed attempt, retried on the
        # schedule, not an error that ends the lane and has the delivery sent again at once.
        log.exception("webhook attempt to %s failed unexpectedly", request.url)
        return Outcome(None, f"unexpected {type(exc).__name__}", elapsed(), None, None)
    return Outcome(
        response.status_code,
        None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}",
        elapsed(),
        retry_after_seconds(response.headers.get("retry-after"), utcnow()),
        excerpt(head),
    )
