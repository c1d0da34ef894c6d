"""The Disaster Recovery page under /ui/: server-rendered, on the public API only.

A person signs in by pasting a token; the page keeps a session (app.access.sessions) and
acts through the API as that token (app.ui.client), so roles, idempotency, audit and
problem details are the API's own. Every form that changes something carries the session's
CSRF token; the session cookie is HttpOnly and SameSite=Strict (and Secure over https).
Live updates: the page follows the API's event stream (the htmx SSE extension, with the
session cookie) and, on each event of the pair, fetches its live fragment again.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Mapping
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.access import sessions
from app.access.sessions import SESSION_COOKIE, SignedIn
from app.common import NO_NUL
from app.domain.states import ClusterState
from app.ui.client import Api, ApiError, new_idempotency_key

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=FilePath(__file__).parent / "templates")
STATIC = FilePath(__file__).parent / "static"
SIGN_IN_COOKIE = "tandem_sign_in"  # the sign-in form's CSRF token (no session yet)
EVENTS_SHOWN = 20
OPERATE = frozenset({"operator", "admin"})
STATES = [state.value for state in ClusterState]

OptionalText = Annotated[str, Form(max_length=1000, pattern=NO_NUL)]
# Optional in the form so that a post without one is refused as such (403), not as invalid.
CsrfToken = Annotated[str, Form(max_length=100)]


def status_text(cluster: Mapping[str, Any]) -> str:
    """The status indicator's words (DESIGN section 12)."""
    state = cluster["state"]
    if state == ClusterState.PRIMARY_ACTIVE:
        return f"Primary region active: {cluster['primary']['region']}"
    if state == ClusterState.SECONDARY_ACTIVE:
        return f"Failed over to secondary region: {cluster['secondary']['region']}"
    if state == ClusterState.FAILING_OVER:
        return "Failing over…"
    return "Failing back…"


def event_summary(event: Mapping[str, Any]) -> str:
    """One line of an event for the events list (app/ui/static/tandem.js says the same)."""
    data = event.get("data") or {}
    if "step" in data:
        return f"{data['step']} {data.get('status', '')}".strip()
    if "from" in data and "to" in data:
        return f"{data['from']} → {data['to']}"
    return str(data.get("kind") or "")


templates.env.globals["status_text"] = status_text
templates.env.globals["event_summary"] = event_summary


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def _signed_in(request: Request) -> SignedIn | None:
    context = request.app.state.context
    cookie = request.cookies.get(SESSION_COOKIE)
    return await sessions.find(context.sessions, context.cipher, cookie)


def _page(request: Request, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, values, status_code=status_code)
    # Nothing of these pages is cached, framed or sniffed.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _to_sign_in() -> RedirectResponse:
    return RedirectResponse("/ui/sign-in", status_code=303)


def _refused(request: Request, status_code: int, message: str) -> HTMLResponse:
    return _page(request, "refused.html", status_code=status_code, message=message)


async def _form_session(request: Request, csrf_token: str) -> SignedIn | HTMLResponse:
    """The session of a form post, or the page that refuses it (no session, wrong CSRF)."""
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _refused(request, 401, "Your session has ended. Sign in again.")
    if not hmac.compare_digest(signed_in.csrf_token.encode(), csrf_token.encode()):
        return _refused(request, 403, "The form is out of date or was not sent by this page.")
    return signed_in


# Sign-in and sign-out


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_form(request: Request) -> Response:
    token = secrets.token_urlsafe(32)
    response = _page(request, "sign_in.html", csrf_token=token, error=None)
    response.set_cookie(
        SIGN_IN_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request),
        path="/ui/sign-in", max_age=3600,
    )  # fmt: skip
    return response


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(
    request: Request,
    token: Annotated[str, Form(max_length=200)],
    csrf_token: CsrfToken = "",
) -> Response:
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), csrf_token.encode()):
        return _refused(request, 403, "The sign-in form is out of date: open it again.")
    token = token.strip()
    try:
        async with Api(request.app, token) as api:
            me = await api.get("/v1/me")
    except ApiError as exc:
        again = secrets.token_urlsafe(32)
        error = "That token is not valid, has expired or was revoked."
        if exc.status != 401:
            error = f"{exc.title}. {exc.detail}"
        page = _page(request, "sign_in.html", status_code=exc.status, csrf_token=again, error=error)
        page.set_cookie(
            SIGN_IN_COOKIE, again, httponly=True, samesite="strict", secure=_secure(request),
            path="/ui/sign-in", max_age=3600,
        )  # fmt: skip
        return page
    context = request.app.state.context
    cookie, _ = await sessions.start(context.sessions, context.cipher, token, me["token_id"])
    response = RedirectResponse("/ui/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE, cookie, httponly=True, samesite="strict", secure=_secure(request),
        path="/", max_age=int(sessions.SESSION_TTL.total_seconds()),
    )  # fmt: skip
    response.delete_cookie(SIGN_IN_COOKIE, path="/ui/sign-in")
    return response


