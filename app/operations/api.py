from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from app.access import audit
from app.access.auth import Operator, Principal, Viewer
from app.clusters import service as cluster_service
from app.common import NO_NUL, Page
from app.db import unit_of_work
from app.deps import ClusterId, ContextDep, OperationId, PageSize, PageToken, SessionDep
from app.domain.plans import RULES, Mode, OperationKind, OperationStatus
from app.domain.states import ClusterState, TransitionRefused, next_state
from app.errors import NotReady
from app.operations import dry_run, idempotency, waiting
from app.operations import service as service
from app.operations.schemas import Decision, DryRunOut, OperationOut, OperationRequest
from app.problems import problems
from app.readiness import service as readiness
from app.readiness.api import action_deps

router = APIRouter(tags=["operations"])

# Read as optional so that a missing key is DESIGN's 400 problem, not a 422 from validation
# (and a dry run needs none); documented (IDEMPOTENCY_KEY) as required, with what
# idempotency.validate_key takes: a request that follows the document is never refused for it.
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", include_in_schema=False)]
# Printable Latin-1 (what a header carries), not only spaces (HTTP strips them at the ends).
_KEY_CHAR = r"\x21-\x7e\xa1-\xac\xae-\xff"
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "The same key and request return the same operation (missing: 400).",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": f"^[ {_KEY_CHAR}]*[{_KEY_CHAR}][ {_KEY_CHAR}]*$",
    },
}


async def _start(
    kind: OperationKind,
    cluster_id: str,
    request: Request,
    context: ContextDep,
    principal: Principal,
    body: OperationRequest | None,
    key: str | None,
) -> JSONResponse:
    body = body or OperationRequest()
    if body.dry_run:
        return await _dry_run(kind, cluster_id, context, principal, body)
    if body.mode is Mode.PLANNED and not body.ignore_readiness:
        await _check_ready(cluster_id, context, principal)
    key = idempotency.validate_key(key)
    print_ = idempotency.fingerprint("POST", request.url.path, body.model_dump(mode="json"))

    async def produce(session):  # type: ignore[no-untyped-def]
        operation = await service.start(
            session, context.enqueue, principal.org_id, cluster_id, kind, body, principal.actor
        )
        out = service.render(operation, await service.steps_of(session, operation.id))
        location = f"/v1/operations/{operation.id}"
        audit.record(session, request, 202, detail={"operation_id": operation.id})
        return 202, out.model_dump(mode="json"), {"Location": location}

    # Keys are scoped to the caller's organization.
    stored = await idempotency.run_once(
        context.sessions, principal.org_id, key, print_, produce, cluster_id=cluster_id
    )
    return await answer_stored(stored, request, context)


async def answer_stored(
    stored: idempotency.StoredResponse, request: Request, context: ContextDep
) -> JSONResponse:
    """The stored response; a replay says so, in a header and in the audit log."""
    headers = dict(stored.headers)
    if stored.replayed:
        headers["Idempotent-Replayed"] = "true"
        async with unit_of_work(context.sessions) as session:
            audit.record(
                session,
                request,
                stored.status_code,
                outcome="replayed",
                detail={"operation_id": stored.body.get("id")},
            )
    return JSONResponse(stored.body, status_code=stored.status_code, headers=headers)


async def _dry_run(
    kind: OperationKind,
    cluster_id: str,
    context: ContextDep,
    principal: Principal,
    body: OperationRequest,
) -> JSONResponse:
    async with unit_of_work(context.sessions) as session:
        cluster = await cluster_service.get(session, principal.org_id, cluster_id)
        state = ClusterState(cluster.state)
        try:
            next_state(state, RULES[kind].accepted)
        except TransitionRefused:
            raise service.refused(state.value, kind.value) from None
        preview = await dry_run.plan_preview(session, cluster, kind, body.mode)
    # The last evaluation for this operation, as it is: a dry run calls nothing.
    last = cluster.readiness if (cluster.readiness or {}).get("operation") == kind.value else None
    out = DryRunOut(cluster_id=cluster.id, kind=kind, mode=body.mode, readiness=last, **preview)
    return JSONResponse(out.model_dump(mode="json"), status_code=200)


