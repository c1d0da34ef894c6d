"""The `check` action: GET each URL until it is healthy (DESIGN.md section 8).

A URL is healthy when it answers 2xx and, with `expect`, a JSON object that contains
those fields with those values. The step succeeds once every URL has been healthy
`consecutive` times in a row; between rounds it answers "not yet" (`interval_s`), so a
check that waits holds no worker slot. The streak is remembered under the call's key. A
check changes nothing, so it needs no undo and it also serves readiness (`probe`: one
round, no waiting).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import Field

from app import outbound
from app.actions import progress, templating
from app.actions.base import Action, ActionFailed, NotYet, Output, StepCall
from app.actions.http import SecretRef, Url, excerpt
from app.columns import utcnow
from app.common import Strict

GET_TIMEOUT_S = 5.0


class CheckSettings(Strict):
    kind: Literal["check"]
    urls: list[Url | SecretRef] = Field(min_length=1, max_length=20)
    expect: dict[str, Any] | None = None
    consecutive: Annotated[int, Field(ge=1, le=100)] = 1
    interval_s: Annotated[float, Field(ge=0.05, le=3600)] = 2.0
    headers: dict[str, str | SecretRef] = Field(default_factory=dict, max_length=50)


def contains(body: Any, expect: dict[str, Any]) -> bool:
    if not isinstance(body, dict):
        return False
    for key, wanted in expect.items():
        if key not in body:
            return False
        if isinstance(wanted, dict):
            if not contains(body[key], wanted):
                return False
        elif body[key] != wanted:
            return False
    return True


def verdict(url: str, response: httpx.Response, expect: dict[str, Any] | None) -> tuple[bool, str]:
    """Healthy: 2xx and, with `expect`, a JSON object containing those fields."""
    if not response.is_success:
        return False, f"{url}: HTTP {response.status_code} {excerpt(response.text)}"
    if expect:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not contains(body, expect):
            return False, f"{url}: the body does not contain {expect}"
    return True, f"{url}: HTTP {response.status_code}"


class CheckAction(Action):
    kind: ClassVar[str] = "check"
    Settings = CheckSettings
    changes_nothing: ClassVar[bool] = True

    @classmethod
    def probes_with(cls, settings: dict[str, Any]) -> bool:
        return True

    async def _rendered(self, call: StepCall) -> dict[str, Any]:
        async def secret(name: str) -> str:
            return await self.deps.secrets(call.cluster_id, name)

        rendered: dict[str, Any] = await templating.render(
            {"kind": "check", **CheckSettings.model_validate(self.settings).model_dump()},
            call.placeholders(),
            secret,
        )
        return rendered

    async def _one(self, url: str, headers: dict[str, str], expect: Any) -> tuple[bool, str, int]:
        """(healthy, detail, duration in ms) of one GET."""
        started = time.perf_counter()
        try:
            response = await self.deps.http.get(
                url,
                headers={**headers, "user-agent": "Tandem-Check/1"},
                timeout=httpx.Timeout(GET_TIMEOUT_S),
                extensions=outbound.reach(self.deps.networks),
            )
        except outbound.Refused as exc:
            raise ActionFailed(f"{url} is not reachable from here: {exc}") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise ActionFailed(f"not a valid check URL: {exc}") from None
        except httpx.HTTPError as exc:
            ms = int((time.perf_counter() - started) * 1000)
            return False, f"{url}: {type(exc).__name__} {exc}".strip(), ms
        healthy, detail = verdict(url, response, expect)
        return healthy, detail, int((time.perf_counter() - started) * 1000)

    async def probe(self, call: StepCall) -> tuple[bool, str, int]:
        """One round over every URL, no waiting: (all healthy, detail, duration in ms)."""
        return await self._round(await self._rendered(call))

    async def _round(self, settings: dict[str, Any]) -> tuple[bool, str, int]:
        results = await asyncio.gather(
            *(
                self._one(str(url), settings["headers"], settings["expect"])
                for url in settings["urls"]
            )
        )
        bad = [detail for ok, detail, _ in results if not ok]
        detail = "; ".join(bad) if bad else f"{len(results)} URL(s) healthy"
        return not bad, detail, max((ms for _, _, ms in results), default=0)

    async def do(self, call: StepCall) -> Output | NotYet:
        done = await progress.done_item(self.deps.sessions, call)
        if done is not None:
            return done
        settings = await self._rendered(call)
        healthy, detail, _ = await self._round(settings)
        remembered = await progress.recall(self.deps.sessions, call.idempotency_key) or {}
        streak = int(remembered.get("streak", 0)) + 1 if healthy else 0
        if streak >= settings["consecutive"]:
            output = {"healthy": True, "rounds": int(remembered.get("rounds", 0)) + 1}
            return await progress.finish_item(self.deps.sessions, call, output)
        await progress.remember(
            self.deps.sessions,
            call.idempotency_key,
            call.cluster_id,
            {"streak": streak, "rounds": int(remembered.get("rounds", 0)) + 1, "last": detail},
        )
        return NotYet(utcnow() + timedelta(seconds=settings["interval_s"]), detail)
