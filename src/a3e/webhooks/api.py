"""A workspace's outgoing webhooks (admins and owners). The secret is shown once: in the create
and rotate-secret responses."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from a3e.core.database import SessionDep
from a3e.core.pagination import Page, PageParams, page_params
from a3e.webhooks import service
from a3e.webhooks.schemas import DeliveryOut, WebhookCreate, WebhookOut, WebhookUpdate, WebhookWithSecret
from a3e.workspaces.permissions import Action
from a3e.workspaces.scoping import WorkspaceAccess, require

router = APIRouter(prefix="/api/v1/workspaces/{workspace_id}/webhooks", tags=["webhooks"])

ManageWebhooks = Annotated[WorkspaceAccess, require(Action.WEBHOOKS_MANAGE)]
WebhookId = Annotated[uuid.UUID, Path(description="The webhook endpoint's id")]
DeliveryId = Annotated[uuid.UUID, Path(description="The delivery's id")]


@router.get("", summary="The workspace's webhook endpoints, with their health (never their secrets)")
def list_webhooks(
    session: SessionDep, page: Annotated[PageParams, Depends(page_params)], access: ManageWebhooks
) -> Page[WebhookOut]:
    endpoints, total = service.list_endpoints(session, access, page)
    return Page(items=[service.endpoint_out(e) for e in endpoints], total=total, **page.model_dump())


@router.post("", status_code=201, summary="Register an endpoint; its signing secret is shown only in this response")
def create_webhook(body: WebhookCreate, request: Request, session: SessionDep, access: ManageWebhooks) -> WebhookWithSecret:
    endpoint, secret = service.create_endpoint(session, access, body, request.app.state.settings, request=request)
    return WebhookWithSecret(**service.endpoint_out(endpoint).model_dump(), secret=secret)


@router.get("/{webhook_id}", summary="One endpoint and its health")
def get_webhook(webhook_id: WebhookId, session: SessionDep, access: ManageWebhooks) -> WebhookOut:
    return service.endpoint_out(service.get_endpoint(session, access, webhook_id))


@router.patch("/{webhook_id}", summary="Change an endpoint's URL, events, description, or enable/disable it")
def update_webhook(
    webhook_id: WebhookId, body: WebhookUpdate, request: Request, session: SessionDep, access: ManageWebhooks
) -> WebhookOut:
    endpoint = service.update_endpoint(session, access, webhook_id, body, request.app.state.settings, request=request)
    return service.endpoint_out(endpoint)


@router.delete("/{webhook_id}", status_code=204, response_class=Response, summary="Remove an endpoint and its delivery log")
def delete_webhook(webhook_id: WebhookId, request: Request, session: SessionDep, access: ManageWebhooks) -> Response:
    service.delete_endpoint(session, access, webhook_id, request=request)
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/rotate-secret",
    summary="A new signing secret, shown only in this response; the old one also signs for 24 hours",
)
def rotate_webhook_secret(
    webhook_id: WebhookId, request: Request, session: SessionDep, access: ManageWebhooks
) -> WebhookWithSecret:
    endpoint, secret = service.rotate_secret(session, access, webhook_id, request.app.state.settings, request=request)
    return WebhookWithSecret(**service.endpoint_out(endpoint).model_dump(), secret=secret)


@router.get("/{webhook_id}/deliveries", summary="The endpoint's deliveries, newest first, each with its attempts")
def list_webhook_deliveries(
    webhook_id: WebhookId,
    session: SessionDep,
    page: Annotated[PageParams, Depends(page_params)],
    access: ManageWebhooks,
    status: Annotated[Literal["pending", "succeeded", "failed", "cancelled"] | None, Query()] = None,
) -> Page[DeliveryOut]:
    items, total = service.list_deliveries(session, access, webhook_id, page, status=status)
    return Page(items=items, total=total, **page.model_dump())


@router.get("/{webhook_id}/deliveries/{delivery_id}", summary="One delivery with its attempts")
def get_webhook_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId, session: SessionDep, access: ManageWebhooks
) -> DeliveryOut:
    return service.get_delivery(session, access, webhook_id, delivery_id)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    summary="Attempt the delivery again now (same message id); the outcome shows in its attempt log",
)
def redeliver_webhook_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId, request: Request, session: SessionDep, access: ManageWebhooks
) -> DeliveryOut:
    service.redeliver(session, access, webhook_id, delivery_id, request=request)
    return service.get_delivery(session, access, webhook_id, delivery_id)
