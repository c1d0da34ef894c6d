"""The incident CLI's side of the HTTP API: requests, problem details as exit codes, the
long poll of an operation and the event stream.

Exit codes: 0 done and succeeded, 1 failed / cancelled / any other error, 2 a usage error
(typer's own, an unknown pair, a confirmation that did not match), 3 refused (409), 4 not
allowed (401, 403), 130 interrupted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

OK = 0
FAILED = 1
USAGE = 2
REFUSED = 3
FORBIDDEN = 4
INTERRUPTED = 130

# How long one long poll of an operation holds (GET ?wait=N): short, so that each step's
# change shows within about this long; the request returns at once when the operation ends.
POLL_WAIT_S = 1
# Connection failures tolerated in a row while following an operation or the stream.
RECONNECTS = 30


class CliError(Exception):
    """A message for the person and the exit code that goes with it."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def exit_code_of(status: int) -> int:
    if status == 409:
        return REFUSED
    if status in (401, 403):
        return FORBIDDEN
    return FAILED


def problem_message(response: httpx.Response) -> str:
    """One line from an RFC 9457 body: its title and detail (or the bare status)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return f"HTTP {response.status_code} {response.reason_phrase}"
    title = body.get("title") or f"HTTP {response.status_code}"
    detail = body.get("detail")
    message = f"{title}: {detail}" if detail and detail != title else str(title)
    allowed = body.get("allowed_actions")
    if isinstance(allowed, list):
        message += f" (allowed: {', '.join(map(str, allowed)) or 'none'})"
    return message


class Api:
    """A client of one Tandem server, with one token."""

    def __init__(self, url: str, token: str | None, timeout_s: float = 30) -> None:
        if not url:
            raise CliError("no server: set TANDEM_URL or pass --url", USAGE)
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> Any:
        """The JSON body of a successful answer; a CliError with the problem otherwise."""
        extra: dict[str, Any] = {}
        if timeout_s is not None:
            extra["timeout"] = timeout_s
        try:
            response = self.http.request(
                method,
                path,
                params=params,
                json=body,
                headers=headers,
                **extra,
            )
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach {self.http.base_url}: {exc}") from None
        if response.status_code not in ok:
            raise CliError(problem_message(response), exit_code_of(response.status_code))
        try:
            return response.json()
        except ValueError:
            raise CliError(f"not a JSON answer from {response.request.url}") from None

    def download(self, path: str, media_type: str, params: dict[str, Any] | None = None) -> bytes:
        """The body of a successful GET asked for as `media_type` (a PDF), as bytes."""
        try:
            response = self.http.get(path, params=params, headers={"Accept": media_type})
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach {self.http.base_url}: {exc}") from None
        if response.status_code != 200:
            raise CliError(problem_message(response), exit_code_of(response.status_code))
        found = response.headers.get("content-type", "").split(";")[0].strip()
        if found != media_type:
            raise CliError(f"asked {response.request.url} for {media_type}, got {found or '-'}")
        return response.content

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any = None, *, key: str | None = None) -> Any:
        headers = {"Idempotency-Key": key} if key is not None else None
        return self.request("POST", path, body=body, headers=headers, ok=(200, 201, 202))

    def all_items(self, path: str, limit: int | None = None, **params: Any) -> list[Any]:
        """Every item of a cursor-paginated list (or the first `limit`)."""
        items: list[Any] = []
        token: str | None = None
        while True:
            page = self.get(path, page_size=100, page_token=token, **params)
            items.extend(page["items"])
            token = page.get("next_page_token")
            if not token or (limit is not None and len(items) >= limit):
                return items[:limit] if limit is not None else items

    def find_pair(self, pair: str) -> dict[str, Any]:
        """The pair whose id or name is `pair` (ids first: a name may look like an id)."""
        pairs = self.all_items("/v1/clusters")
        for match in (lambda p: p["id"] == pair, lambda p: p["name"] == pair):
            found = [p for p in pairs if match(p)]
            if found:
                return found[0]  # type: ignore[no-any-return]
        raise CliError(f"no pair named {pair!r} (see `tandem pairs`)", USAGE)

    def follow_operation(
        self, op_id: str, changed: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Long-poll the operation until it is done, calling `changed` with each new version
        of it (the first one included); the last one, done, is returned."""
        last: Any = None
        failures = 0
        while True:
            try:
                response = self.http.get(
                    f"/v1/operations/{op_id}",
                    params={"wait": POLL_WAIT_S},
                    timeout=POLL_WAIT_S + 30,
                )
            except httpx.TransportError as exc:
                failures += 1
                if failures > RECONNECTS:
                    raise CliError(f"lost the server while following {op_id}: {exc}") from None
                time.sleep(1)
                continue
            failures = 0
            if response.status_code == 429:
                # Too many long polls held at once: ask again when told to.
                time.sleep(_retry_after(response))
                continue
            if response.status_code != 200:
                raise CliError(problem_message(response), exit_code_of(response.status_code))
            operation: dict[str, Any] = response.json()
            if operation != last:
                changed(operation)
                last = operation
            if operation["done"]:
                return operation

    def stream_events(self, cluster_id: str | None) -> Iterator[dict[str, Any]]:
        """The events from now on, from the SSE stream; resumed after a lost connection
        from the last event seen (Last-Event-ID)."""
        last_id: str | None = None
        failures = 0
        params = {"cluster_id": cluster_id} if cluster_id else None
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            try:
                with self.http.stream(
                    "GET",
                    "/v1/events/stream",
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(30, read=None),
                ) as response:
                    if response.status_code == 429:
                        time.sleep(_retry_after(response))
                        continue
                    if response.status_code != 200:
                        response.read()
                        raise CliError(
                            problem_message(response), exit_code_of(response.status_code)
                        )
                    failures = 0
                    for sse_id, data in _sse_events(response.iter_lines()):
                        if sse_id is not None:
                            last_id = sse_id
                        if data is not None:
                            yield data
            except httpx.TransportError as exc:
                failures += 1
                if failures > RECONNECTS:
                    raise CliError(f"lost the event stream: {exc}") from None
                time.sleep(1)


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", "1")), 0.2), 30.0)
    except ValueError:
        return 1.0


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str | None, dict[str, Any] | None]]:
    """(id, the event's JSON) of each SSE message; comments and keep-alives are skipped."""
    sse_id: str | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                try:
                    yield sse_id, json.loads("\n".join(data))
                except ValueError:
                    yield sse_id, None
            sse_id, data = None, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                sse_id = value
            elif name == "data":
                data.append(value)
