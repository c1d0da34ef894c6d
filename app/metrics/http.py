"""HTTP request counts and latencies (tandem_http_requests_total,
tandem_http_request_duration_seconds), labelled by route template, never by raw path, so
that ids in paths do not make a series each; `org` is the caller's organization once a
token has been checked, empty otherwise (and then shown to no one)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics.process import HTTP_DURATION, HTTP_REQUESTS

# A client may send any method; the others are counted as one.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A path no route matches (a 404): one label value, whatever the path.
UNMATCHED = "unmatched"


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(template) if template else UNMATCHED


def org_of(scope: Scope) -> str:
    principal = (scope.get("state") or {}).get("principal")
    return str(getattr(principal, "org_id", "") or "")


class HttpMetricsMiddleware:
    """Outermost: times the whole answer, the middlewares' own ones (413, 500) included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when nothing was sent

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            route, org = route_of(scope), org_of(scope)
            HTTP_REQUESTS.labels(org, method, route, str(status)).inc()
            HTTP_DURATION.labels(org, method, route).observe(time.perf_counter() - started)
