"""A client for an Airflow 3 deployment's stable REST API (`/api/v2`), for the `airflow`
deployment kind (DESIGN.md section 11).

It works on an `httpx.AsyncClient` the caller passes in (Tandem's guarded outbound
client) and sends the caller's request `extensions` (e.g. `outbound.reach(...)`) with
every request. `api_url` is the Airflow's base URL, where `/api/v2/...` and `/auth/...`
live (a trailing `/api/v2` is dropped).

Authentication: a JWT from `POST /auth/token` (`{"username", "password"}` ->
`{"access_token"}`), cached per (URL, user, password) in this process until shortly before
its `exp`; an answer 401 (expired) or 403 "Invalid JWT token" (e.g. the deployment's JWT
secret changed) fetches a new one and sends the request again, once. A fixed API token
(`token=`, e.g. a deployment API token) is sent as it is and never refreshed.

What it does:

- `health()`: `GET /api/v2/monitor/health` (no authentication); healthy when
  metadatabase, scheduler, triggerer and dag_processor all report `healthy`.
- `failed_task_instances(since)`: task instances in state `failed` or `up_for_retry`
  whose `end_date` (when that try ended) is at or after `since`, from
  `POST /api/v2/dags/~/dagRuns/~/taskInstances/list`, page by page.
- `clear(task_instances)`: `POST /api/v2/dags/{dag_id}/clearTaskInstances` once per DAG
  run, naming exactly those task ids (`[task_id, map_index]` for a mapped one), with
  `only_failed` (Airflow then clears those of them that are failed *now*: one still up
  for retry, retried by Airflow since, or running is left alone),
  `reset_dag_runs` (the run is queued again) and `dry_run: false`.
- `pause_all()` / `resume(dag_ids)`: `GET /api/v2/dags?paused=false`, then
  `PATCH /api/v2/dags/{dag_id}` `{"is_paused": true}` for each; resume unpauses exactly
  the DAGs it is given, so a DAG a person had paused stays paused.

Errors are `AirflowError`: `transient` for connection errors, timeouts, 408, 429 and 5xx;
permanent for any other 4xx, a refused address (`outbound.Refused`) and an answer that
is not what the API documents. No message ever holds the password or a token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from app import outbound

HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
FAILED_STATES = ("failed", "up_for_retry")
# Airflow's [api] maximum_page_limit defaults to 100.
PAGE_SIZE = 100
TRANSIENT_STATUS = frozenset({408, 429})
# A cached token is used until this many seconds before its `exp`.
TOKEN_MARGIN_S = 60.0
# When a token carries no readable `exp`.
TOKEN_DEFAULT_TTL_S = 300.0
EXCERPT = 300


class AirflowError(Exception):
    """A call to Airflow failed; `transient` when trying again later may work.

    `paused` holds, for `pause_all`, the DAGs it had paused before it failed (the caller
    should remember them, to resume them).
    """

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        status: int | None = None,
        paused: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.status = status
        self.paused = list(paused)


class TaskInstance(TypedDict):
    """One try of a task in a DAG run, as Airflow reports it (JSON-ready)."""

    dag_id: str
    dag_run_id: str
    task_id: str
    # -1 for a task that is not mapped.
    map_index: int
    try_number: int
    state: str | None
    # ISO 8601, as Airflow gives it; None when the try has not ended.
    end_date: str | None


# (base URL, username, sha256 of the password) -> (token, monotonic expiry)
_tokens: dict[tuple[str, str, str], tuple[str, float]] = {}


def _token_expiry(token: str) -> float:
    """Monotonic time at which to stop using `token`, from its unverified `exp` claim."""
    now = time.monotonic()
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        remaining = float(claims["exp"]) - time.time()
    except (IndexError, KeyError, TypeError, ValueError):
        return now + TOKEN_DEFAULT_TTL_S
    return now + max(remaining - min(TOKEN_MARGIN_S, remaining / 10), 0.0)


def _base_url(api_url: str) -> str:
    """The Airflow's base URL, without user info, a trailing slash or `/api/v2`."""
    parts = urlsplit(api_url.strip())
    netloc = parts.netloc.rsplit("@", 1)[-1]
    path = parts.path.rstrip("/")
    if path.endswith("/api/v2"):
        path = path[: -len("/api/v2")]
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def _detail(response: httpx.Response) -> Any:
    """The `detail` of an error answer (FastAPI's), or None."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("detail") if isinstance(body, dict) else None


def _task_instance(item: dict[str, Any]) -> TaskInstance:
    return TaskInstance(
        dag_id=str(item["dag_id"]),
        dag_run_id=str(item["dag_run_id"]),
        task_id=str(item["task_id"]),
        map_index=int(item.get("map_index", -1)),
        try_number=int(item.get("try_number") or 0),
        state=item.get("state"),
        end_date=item.get("end_date"),
    )


class AirflowClient:
    """One Airflow deployment (one region's `api_url`), on the caller's HTTP client."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        extensions: dict[str, Any] | None = None,
        timeout: float = 10.0,
    ) -> None:
        if token is None and (username is None or password is None):
            raise ValueError("an Airflow client needs a username and password, or a token")
        self.http = http
        self.base_url = _base_url(api_url)
        self.username = username or ""
        self._password = password or ""
        self._fixed_token = token
        self.extensions = dict(extensions or {})
        self.timeout = timeout
        digest = hashlib.sha256(self._password.encode()).hexdigest()
        self._cache_key = (self.base_url, self.username, digest)

    def __repr__(self) -> str:
        return f"AirflowClient({self.base_url!r}, username={self.username!r})"

    # -- health ---------------------------------------------------------------------

    async def health(self) -> tuple[bool, str]:
        """(healthy, detail): healthy when metadatabase, scheduler, triggerer and
        dag_processor all report `healthy`; the detail names those that do not, or why
        the health could not be read (an Airflow that cannot be reached is unhealthy)."""
        try:
            response = await self._send("GET", "/api/v2/monitor/health", auth=False)
        except AirflowError as exc:
            return False, exc.message
        if response.status_code != 200:
            return False, self._http_message(response, "GET /api/v2/monitor/health")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return False, "/api/v2/monitor/health did not answer a JSON object"
        problems = []
        for name in HEALTH_COMPONENTS:
            component = body.get(name)
            status = component.get("status") if isinstance(component, dict) else None
            if status != "healthy":
                problems.append(f"{name} {status or 'not reported'}")
        if problems:
            return False, "unhealthy: " + ", ".join(problems)
        return True, "metadatabase, scheduler, triggerer and dag_processor healthy"

    # -- task instances -------------------------------------------------------------

    async def failed_task_instances(
        self, since: datetime, *, dag_ids: Iterable[str] | None = None
    ) -> list[TaskInstance]:
        """Task instances now `failed` or `up_for_retry` whose try ended at or after
        `since` (every DAG, or those of `dag_ids`), oldest first."""
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        body: dict[str, Any] = {
            "state": list(FAILED_STATES),
            "end_date_gte": since.isoformat(),
            "order_by": "id",
            "page_limit": PAGE_SIZE,
        }
        if dag_ids is not None:
            body["dag_ids"] = list(dag_ids)
        found: list[TaskInstance] = []
        seen: set[tuple[str, str, str, int]] = set()
        offset = 0
        while True:
            page = await self._json(
                "POST",
                "/api/v2/dags/~/dagRuns/~/taskInstances/list",
                json={**body, "page_offset": offset},
            )
            items = self._list(page, "task_instances")
            for item in items:
                ti = _task_instance(item)
                key = (ti["dag_id"], ti["dag_run_id"], ti["task_id"], ti["map_index"])
                if key not in seen:
                    seen.add(key)
                    found.append(ti)
            offset += len(items)
            total = page.get("total_entries")
            if not items or (isinstance(total, int) and offset >= total):
                return found

    async def clear(
        self, task_instances: Iterable[TaskInstance], *, note: str | None = None
    ) -> list[TaskInstance]:
        """Clears exactly these task instances, so that Airflow runs them again, and
        returns those it cleared: with `only_failed`, those that are failed when asked.
        One still up for retry (Airflow retries it on its own), retried since, or running
        is left alone. Tasks downstream of them are not cleared. A DAG or DAG run that no
        longer exists is passed over."""
        runs: dict[tuple[str, str], list[str | list[Any]]] = {}
        for ti in task_instances:
            marker: str | list[Any] = (
                [ti["task_id"], ti["map_index"]] if ti["map_index"] >= 0 else ti["task_id"]
            )
            markers = runs.setdefault((ti["dag_id"], ti["dag_run_id"]), [])
            if marker not in markers:
                markers.append(marker)
        cleared: list[TaskInstance] = []
        for (dag_id, dag_run_id), markers in runs.items():
            body: dict[str, Any] = {
                "dry_run": False,
                "only_failed": True,
                "reset_dag_runs": True,
                "dag_run_id": dag_run_id,
                "task_ids": markers,
                "include_upstream": False,
                "include_downstream": False,
            }
            if note:
                body["note"] = note[:1000]
            path = f"/api/v2/dags/{quote(dag_id, safe='')}/clearTaskInstances"
            response = await self._send("POST", path, json=body)
            if response.status_code == 404 and _detail(response) not in (None, "Not Found"):
                continue  # Airflow says the DAG or the run is gone: nothing to clear
            answer = self._body(response, f"POST {path}")
            cleared.extend(_task_instance(item) for item in self._list(answer, "task_instances"))
        return cleared

    # -- pausing --------------------------------------------------------------------

    async def unpaused_dags(self) -> list[str]:
        """The ids of the DAGs that are not paused (stale ones left out), sorted."""
        found: list[str] = []
        offset = 0
        while True:
            page = await self._json(
                "GET",
                "/api/v2/dags",
                params={
                    "paused": "false",
                    "order_by": "dag_id",
                    "limit": PAGE_SIZE,
                    "offset": offset,
                },
            )
            items = self._list(page, "dags")
            found.extend(str(item["dag_id"]) for item in items if "dag_id" in item)
            offset += len(items)
            total = page.get("total_entries")
            if not items or (isinstance(total, int) and offset >= total):
                return sorted(set(found))

    async def pause_all(self) -> list[str]:
        """Pauses every DAG that is not paused now; returns the ids of those it paused
        (to give to `resume`). On failure the `AirflowError` carries, in `paused`, those
        it had paused already."""
        paused: list[str] = []
        try:
            for dag_id in await self.unpaused_dags():
                if await self._set_paused(dag_id, True):
                    paused.append(dag_id)
        except AirflowError as exc:
            exc.paused = list(paused)
            raise
        return paused

    async def resume(self, dag_ids: Iterable[str]) -> list[str]:
        """Unpauses exactly these DAGs; returns those it unpaused (a DAG that no longer
        exists is passed over)."""
        resumed: list[str] = []
        for dag_id in dict.fromkeys(dag_ids):
            if await self._set_paused(dag_id, False):
                resumed.append(dag_id)
        return resumed

    async def _set_paused(self, dag_id: str, paused: bool) -> bool:
        """False when the DAG does not exist (any more)."""
        path = f"/api/v2/dags/{quote(dag_id, safe='')}"
        try:
            await self._json(
                "PATCH", path, params={"update_mask": "is_paused"}, json={"is_paused": paused}
            )
        except AirflowError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- HTTP -----------------------------------------------------------------------

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._body(await self._send(method, path, **kwargs), f"{method} {path}")

    def _body(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code >= 300:
            raise self._failure(response, what)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise AirflowError(
                f"Airflow at {self.base_url} did not answer a JSON object to {what}",
                transient=False,
                status=response.status_code,
            )
        return body

    def _list(self, body: dict[str, Any], field: str) -> list[dict[str, Any]]:
        items = body.get(field)
        if not isinstance(items, list):
            raise AirflowError(
                f"Airflow at {self.base_url} answered without `{field}`", transient=False
            )
        return [item for item in items if isinstance(item, dict)]

    async def _send(
        self, method: str, path: str, *, auth: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """One request; with `auth`, a bearer token, fetched again once when Airflow
        says it has expired or is not valid."""
        response = await self._request(method, path, auth=auth, **kwargs)
        if auth and self._fixed_token is None and self._token_rejected(response):
            _tokens.pop(self._cache_key, None)
            response = await self._request(method, path, auth=auth, **kwargs)
        return response

    @staticmethod
    def _token_rejected(response: httpx.Response) -> bool:
        if response.status_code == 401:
            return True
        if response.status_code == 403:
            return _detail(response) == "Invalid JWT token"
        return False

    async def _request(
        self, method: str, path: str, *, auth: bool, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {await self._token()}"
        return await self._transport(method, path, headers=headers, **kwargs)

    async def _transport(
        self, method: str, path: str, *, headers: dict[str, str], **kwargs: Any
    ) -> httpx.Response:
        url = self.base_url + path
        try:
            return await self.http.request(
                method,
                url,
                headers=headers,
                timeout=self.timeout,
                extensions=self.extensions,
                **kwargs,
            )
        except outbound.Refused as exc:
            raise AirflowError(
                f"Airflow at {self.base_url} is not reachable from here: {self._scrub(str(exc))}",
                transient=False,
            ) from None
        except httpx.HTTPError as exc:
            reason = self._scrub(str(exc)) or type(exc).__name__
            raise AirflowError(
                f"Airflow at {self.base_url} could not be reached ({method} {path}): {reason}",
                transient=True,
            ) from None

    async def _token(self) -> str:
        if self._fixed_token is not None:
            return self._fixed_token
        cached = _tokens.get(self._cache_key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        response = await self._transport(
            "POST",
            "/auth/token",
            headers={"Accept": "application/json"},
            json={"username": self.username, "password": self._password},
        )
        if response.status_code in (401, 403):
            raise AirflowError(
                f"Airflow at {self.base_url} refused the credentials of user "
                f"{self.username!r} (HTTP {response.status_code} from /auth/token)",
                transient=False,
                status=response.status_code,
            )
        if response.status_code >= 300:
            # Not the body: a validation error may echo what was sent.
            raise AirflowError(
                f"Airflow at {self.base_url} answered HTTP {response.status_code} "
                "to POST /auth/token",
                transient=self._transient(response.status_code),
                status=response.status_code,
            )
        try:
            token = response.json()["access_token"]
        except (ValueError, KeyError, TypeError):
            token = None
        if not isinstance(token, str) or not token:
            raise AirflowError(
                f"Airflow at {self.base_url} answered /auth/token without an access_token",
                transient=False,
                status=response.status_code,
            )
        _tokens[self._cache_key] = (token, _token_expiry(token))
        return token

    @staticmethod
    def _transient(status: int) -> bool:
        return status in TRANSIENT_STATUS or status >= 500

    def _http_message(self, response: httpx.Response, what: str) -> str:
        text = response.text
        detail = _detail(response)
        if detail is not None:
            text = detail if isinstance(detail, str) else json.dumps(detail)
        excerpt = self._scrub(" ".join(text.split()))[:EXCERPT]
        status = response.status_code
        return f"Airflow at {self.base_url} answered HTTP {status} to {what}: {excerpt}"

    def _failure(self, response: httpx.Response, what: str) -> AirflowError:
        return AirflowError(
            self._http_message(response, what),
            transient=self._transient(response.status_code),
            status=response.status_code,
        )

    def _scrub(self, text: str) -> str:
        """`text` without the password or any token of this client."""
        secrets = [self._password, self._fixed_token]
        cached = _tokens.get(self._cache_key)
        if cached is not None:
            secrets.append(cached[0])
        for secret in secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text