@router.post("/sign-out")
async def sign_out(request: Request, csrf_token: CsrfToken = "") -> Response:
    checked = await _form_session(request, csrf_token)
    if isinstance(checked, HTMLResponse):
        return checked
    await sessions.end(request.app.state.context.sessions, request.cookies.get(SESSION_COOKIE))
    response = _to_sign_in()
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# The pairs list


@router.get("/", response_class=HTMLResponse)
async def pairs(
    request: Request,
    region: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    state: Annotated[str | None, Query(max_length=32, pattern=NO_NUL)] = None,
) -> Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _to_sign_in()
    try:
        async with Api(request.app, signed_in.token) as api:
            me, clusters = await asyncio.gather(api.get("/v1/me"), api.pages("/v1/clusters"))
    except ApiError as exc:
        return _api_refused(request, exc)
    regions = sorted({c[side]["region"] for c in clusters for side in ("primary", "secondary")})
    shown = [
        c
        for c in clusters
        if (not region or region in (c["primary"]["region"], c["secondary"]["region"]))
        and (not state or c["state"] == state)
    ]
    return _page(
        request,
        "pairs.html",
        me=me,
        csrf_token=signed_in.csrf_token,
        pairs=shown,
        total=len(clusters),
        regions=regions,
        states=STATES,
        region=region or "",
        state=state or "",
    )


# The pair's Disaster Recovery tab


async def _live(api: Api, cluster_id: str) -> dict[str, Any]:
    """What the live part of the tab shows: the pair, its last operation, readiness and
    deployments."""
    cluster, readiness, deployments, drills = await asyncio.gather(
        api.get(f"/v1/clusters/{cluster_id}"),
        api.get(f"/v1/clusters/{cluster_id}/readiness"),
        api.get(f"/v1/clusters/{cluster_id}/deployments"),
        api.get("/v1/operations", cluster_id=cluster_id, kind="drill", page_size=1),
    )
    operation = None
    if cluster.get("last_operation_id"):
        operation = await api.get(f"/v1/operations/{cluster['last_operation_id']}")
    return {
        "cluster": cluster,
        "operation": operation,
        "readiness": readiness,
        "deployments": deployments["items"],
        "drill": drills["items"][0] if drills["items"] else None,
    }


async def _recent_events(api: Api, cluster_id: str) -> list[dict[str, Any]]:
    events = await api.pages(f"/v1/clusters/{cluster_id}/events", limit=5000)
    return list(reversed(events[-EVENTS_SHOWN:]))


@router.get("/pairs/{cluster_id}", response_class=HTMLResponse)
async def pair(request: Request, cluster_id: str) -> Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _to_sign_in()
    return await _pair_page(request, signed_in, cluster_id)


async def _pair_page(
    request: Request,
    signed_in: SignedIn,
    cluster_id: str,
    *,
    error: ApiError | None = None,
    status_code: int = 200,
) -> Response:
    try:
        async with Api(request.app, signed_in.token) as api:
            me, live, events = await asyncio.gather(
                api.get("/v1/me"), _live(api, cluster_id), _recent_events(api, cluster_id)
            )
    except ApiError as exc:
        return _api_refused(request, exc)
    return _page(
        request,
        "pair.html",
        status_code=status_code,
        me=me,
        can_operate=me["role"] in OPERATE,
        csrf_token=signed_in.csrf_token,
        events=events,
        error=error,
        idempotency_keys={"failover": new_idempotency_key(), "failback": new_idempotency_key()},
        **live,
    )


@router.get("/pairs/{cluster_id}/live", response_class=HTMLResponse)
async def pair_live(request: Request, cluster_id: str) -> Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _refused(request, 401, "Your session has ended. Sign in again.")
    try:
        async with Api(request.app, signed_in.token) as api:
            me, live = await asyncio.gather(api.get("/v1/me"), _live(api, cluster_id))
    except ApiError as exc:
        return _api_refused(request, exc)
    return _page(
        request,
        "_live.html",
        me=me,
        can_operate=me["role"] in OPERATE,
        csrf_token=signed_in.csrf_token,
        **live,
    )


