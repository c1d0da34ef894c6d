"""The page's way to Tandem: the public API, called in this process as the signed-in token.

Every read and every change the page makes is an ordinary API request (ASGI, no socket):
the same checks of role, input, idempotency and rate, the same audit records, the same
problem details when something is refused.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from app.middleware import REQUEST_ID_HEADER, request_id


class ApiError(Exception):
    """A problem details answer of the API (RFC 9457)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.title = str(problem.get("title") or "Request refused")
        self.detail = str(problem.get("detail") or "")
        super().__init__(f"{status} {self.title}: {self.detail}")


class Api:
    def __init__(self, app: FastAPI, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        if (rid := request_id.get()) is not None:
            headers[REQUEST_ID_HEADER] = rid
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 0)),
            base_url="http://tandem.internal",
            headers=headers,
            timeout=30,
        )

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return _answer(await self._client.get(path, params=query))

    async def post(
        self, path: str, body: dict[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> Any:
        headers = {}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return _answer(await self._client.post(path, json=body, headers=headers))

    async def pages(self, path: str, limit: int = 1000, **params: Any) -> list[dict[str, Any]]:
        """Every item of a cursor-paginated list (at most `limit`)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while len(items) < limit:
            page = await self.get(path, page_size=100, page_token=token, **params)
            items.extend(page["items"])
            token = page.get("next_page_token")
            if not token:
                break
        return items[:limit]


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def _answer(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            problem = response.json()
        except ValueError:
            problem = {"title": response.reason_phrase}
        raise ApiError(response.status_code, problem if isinstance(problem, dict) else {})
    if response.status_code == 204 or not response.content:
        return None
    return response.json()
