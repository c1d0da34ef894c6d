"""Pure ASGI middlewares: a request id on every request and response, and a body-size limit.

Both sit inside Starlette's ServerErrorMiddleware (FastAPI puts user middlewares there), so
an unhandled exception passes through them first; RequestIdMiddleware answers it itself (a
500, or a 503 when the database is out of reach), so that the answer carries X-Request-ID
and the client keeps its connection.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, problem_response, unexpected_response

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# The current request's id, for logs (RequestIdFilter) and for code that wants to record it.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

log = logging.getLogger("tandem.middleware")


def valid_request_id(value: str | None) -> bool:
    return value is not None and _VALID_REQUEST_ID.fullmatch(value) is not None


class RequestIdFilter(logging.Filter):
    """Sets record.request_id: the current request's id, or "-" outside a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get() or "-"
        return True


class RequestIdMiddleware:
    """Takes the client's X-Request-ID if it is 1-128 characters of [A-Za-z0-9._:-], else makes
    one (a uuid4 hex); puts it in `request_id` and scope["state"], and on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = Headers(scope=scope).get(REQUEST_ID_HEADER)
        rid = sent if sent is not None and valid_request_id(sent) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:
                raise  # half a response is out: only closing the connection can tell
            # Answered here, not re-raised: an exception that reaches the server makes it
            # close the connection after the response, and the client's next request on it
            # fails. The problem (a logged 500, or a 503 when the database is out of reach)
            # carries the request id like every other response.
            await unexpected_response(exc)(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


class BodyLimitMiddleware:
    """413 for a request body over max_bytes: at once if Content-Length says so (the body is
    not read), else when a chunked body grows past the limit while the app reads it."""

    def __init__(self, app: ASGIApp, max_bytes: int = 1024 * 1024) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> JSONResponse:
        return problem_response(
            PayloadTooLarge(f"The request body exceeds the limit of {self.max_bytes} bytes.")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await self._too_large()(scope, receive, send)
            return

        received = 0
        started = False  # the app has started its response
        cut = False  # the body passed the limit: the app is told the client went away
        answered = False  # this middleware has sent the 413

        async def limited_receive() -> Message:
            nonlocal received, cut, answered
            if cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    cut = True
                    if not started:
                        answered = True
                        await self._too_large()(scope, receive, send)
                    # Either way the app stops reading: to it the client has gone.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # the 413 is the response; drop whatever the app sends after it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not answered:
                raise
            # The app failed on the cut-off body (e.g. ClientDisconnect); the 413 is sent.
            log.debug("request body cut off at %d bytes", self.max_bytes, exc_info=True)