@router.get("/pairs/{cluster_id}/preview", response_class=HTMLResponse)
async def preview(
    request: Request,
    cluster_id: str,
    kind: Annotated[str, Query(pattern="^(failover|failback)$")],
    forced: bool = False,
) -> Response:
    """The dialog's dry run: the steps as they would run, the expected duration, the lag."""
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _refused(request, 401, "Your session has ended. Sign in again.")
    body: dict[str, Any] = {"dry_run": True}
    if forced:
        body |= {"mode": "forced", "accept_data_loss": True}
    try:
        async with Api(request.app, signed_in.token) as api:
            plan = await api.post(f"/v1/clusters/{cluster_id}/{kind}", body)
    except ApiError as exc:
        return _page(request, "_preview.html", plan=None, error=exc)
    return _page(request, "_preview.html", plan=plan, error=None)


# Forms that change something


@router.post("/pairs/{cluster_id}/drills", response_class=HTMLResponse)
async def run_drill(request: Request, cluster_id: str, csrf_token: CsrfToken = "") -> Response:
    """A drill moves nothing, so it needs no typed confirmation (as `tandem drill`)."""
    return await _start_side(request, cluster_id, csrf_token, "drills")


async def _start_side(request: Request, cluster_id: str, csrf_token: str, path: str) -> Response:
    """A form that starts an operation of the side lane (nothing to confirm), then the tab."""
    checked = await _form_session(request, csrf_token)
    if isinstance(checked, HTMLResponse):
        return checked
    try:
        async with Api(request.app, checked.token) as api:
            await api.post(
                f"/v1/clusters/{cluster_id}/{path}", idempotency_key=new_idempotency_key()
            )
    except ApiError as exc:
        return await _pair_page(request, checked, cluster_id, error=exc, status_code=exc.status)
    return _back_to(cluster_id)


@router.post("/pairs/{cluster_id}/{kind}", response_class=HTMLResponse)
async def start_operation(
    request: Request,
    cluster_id: str,
    kind: str,
    csrf_token: CsrfToken = "",
    confirm_name: Annotated[str, Form(max_length=200)] = "",
    reason: OptionalText = "",
    forced: Annotated[bool, Form()] = False,
    accept_data_loss: Annotated[bool, Form()] = False,
    idempotency_key: Annotated[str, Form(max_length=200, pattern=NO_NUL)] = "",
) -> Response:
    if kind not in ("failover", "failback"):
        return _refused(request, 404, "There is no such action.")
    checked = await _form_session(request, csrf_token)
    if isinstance(checked, HTMLResponse):
        return checked
    try:
        async with Api(request.app, checked.token) as api:
            cluster = await api.get(f"/v1/clusters/{cluster_id}")
            if confirm_name != cluster["name"]:
                raise ApiError(
                    422, {"title": "Not confirmed", "detail": "The pair name typed does not match."}
                )
            body: dict[str, Any] = {"reason": reason or None}
            if forced:
                body |= {"mode": "forced", "accept_data_loss": accept_data_loss}
            await api.post(
                f"/v1/clusters/{cluster_id}/{kind}",
                body,
                idempotency_key=idempotency_key or new_idempotency_key(),
            )
    except ApiError as exc:
        return await _pair_page(request, checked, cluster_id, error=exc, status_code=exc.status)
    return _back_to(cluster_id)


@router.post("/operations/{operation_id}/{action}", response_class=HTMLResponse)
async def operation_action(
    request: Request,
    operation_id: str,
    action: str,
    cluster_id: Annotated[str, Form(max_length=100, pattern=NO_NUL)],
    csrf_token: CsrfToken = "",
    comment: OptionalText = "",
) -> Response:
    if action not in ("cancel", "retry", "approve", "reject"):
        return _refused(request, 404, "There is no such action.")
    checked = await _form_session(request, csrf_token)
    if isinstance(checked, HTMLResponse):
        return checked
    body = {"comment": comment} if comment and action in ("approve", "reject") else None
    try:
        async with Api(request.app, checked.token) as api:
            await api.post(f"/v1/operations/{operation_id}/{action}", body)
    except ApiError as exc:
        return await _pair_page(request, checked, cluster_id, error=exc, status_code=exc.status)
    return _back_to(cluster_id)


@router.post("/pairs/{cluster_id}/deployments/retry", response_class=HTMLResponse)
async def retry_deployments(
    request: Request,
    cluster_id: str,
    csrf_token: CsrfToken = "",
) -> Response:
    return await _start_side(request, cluster_id, csrf_token, "deployments/retry")


# A region, and its evacuation


