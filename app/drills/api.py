"""POST /v1/clusters/{id}/drills: rehearse the pair's next switch without moving anything
(DESIGN.md section 14). The drill is an operation; its report is on it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.access import audit
from app.access.auth import Operator
from app.deps import ClusterId, ContextDep
from app.drills import service
from app.operations import idempotency
from app.operations import service as operations
from app.operations.api import IDEMPOTENCY_KEY, IdempotencyKey, answer_stored
from app.operations.schemas import DrillRequest, OperationOut
from app.problems import problems

router = APIRouter(tags=["operations"])


@router.post(
    "/v1/clusters/{cluster_id}/drills",
    summary="Start a drill: rehearse the pair's next failover or failback, moving nothing",
    description="An operation of kind `drill`: each step runs its `drill` action, else "
    "(before the point of no return) its readiness probe, else is skipped; no `undo` runs; "
    "the plan's `cleanup` runs at the end, also after a failure or a cancel. The pair's "
    "state does not change. Its `report` is on the operation. 409 while a failover or "
    "failback of the pair is unfinished (the problem names it) or another drill runs.",
    status_code=202,
    response_model=OperationOut,
    responses=problems(400, 404, 409, 422),
    openapi_extra={"parameters": [IDEMPOTENCY_KEY]},
)
async def start_drill(
    cluster_id: ClusterId,
    request: Request,
    context: ContextDep,
    principal: Operator,
    body: DrillRequest | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    body = body or DrillRequest()
    key = idempotency.validate_key(idempotency_key)
    print_ = idempotency.fingerprint("POST", request.url.path, body.model_dump(mode="json"))

    async def produce(session):  # type: ignore[no-untyped-def]
        operation = await service.start(
            session, context.enqueue, principal.org_id, cluster_id, body.reason, principal.actor
        )
        out = operations.render(operation, await operations.steps_of(session, operation.id))
        audit.record(session, request, 202, detail={"operation_id": operation.id})
        return 202, out.model_dump(mode="json"), {"Location": f"/v1/operations/{operation.id}"}

    stored = await idempotency.run_once(
        context.sessions, principal.org_id, key, print_, produce, cluster_id=cluster_id
    )
    return await answer_stored(stored, request, context)
