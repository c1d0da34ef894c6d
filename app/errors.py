"""Problem types (RFC 9457) and the one handler that renders them.

Problem                         500 internal
├── BadRequest                  400 bad_request
│   ├── IdempotencyKeyMissing   400 idempotency_key_missing
│   └── MalformedBody           400 malformed_body
├── NotFound                    404 not_found
├── NotAcceptable               406 not_acceptable  (names the media types the route serves)
├── Conflict                    409 conflict
│   ├── InvalidTransition       409 invalid_transition  (names state and allowed actions)
│   ├── OperationInProgress     409 operation_in_progress
│   ├── IdempotencyInFlight     409 idempotency_key_in_flight
│   └── PointOfNoReturn         409 point_of_no_return
├── PreconditionFailed          412 precondition_failed
├── PayloadTooLarge             413 payload_too_large  (BodyLimitMiddleware)
├── Unprocessable               422 unprocessable
│   ├── ValidationFailed        422 validation_failed  (lists `errors`)
│   └── IdempotencyKeyReused    422 idempotency_key_reused
├── TooManyRequests             429 rate_limited  (sends Retry-After)
└── ServiceUnavailable          503 unavailable  (also a database pool timeout, with Retry-After)
    └── DatabaseUnavailable     503 database_unavailable  (the database cannot be reached)

The handlers leave the problem's status and code in the request's state (`problem_of`),
where app.access audits refusals; this module imports nothing of the app.
"""

from __future__ import annotations

import json
import logging
import math
import socket
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://tandem.dev/problems/"

log = logging.getLogger("tandem.errors")


class Problem(Exception):
    status = 500
    code = "internal"
    title = "Internal error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    def response_headers(self) -> dict[str, str] | None:
        return None

    def body(self) -> dict[str, Any]:
        return {
            "type": TYPE_BASE + self.code.replace("_", "-"),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            **self.extra,
        }


class BadRequest(Problem):
    status, code, title = 400, "bad_request", "Bad request"


class IdempotencyKeyMissing(BadRequest):
    code, title = "idempotency_key_missing", "Idempotency-Key header required"


class MalformedBody(BadRequest):
    code, title = "malformed_body", "Request body is not valid JSON"


class Unauthorized(Problem):
    status, code, title = 401, "unauthorized", "Authentication required"

    def response_headers(self) -> dict[str, str] | None:
        return {"WWW-Authenticate": 'Bearer realm="tandem"'}


class Forbidden(Problem):
    status, code, title = 403, "forbidden", "Your token's role does not allow this"


class SecondPersonRequired(Forbidden):
    code, title = "second_person_required", "Another person must decide"


class NotFound(Problem):
    status, code, title = 404, "not_found", "Not found"


class NotAcceptable(Problem):
    status, code, title = 406, "not_acceptable", "No acceptable representation"


class Conflict(Problem):
    status, code, title = 409, "conflict", "Conflict"


class InvalidTransition(Conflict):
    code, title = "invalid_transition", "Not allowed in the current state"


class OperationInProgress(Conflict):
    code, title = "operation_in_progress", "An operation is in progress on this cluster"


class IdempotencyInFlight(Conflict):
    code, title = "idempotency_key_in_flight", "A request with this Idempotency-Key is in flight"


class PointOfNoReturn(Conflict):
    code, title = "point_of_no_return", "The operation is past its point of no return"


class NotReady(Conflict):
    code, title = "not_ready", "The pair is not ready for a planned operation"


class DataLossExceeds(Conflict):
    code, title = "data_loss_exceeds", "The last measured replication lag is over max_data_loss_s"


class DataLossUnknown(Conflict):
    code, title = "data_loss_unknown", "No replication lag was ever measured on this pair"


class PreconditionFailed(Problem):
    status, code, title = 412, "precondition_failed", "Precondition failed"


class PayloadTooLarge(Problem):
    status, code, title = 413, "payload_too_large", "Request body too large"


class Unprocessable(Problem):
    status, code, title = 422, "unprocessable", "Unprocessable request"


class ValidationFailed(Unprocessable):
    code, title = "validation_failed", "Request validation failed"


class IdempotencyKeyReused(Unprocessable):
    code, title = "idempotency_key_reused", "Idempotency-Key reused with another request"


class TooManyRequests(Problem):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: float, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after

    def response_headers(self) -> dict[str, str] | None:
        # Retry-After is whole seconds (RFC 9110); round up, and never say 0.
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class ServiceUnavailable(Problem):
    status, code, title = 503, "unavailable", "Service unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    code, title = "database_unavailable", "The database cannot be reached"

    def response_headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(OUTAGE_RETRY_AFTER_S)}


# Seconds a client is asked to wait when the database cannot be reached.
OUTAGE_RETRY_AFTER_S = 5

