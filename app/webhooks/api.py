from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.access import audit
from app.access.auth import Admin, Principal, Role, Viewer
from app.common import Page
from app.db import unit_of_work
from app.deps import ContextDep, DeliveryId, PageSize, PageToken, SessionDep, WebhookId
from app.problems import problems
from app.webhooks import service as service
from app.webhooks.models import DeliveryStatus
from app.webhooks.schemas import DeliveryOut, PingResult, WebhookCreate, WebhookOut, WebhookPatch

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _sees_urls(principal: Principal) -> bool:
    """A webhook URL often carries a token: below admin, its query and user info are masked."""
    return principal.role == Role.ADMIN


@router.post(
    "",
    status_code=201,
    response_model=WebhookOut,
    summary="Register a webhook endpoint; the response shows its secret, this once",
    responses=problems(400, 422),
)
async def create_webhook(
    body: WebhookCreate,
    session: SessionDep,
    principal: Admin,
    context: ContextDep,
    response: Response,
) -> WebhookOut:
    endpoint = await service.create(session, principal.org_id, body, context.settings)
    response.headers["Location"] = f"/v1/webhooks/{endpoint.id}"
    return service.render(endpoint, reveal=True)


@router.get(
    "",
    response_model=Page[WebhookOut],
    summary="List webhook endpoints",
    responses=problems(400, 422),
)
async def list_webhooks(
    session: SessionDep, principal: Viewer, page_size: PageSize = 50, page_token: PageToken = None
) -> Page[WebhookOut]:
    items, token = await service.list_endpoints(
        session, principal.org_id, page_size, page_token, full_url=_sees_urls(principal)
    )
    return Page[WebhookOut](items=items, next_page_token=token)


@router.get(
    "/{webhook_id}",
    response_model=WebhookOut,
    summary="Get a webhook endpoint (secret masked)",
    responses=problems(404, 422),
)
async def get_webhook(webhook_id: WebhookId, session: SessionDep, principal: Viewer) -> WebhookOut:
    endpoint = await service.get(session, principal.org_id, webhook_id)
    return service.render(endpoint, full_url=_sees_urls(principal))


@router.patch(
    "/{webhook_id}",
    response_model=WebhookOut,
    summary="Change a webhook endpoint; `enabled: true` re-enables a disabled one",
    responses=problems(400, 404, 422),
)
async def patch_webhook(
    webhook_id: WebhookId,
    body: WebhookPatch,
    session: SessionDep,
    principal: Admin,
    context: ContextDep,
) -> WebhookOut:
    return service.render(
        await service.update(session, principal.org_id, webhook_id, body, context.settings)
    )


@router.delete(
    "/{webhook_id}",
    status_code=204,
    summary="Delete a webhook endpoint and its delivery log",
    responses=problems(404, 422),
)
async def delete_webhook(webhook_id: WebhookId, session: SessionDep, principal: Admin) -> Response:
    await service.remove(session, principal.org_id, webhook_id)
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=WebhookOut,
    summary="New secret (shown this once); the old one keeps signing for 24 h",
    responses=problems(404, 422),
)
async def rotate_secret(
    webhook_id: WebhookId, session: SessionDep, principal: Admin, context: ContextDep
) -> WebhookOut:
    endpoint = await service.rotate_secret(session, principal.org_id, webhook_id, context.settings)
    return service.render(endpoint, reveal=True)


@router.post(
    "/{webhook_id}/test",
    response_model=PingResult,
    summary="Send a signed webhook.ping now and report the receiver's answer",
    responses=problems(404, 422),
)
async def test_webhook(
    webhook_id: WebhookId, request: Request, principal: Admin, context: ContextDep
) -> PingResult:
    # No request session: its transaction would stay open while the receiver answers.
    result = await service.ping(
        context.sessions, principal.org_id, webhook_id, context.http, context.settings
    )
    async with unit_of_work(context.sessions) as session:
        audit.record(session, request, 200)
    return result


@router.get(
    "/{webhook_id}/deliveries",
    response_model=Page[DeliveryOut],
    summary="Deliveries to this endpoint, newest first, each with its attempts",
    responses=problems(400, 404, 422),
)
async def list_deliveries(
    webhook_id: WebhookId,
    session: SessionDep,
    principal: Viewer,
    status: Annotated[DeliveryStatus | None, Query()] = None,
    page_size: PageSize = 50,
    page_token: PageToken = None,
) -> Page[DeliveryOut]:
    items, token = await service.list_deliveries(
        session, principal.org_id, webhook_id, status, page_size, page_token
    )
    return Page[DeliveryOut](items=items, next_page_token=token)


@router.get(
    "/{webhook_id}/deliveries/{delivery_id}",
    response_model=DeliveryOut,
    summary="One delivery and its attempts",
    responses=problems(404, 422),
)
async def get_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId, session: SessionDep, principal: Viewer
) -> DeliveryOut:
    return await service.get_delivery(session, principal.org_id, webhook_id, delivery_id)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=DeliveryOut,
    summary="Send the delivery's event again (same webhook-id, new schedule)",
    responses=problems(404, 409, 422),
)
async def redeliver(
    webhook_id: WebhookId, delivery_id: DeliveryId, session: SessionDep, principal: Admin
) -> DeliveryOut:
    return await service.redeliver(session, principal.org_id, webhook_id, delivery_id)
