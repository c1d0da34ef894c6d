"""Region evacuation and batches (DESIGN section 13)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from app.access import audit
from app.access.auth import Operator, Viewer
from app.batches import service
from app.batches.schemas import BatchOut, EvacuateRequest
from app.common import NO_NUL, Page
from app.deps import ContextDep, PageSize, PageToken, SessionDep
from app.operations import idempotency
from app.operations.api import IDEMPOTENCY_KEY, IdempotencyKey, answer_stored
from app.problems import problems

router = APIRouter(tags=["batches"])

RegionPath = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$", description="A region.")
]
BatchId = Annotated[str, Path(pattern=NO_NUL, max_length=40, description="The batch's id.")]


@router.post(
    "/v1/regions/{region}/evacuate",
    status_code=202,
    response_model=BatchOut,
    summary="Move every pair active in a region out of it (a batch of failovers and failbacks)",
    responses={
        **problems(400, 409, 422),
        404: {**problems(404)[404], "description": "No pair has a site in this region"},
    },
    openapi_extra={"parameters": [IDEMPOTENCY_KEY]},
)
async def evacuate_region(
    region: RegionPath,
    request: Request,
    context: ContextDep,
    principal: Operator,
    body: EvacuateRequest | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    body = body or EvacuateRequest()
    key = idempotency.validate_key(idempotency_key)
    print_ = idempotency.fingerprint("POST", request.url.path, body.model_dump(mode="json"))

    async def produce(session):  # type: ignore[no-untyped-def]
        batch = await service.evacuate(
            session, context, principal.org_id, region, body, principal.actor
        )
        out = await service.render(session, batch)
        audit.record(session, request, 202, detail={"batch_id": batch.id})
        return 202, out.model_dump(mode="json"), {"Location": f"/v1/batches/{batch.id}"}

    stored = await idempotency.run_once(context.sessions, principal.org_id, key, print_, produce)
    return await answer_stored(stored, request, context)


@router.get(
    "/v1/batches",
    response_model=Page[BatchOut],
    summary="Batches, newest first",
    responses=problems(400, 422),
)
async def list_batches(
    session: SessionDep, principal: Viewer, page_size: PageSize = 20, page_token: PageToken = None
) -> Page[BatchOut]:
    items, token = await service.list_batches(session, principal.org_id, page_size, page_token)
    return Page[BatchOut](items=items, next_page_token=token)


@router.get(
    "/v1/batches/{batch_id}",
    response_model=BatchOut,
    summary="A batch: its counts by status and a page of its pairs with their operations",
    responses=problems(400, 404, 422),
)
async def get_batch(
    batch_id: BatchId,
    session: SessionDep,
    principal: Viewer,
    page_size: PageSize = 100,
    page_token: PageToken = None,
) -> BatchOut:
    batch = await service.get(session, principal.org_id, batch_id)
    return await service.render(session, batch, page_size, page_token)


@router.post(
    "/v1/batches/{batch_id}/cancel",
    status_code=202,
    response_model=BatchOut,
    summary="Start nothing more; what runs runs to its end",
    responses=problems(404, 422),
)
async def cancel_batch(batch_id: BatchId, session: SessionDep, principal: Operator) -> BatchOut:
    batch = await service.cancel(session, principal.org_id, batch_id)
    return await service.render(session, batch)
