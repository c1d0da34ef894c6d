"""The `http` action: a runbook hook (DESIGN.md section 8).

`POST url` with the documented JSON body, signed with the pair's runbook secret
(Standard Webhooks headers), `Idempotency-Key` (the call's key: a retry of the same
attempt sends the same one, an undo has its own) and `X-Tandem-Deadline`. A 2xx is done,
its JSON body (16 KB at most) the step's output. A 202 with `Location` is work under way:
the URL is remembered under the call's key before anything else happens, then polled
(GET, signed, honouring `Retry-After`) until it answers `succeeded` or `failed`; a worker
that takes over polls the same URL and does not start the runbook again. 408, 429, 5xx
and connection errors are transient; any other 4xx fails the step.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import Field, StringConstraints

from app import outbound
from app.actions import progress, templating
from app.actions.base import Action, ActionFailed, NotYet, Output, StepCall
from app.columns import utcnow
from app.common import Strict
from app.webhooks import signing

MAX_OUTPUT = 16 * 1024
EXCERPT = 500
POLL_S = 2.0
MAX_POLL_S = 300.0
# One request waits this long at most (and never past the step's deadline).
REQUEST_TIMEOUT_S = 30.0
TRANSIENT = frozenset({408, 429})

Url = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
SecretRef = dict[str, str]


class HttpSettings(Strict):
    kind: Literal["http"]
    url: Url | SecretRef
    headers: dict[Annotated[str, StringConstraints(max_length=100)], str | SecretRef] = Field(
        default_factory=dict, max_length=50
    )
    params: Any = None
    check_url: Url | SecretRef | None = None


def excerpt(text: str) -> str:
    """A short, printable excerpt of a response: safe to store and show."""
    cleaned = "".join(c if c.isprintable() else " " for c in text[: EXCERPT * 2])
    return cleaned[:EXCERPT] + ("…" if len(text) > EXCERPT else "")


def _output(response: httpx.Response) -> Output:
    body = response.content
    if len(body) <= MAX_OUTPUT:
        try:
            value = json.loads(body) if body else None
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
    return {"http_status": response.status_code, "body_excerpt": excerpt(response.text)}


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return POLL_S
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - utcnow()).total_seconds()
        except (TypeError, ValueError):
            return POLL_S
    return min(max(seconds, 0.1), MAX_POLL_S)


def _failure(response: httpx.Response, what: str) -> ActionFailed:
    status = response.status_code
    transient = status in TRANSIENT or status >= 500
    return ActionFailed(
        f"{what} answered HTTP {status}: {excerpt(response.text)}",
        transient=transient,
        http_status=status,
    )


class HttpAction(Action):
    kind: ClassVar[str] = "http"
    Settings = HttpSettings

    @classmethod
    def probes_with(cls, settings: dict[str, Any]) -> bool:
        return settings.get("check_url") is not None

    def __init__(self, settings: dict[str, Any], deps: Any) -> None:
        super().__init__(settings, deps)
        # The values of the secrets this call used: kept out of every error and output.
        self._revealed: set[str] = set()

    async def do(self, call: StepCall) -> Output | NotYet:
        return await self._scrubbed(call)

    async def undo(self, call: StepCall) -> Output | NotYet:
        return await self._scrubbed(call)

    async def _scrubbed(self, call: StepCall) -> Output | NotYet:
        done = await progress.done_item(self.deps.sessions, call)
        if done is not None:
            return done
        try:
            result = await self._run(call)
        except ActionFailed as exc:
            exc.message = self._scrub(exc.message)
            raise
        if isinstance(result, dict):
            if self._revealed:
                result = json.loads(self._scrub(json.dumps(result)))
            return await progress.finish_item(self.deps.sessions, call, result)
        return result

    def _scrub(self, text: str) -> str:
        for value in sorted(self._revealed, key=len, reverse=True):
            if value:
                text = text.replace(value, "[secret]")
        return text

    async def _secret(self, call: StepCall, name: str) -> str:
        value = await self.deps.secrets(call.cluster_id, name)
        self._revealed.add(value)
        return value

    async def _settings(self, call: StepCall) -> dict[str, Any]:
        async def secret(name: str) -> str:
            return await self._secret(call, name)

        rendered: dict[str, Any] = await templating.render(
            HttpSettings.model_validate(self.settings).model_dump(), call.placeholders(), secret
        )
        return rendered

    def _headers(self, call: StepCall, body: str, extra: dict[str, str]) -> dict[str, str]:
        now = utcnow()
        headers = {
            **{str(k): str(v) for k, v in extra.items()},
            **signing.headers(call.idempotency_key, now, body, list(call.signing_secrets)),
            "Idempotency-Key": call.idempotency_key,
            "X-Tandem-Deadline": call.deadline_at.isoformat().replace("+00:00", "Z"),
        }
        headers["user-agent"] = "Tandem-Runbook/1"
        return headers

    def _timeout(self, call: StepCall) -> float:
        remaining = (call.deadline_at - utcnow()).total_seconds()
        return max(min(REQUEST_TIMEOUT_S, remaining), 0.1)

    async def _send(self, request: httpx.Request, what: str) -> httpx.Response:
        try:
            return await self.deps.http.send(request)
        except outbound.Refused as exc:
            raise ActionFailed(f"{what} is not reachable from here: {exc}") from None
        except httpx.HTTPError as exc:
            message = str(exc) or type(exc).__name__
            raise ActionFailed(f"{what} could not be reached: {message}", transient=True) from None

    def _request(self, method: str, url: str, call: StepCall, body: str, extra: dict[str, str]):  # type: ignore[no-untyped-def]
        timeout = self._timeout(call)
        try:
            return self.deps.http.build_request(
                method,
                url,
                content=body.encode() if body else None,
                headers=self._headers(call, body, extra),
                timeout=httpx.Timeout(timeout),
                extensions=outbound.reach(self.deps.networks),
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
            raise ActionFailed(f"the runbook URL is not valid: {exc}") from None

    async def probe(self, call: StepCall) -> tuple[bool, str, int] | None:
        """Readiness asks `check_url` once (a GET, signed like every call)."""
        if self.settings.get("check_url") is None:
            return None
        settings = await self._settings(call)
        started = time.perf_counter()
        request = self._request("GET", str(settings["check_url"]), call, "", settings["headers"])
        try:
            response = await self._send(request, "the runbook's check URL")
        except ActionFailed as exc:
            return False, self._scrub(exc.message), int((time.perf_counter() - started) * 1000)
        ms = int((time.perf_counter() - started) * 1000)
        detail = f"HTTP {response.status_code}"
        if not response.is_success:
            detail = self._scrub(f"{detail}: {excerpt(response.text)}")
        return response.is_success, detail, ms

    async def _run(self, call: StepCall) -> Output | NotYet:
        settings = await self._settings(call)
        remembered = await progress.recall(self.deps.sessions, call.idempotency_key)
        if remembered is not None and remembered.get("location"):
            return await self._poll(call, settings, str(remembered["location"]))
        body = json.dumps(
            {
                "operation_id": call.operation_id,
                "pair_id": call.cluster_id,
                "pair": call.cluster_name,
                "step": call.step,
                "action": call.phase,
                "attempt": call.attempt,
                "kind": call.kind,
                "mode": call.mode,
                "source": call.source,
                "target": call.target,
                "params": settings.get("params"),
            },
            separators=(",", ":"),
        )
        request = self._request("POST", str(settings["url"]), call, body, settings["headers"])
        response = await self._send(request, "the runbook")
        if response.status_code == 202 and response.headers.get("Location"):
            location = str(response.url.join(response.headers["Location"]))
            await progress.remember(
                self.deps.sessions, call.idempotency_key, call.cluster_id, {"location": location}
            )
            return NotYet(utcnow() + timedelta(seconds=_retry_after(response)), "running")
        if response.is_success:
            return _output(response)
        raise _failure(response, "the runbook")

    async def _poll(
        self, call: StepCall, settings: dict[str, Any], location: str
    ) -> Output | NotYet:
        request = self._request("GET", location, call, "", settings["headers"])
        response = await self._send(request, "the runbook's status URL")
        if not response.is_success:
            raise _failure(response, "the runbook's status URL")
        try:
            status = response.json()
        except ValueError:
            status = None
        if not isinstance(status, dict) or status.get("status") not in (
            "running",
            "succeeded",
            "failed",
        ):
            raise ActionFailed(
                "the runbook's status URL did not answer "
                '{"status": "running" | "succeeded" | "failed"}: ' + excerpt(response.text),
                transient=True,
            )
        if status["status"] == "running":
            return NotYet(utcnow() + timedelta(seconds=_retry_after(response)), "running")
        if status["status"] == "failed":
            error = status.get("error")
            text = error if isinstance(error, str) else json.dumps(error)
            raise ActionFailed(f"the runbook failed: {excerpt(text or 'no error given')}")
        output = status.get("output")
        if isinstance(output, dict) and len(json.dumps(output)) <= MAX_OUTPUT:
            return output
        return {"output_excerpt": excerpt(json.dumps(output))} if output is not None else {}