async def _check_ready(cluster_id: str, context: ContextDep, principal: Principal) -> None:
    """A planned operation waits for a pair that is ready (the last evaluation; a first one
    now if there is none). Pairs on the default plan have nothing to probe."""
    async with unit_of_work(context.sessions) as session:
        cluster = await cluster_service.get(session, principal.org_id, cluster_id)
    if cluster.plan is None or readiness.next_kind(cluster.state) is None:
        return  # mid-switch: the state machine answers
    evaluation = await readiness.current(action_deps(context), cluster)
    if not evaluation["ready"]:
        failing = [c for c in evaluation["checks"] if not c["ok"]]
        names = ", ".join(f"{c['step']}/{c['name']}" for c in failing)
        raise NotReady(
            f'the pair is not ready ({names}); fix it, or send "ignore_readiness": true',
            failing_checks=failing,
            checked_at=evaluation["checked_at"],
        )


_START_DOC = {
    "status_code": 202,
    "response_model": OperationOut,
    "responses": {
        200: {
            "model": DryRunOut,
            "description": 'A dry run (`"dry_run": true`): the plan as it would run; '
            "nothing else happens",
        },
        **problems(400, 404, 409, 422),
    },
    "openapi_extra": {
        "parameters": [
            {
                **IDEMPOTENCY_KEY,
                "description": f"{IDEMPOTENCY_KEY['description']} A dry run needs none.",
            }
        ]
    },
}