def _moves(cluster: Mapping[str, Any], region: str) -> bool:
    """Whether an evacuation of `region` moves the pair (as the API decides it)."""
    if cluster["state"] == ClusterState.PRIMARY_ACTIVE:
        return bool(cluster["primary"]["region"] == region)
    if cluster["state"] == ClusterState.SECONDARY_ACTIVE:
        return bool(cluster["secondary"]["region"] == region)
    return False


RegionPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")]


async def _region_page(
    request: Request,
    signed_in: SignedIn,
    region: str,
    *,
    error: ApiError | None = None,
    status_code: int = 200,
) -> Response:
    try:
        async with Api(request.app, signed_in.token) as api:
            me, clusters = await asyncio.gather(api.get("/v1/me"), api.pages("/v1/clusters"))
    except ApiError as exc:
        return _api_refused(request, exc)
    here = [c for c in clusters if region in (c["primary"]["region"], c["secondary"]["region"])]
    return _page(
        request,
        "region.html",
        status_code=status_code,
        me=me,
        can_operate=me["role"] in OPERATE,
        csrf_token=signed_in.csrf_token,
        region=region,
        pairs=here,
        moving=[c for c in here if _moves(c, region)],
        error=error,
        idempotency_key=new_idempotency_key(),
    )


@router.get("/regions/{region}", response_class=HTMLResponse)
async def region_view(request: Request, region: RegionPath) -> Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _to_sign_in()
    return await _region_page(request, signed_in, region)


@router.post("/regions/{region}/evacuate", response_class=HTMLResponse)
async def evacuate_region(
    request: Request,
    region: RegionPath,
    csrf_token: CsrfToken = "",
    confirm_name: Annotated[str, Form(max_length=200)] = "",
    reason: OptionalText = "",
    max_parallel: Annotated[int, Form(ge=1, le=1000)] = 20,
    idempotency_key: Annotated[str, Form(max_length=200, pattern=NO_NUL)] = "",
) -> Response:
    checked = await _form_session(request, csrf_token)
    if isinstance(checked, HTMLResponse):
        return checked
    try:
        if confirm_name != region:
            raise ApiError(
                422, {"title": "Not confirmed", "detail": "The region typed does not match."}
            )
        async with Api(request.app, checked.token) as api:
            batch = await api.post(
                f"/v1/regions/{region}/evacuate",
                {"reason": reason or None, "max_parallel": max_parallel},
                idempotency_key=idempotency_key or new_idempotency_key(),
            )
    except ApiError as exc:
        return await _region_page(request, checked, region, error=exc, status_code=exc.status)
    return RedirectResponse(f"/ui/batches/{batch['id']}", status_code=303)


async def _batch(request: Request, batch_id: str, name: str) -> Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _to_sign_in()
    try:
        async with Api(request.app, signed_in.token) as api:
            me, batch = await asyncio.gather(
                api.get("/v1/me"), api.get(f"/v1/batches/{batch_id}", page_size=100)
            )
    except ApiError as exc:
        return _api_refused(request, exc)
    return _page(
        request,
        name,
        me=me,
        can_operate=me["role"] in OPERATE,
        csrf_token=signed_in.csrf_token,
        batch=batch,
    )


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
async def batch_view(request: Request, batch_id: str) -> Response:
    return await _batch(request, batch_id, "batch.html")


@router.get("/batches/{batch_id}/live", response_class=HTMLResponse)
async def batch_live(request: Request, batch_id: str) -> Response:
    return await _batch(request, batch_id, "_batch.html")


@router.post("/batches/{batch_id}/cancel", response_class=HTMLResponse)
async def cancel_batch(request: Request, batch_id: str, csrf_token: CsrfToken = "") -> Response:
    checked = await _form_session(request, csrf_token)
    if isinstance(checked, HTMLResponse):
        return checked
    try:
        async with Api(request.app, checked.token) as api:
            await api.post(f"/v1/batches/{batch_id}/cancel")
    except ApiError as exc:
        return _api_refused(request, exc)
    return RedirectResponse(f"/ui/batches/{batch_id}", status_code=303)


def _back_to(cluster_id: str) -> RedirectResponse:
    return RedirectResponse(f"/ui/pairs/{cluster_id}", status_code=303)


def _api_refused(request: Request, exc: ApiError) -> Response:
    if exc.status == 401:
        # The token was revoked or expired since the sign-in.
        return RedirectResponse("/ui/sign-in?" + urlencode({"ended": "1"}), status_code=303)
    message = f"{exc.title}. {exc.detail}".strip()
    return _refused(request, exc.status if 400 <= exc.status < 500 else 502, message)