# asyncpg's own names for "no connection" (the driver is optional: matched by name).
_ASYNCPG_CONNECTION_ERRORS = frozenset(
    {
        "PostgresConnectionError",
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
        "CannotConnectNowError",
        "TooManyConnectionsError",
        "AdminShutdownError",
        "CrashShutdownError",
        "InterfaceError",
    }
)


def database_unreachable(exc: BaseException) -> bool:
    """The exception, or one it was raised from, says the database could not be reached or
    went away (refused, reset, shut down, locked), not that a query was wrong."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        err = pending.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, DBAPIError) and err.connection_invalidated:
            return True
        if isinstance(err, OperationalError | InterfaceError):
            return True
        # A refused or reset socket; a plain OSError is asyncio's "Multiple exceptions".
        if isinstance(err, ConnectionError | socket.gaierror) or type(err) is OSError:
            return True
        kind = type(err)
        if kind.__module__.startswith("asyncpg") and any(
            c.__name__ in _ASYNCPG_CONNECTION_ERRORS for c in kind.__mro__
        ):
            return True
        # Only what it was raised from: not whatever happened to be handled at the time.
        for cause in (err.__cause__, getattr(err, "orig", None)):
            if isinstance(cause, BaseException):
                pending.append(cause)
    return False


def unexpected_response(exc: BaseException) -> JSONResponse:
    """The answer to an exception no handler took: a 503 when the database is out of reach,
    else a 500 that is logged here."""
    if isinstance(exc, PoolTimeout):  # raised in a middleware, outside its own handler
        return _pool_exhausted(exc)
    if database_unreachable(exc):
        log.error("database unreachable: %s: %s", type(exc).__name__, exc)
        problem: Problem = DatabaseUnavailable("The database cannot be reached; retry shortly.")
        return problem_response(problem, headers=problem.response_headers())
    log.exception("unhandled error", exc_info=exc)
    return problem_response(Problem("An unexpected error occurred; it has been logged."))


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        jsonable_encoder(problem.body()),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _validation_problem(exc: RequestValidationError) -> Problem:
    errors = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return MalformedBody(f"Body is not valid JSON: {err.get('msg', '')}")
        errors.append(
            {
                "loc": [str(part) for part in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    first = errors[0] if errors else {"loc": [], "msg": "invalid"}
    where = ".".join(first["loc"])
    return ValidationFailed(f"{where}: {first['msg']}", errors=errors)


_STATUS_CODES = {400: BadRequest, 404: NotFound, 409: Conflict, 412: PreconditionFailed}


def _allowed_methods(request: Request) -> str:
    """Every method some route on the request's path accepts."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


def _remember(request: Request, problem: Problem) -> None:
    # Plain data in the request's state: whoever audits refusals (app.access) reads it there,
    # so that this module, which the whole app imports, imports nothing of the app.
    request.state.problem = (problem.status, problem.code)


def problem_of(scope: Scope) -> tuple[int, str] | None:
    """The status and code of the problem this request was answered with by a handler below
    (a Problem or a validation error), if any."""
    refusal: tuple[int, str] | None = (scope.get("state") or {}).get("problem")
    return refusal


# Seconds a client is asked to wait when no database connection was free in time.
POOL_RETRY_AFTER_S = 2


def _pool_exhausted(exc: Exception) -> JSONResponse:
    """No database connection came free in time: busy, not broken, so 503 and a retry."""
    log.warning("database pool exhausted: %s", exc)
    problem = ServiceUnavailable("Every database connection is busy; retry shortly.")
    return problem_response(problem, headers={"Retry-After": str(POOL_RETRY_AFTER_S)})


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        if exc.status >= 500:
            log.error("problem %s: %s", exc.code, exc.detail)
        _remember(request, exc)
        return problem_response(exc, headers=exc.response_headers())

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problem = _validation_problem(exc)
        _remember(request, problem)
        return problem_response(problem)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cls = _STATUS_CODES.get(exc.status_code)
        if cls is not None:
            problem: Problem = cls(str(exc.detail))
        else:
            problem = Problem(str(exc.detail))
            problem.status = exc.status_code
            problem.code = "http_" + str(exc.status_code)
            problem.title = str(exc.detail)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette's Allow names only the first route on the path; RFC 9110 wants all.
            headers["Allow"] = _allowed_methods(request)
        return problem_response(problem, headers=headers or None)

    # No pooled connection came free in time (one raised in a middleware: unexpected_response).
    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(_request: Request, exc: PoolTimeout) -> JSONResponse:
        return _pool_exhausted(exc)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return unexpected_response(exc)

    # Handled here, inside the app, so that the server keeps the client's connection open.
    @app.exception_handler(DBAPIError)
    async def _database(_request: Request, exc: DBAPIError) -> JSONResponse:
        return unexpected_response(exc)

    @app.exception_handler(OSError)
    async def _os_error(_request: Request, exc: OSError) -> JSONResponse:
        return unexpected_response(exc)


def dumps(body: Any) -> str:
    return json.dumps(jsonable_encoder(body), separators=(",", ":"))