@router.post(
    "/v1/clusters/{cluster_id}/failover",
    summary="Fail the pair over to its secondary",
    **_START_DOC,  # type: ignore[arg-type]
)
async def failover(
    cluster_id: ClusterId,
    request: Request,
    context: ContextDep,
    principal: Operator,
    body: OperationRequest | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    return await _start(
        OperationKind.FAILOVER, cluster_id, request, context, principal, body, idempotency_key
    )


@router.post(
    "/v1/clusters/{cluster_id}/failback",
    summary="Fail the pair back to its primary",
    **_START_DOC,  # type: ignore[arg-type]
)
async def failback(
    cluster_id: ClusterId,
    request: Request,
    context: ContextDep,
    principal: Operator,
    body: OperationRequest | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    return await _start(
        OperationKind.FAILBACK, cluster_id, request, context, principal, body, idempotency_key
    )


@router.post(
    "/v1/clusters/{cluster_id}/deployments/retry",
    summary="Retry the deployments whose last validation failed (changes no state)",
    status_code=202,
    response_model=OperationOut,
    responses=problems(400, 404, 409, 422),
    openapi_extra={"parameters": [IDEMPOTENCY_KEY]},
)
async def retry_deployments(
    cluster_id: ClusterId,
    request: Request,
    context: ContextDep,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    key = idempotency.validate_key(idempotency_key)
    print_ = idempotency.fingerprint("POST", request.url.path, None)

    async def produce(session):  # type: ignore[no-untyped-def]
        operation = await service.start_retry(
            session, context.enqueue, principal.org_id, cluster_id, principal.actor
        )
        out = service.render(operation, await service.steps_of(session, operation.id))
        audit.record(session, request, 202, detail={"operation_id": operation.id})
        return 202, out.model_dump(mode="json"), {"Location": f"/v1/operations/{operation.id}"}

    stored = await idempotency.run_once(
        context.sessions, principal.org_id, key, print_, produce, cluster_id=cluster_id
    )
    return await answer_stored(stored, request, context)


@router.get(
    "/v1/operations/{operation_id}",
    response_model=OperationOut,
    summary="Get an operation; ?wait=N holds the request until it is done",
    responses={
        **problems(404, 422),
        429: {
            **problems(429)[429],
            "description": "This token or this API process holds its limit of open event "
            "streams and long polls; see Retry-After",
        },
    },
)
async def get_operation(
    operation_id: OperationId,
    request: Request,
    context: ContextDep,
    principal: Viewer,
    wait: Annotated[int, Query(ge=0, le=60, description="Seconds to wait for done")] = 0,
) -> OperationOut:
    async def client_gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def hung_up() -> None:
        """The client has gone, or this process is shutting down: answer now."""
        gone = asyncio.ensure_future(client_gone())
        draining = asyncio.ensure_future(context.draining.wait())
        try:
            await asyncio.wait({gone, draining}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            draining.cancel()

    out = await waiting.wait_until_done(
        context.sessions,
        context.notifier,
        principal.org_id,
        operation_id,
        wait,
        slots=context.slots,
        token_id=principal.token_id,
        hung_up=hung_up,
    )
    # Already validated: skip FastAPI's second pass through response_model.
    return Response(out.model_dump_json(), media_type="application/json")  # type: ignore[return-value]


@router.get(
    "/v1/operations",
    response_model=Page[OperationOut],
    summary="List operations, newest first",
    responses=problems(400, 422),
)
async def list_operations(
    session: SessionDep,
    principal: Viewer,
    cluster_id: Annotated[str | None, Query(max_length=40, pattern=NO_NUL)] = None,
    status: OperationStatus | None = None,
    kind: OperationKind | None = None,
    page_size: PageSize = 50,
    page_token: PageToken = None,
) -> Page[OperationOut]:
    items, token = await service.list_operations(
        session,
        org_id=principal.org_id,
        cluster_id=cluster_id,
        status=status,
        kind=kind,
        page_size=page_size,
        page_token=page_token,
    )
    return Page[OperationOut](items=items, next_page_token=token)


@router.post(
    "/v1/operations/{operation_id}/cancel",
    status_code=202,
    response_model=OperationOut,
    summary="Cancel: undo the reversible steps and return to the origin state",
    responses=problems(404, 409, 422),
)
async def cancel_operation(
    operation_id: OperationId,
    session: SessionDep,
    context: ContextDep,
    response: Response,
    principal: Operator,
) -> OperationOut:
    operation = await service.cancel(session, context.enqueue, principal.org_id, operation_id)
    response.headers["Location"] = f"/v1/operations/{operation.id}"
    return service.render(operation, await service.steps_of(session, operation.id))


@router.post(
    "/v1/operations/{operation_id}/retry",
    status_code=202,
    response_model=OperationOut,
    summary="Resume a failed operation from its failed step",
    responses=problems(404, 409, 422),
)
async def retry_operation(
    operation_id: OperationId,
    session: SessionDep,
    context: ContextDep,
    response: Response,
    principal: Operator,
) -> OperationOut:
    operation = await service.retry(session, context.enqueue, principal.org_id, operation_id)
    response.headers["Location"] = f"/v1/operations/{operation.id}"
    return service.render(operation, await service.steps_of(session, operation.id))


async def _decide(
    approved: bool,
    operation_id: str,
    body: Decision | None,
    session: SessionDep,
    context: ContextDep,
    response: Response,
    principal: Operator,
) -> OperationOut:
    operation = await service.decide(
        session,
        context.enqueue,
        principal,
        operation_id,
        approved,
        body.comment if body is not None else None,
    )
    response.headers["Location"] = f"/v1/operations/{operation.id}"
    return service.render(operation, await service.steps_of(session, operation.id))


@router.post(
    "/v1/operations/{operation_id}/approve",
    status_code=202,
    response_model=OperationOut,
    summary="Approve the step that waits for a person; the operation goes on",
    responses=problems(400, 403, 404, 409, 422),
)
async def approve_operation(
    operation_id: OperationId,
    session: SessionDep,
    context: ContextDep,
    response: Response,
    principal: Operator,
    body: Decision | None = None,
) -> OperationOut:
    return await _decide(True, operation_id, body, session, context, response, principal)


@router.post(
    "/v1/operations/{operation_id}/reject",
    status_code=202,
    response_model=OperationOut,
    summary="Reject the step that waits for a person: before the point of no return the "
    "operation rolls back and ends cancelled; past it, it fails and needs attention",
    responses=problems(400, 403, 404, 409, 422),
)
async def reject_operation(
    operation_id: OperationId,
    session: SessionDep,
    context: ContextDep,
    response: Response,
    principal: Operator,
    body: Decision | None = None,
) -> OperationOut:
    return await _decide(False, operation_id, body, session, context, response, principal)
