"""A workspace's webhook endpoints: registered, changed, removed, their secrets rotated, their
deliveries listed and redelivered. Admins and owners only (`Action.WEBHOOKS_MANAGE`); every change
is audited. Publishing is in `publish`, sending in `jobs`.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from a3e.audit.service import record_event
from a3e.core.errors import AppError, Conflict, NotFound
from a3e.core.models import utcnow
from a3e.core.pagination import PageParams
from a3e.webhooks.address import UnsafeAddress, vet
from a3e.webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from a3e.webhooks.publish import queue_delivery
from a3e.webhooks.schemas import (
    AttemptOut,
    DeliveryOut,
    WebhookCreate,
    WebhookHealth,
    WebhookOut,
    WebhookUpdate,
)
from a3e.webhooks.signing import encrypt_secret, new_secret
from a3e.workspaces.scoping import WorkspaceAccess

if TYPE_CHECKING:
    from starlette.requests import Request

    from a3e.core.settings import Settings

# After a rotation the old secret still signs (alongside the new one) for this long, so that
# receivers can switch without dropping a delivery.
ROTATION_OVERLAP = timedelta(hours=24)


class UnsafeWebhookUrl(AppError):
    status_code = 422
    code = "webhook_url_refused"


def _secret_key(settings: Settings) -> str:
    if settings.secret_key is None:  # pragma: no cover - load_settings always provides one
        raise AppError("SECRET_KEY is not set; it protects webhook secrets", status_code=503, code="not_configured")
    return settings.secret_key.get_secret_value()


def _vetted_url(settings: Settings, url: str) -> str:
    url = url.strip()
    try:
        vet(url, allow_http=settings.webhooks_http_allowed, allow_private=settings.webhooks_allow_private)
    except UnsafeAddress as exc:
        raise UnsafeWebhookUrl(f"url: {url} {exc}", details={"field": "url"}) from None
    return url


def endpoint_out(endpoint: WebhookEndpoint) -> WebhookOut:
    if not endpoint.enabled:
        status = "disabled"
    elif endpoint.consecutive_failures:
        status = "failing"
    elif endpoint.last_success_at is not None:
        status = "healthy"
    else:
        status = "new"
    previous_until = endpoint.previous_secret_expires_at
    return WebhookOut(
        id=endpoint.id, workspace_id=endpoint.workspace_id, url=endpoint.url, description=endpoint.description,
        event_types=list(endpoint.event_types), enabled=endpoint.enabled,
        health=WebhookHealth(
            status=status, consecutive_failures=endpoint.consecutive_failures, failing_since=endpoint.failing_since,
            last_success_at=endpoint.last_success_at, last_failure_at=endpoint.last_failure_at,
            last_failure_reason=endpoint.last_failure_reason, disabled_at=endpoint.disabled_at,
            disabled_reason=endpoint.disabled_reason,
        ),
        previous_secret_valid_until=previous_until if previous_until and previous_until > utcnow() else None,
        created_by_id=endpoint.created_by_id, created_at=endpoint.created_at, updated_at=endpoint.updated_at,
    )


def _audit(session: Session, access: WorkspaceAccess, action: str, endpoint: WebhookEndpoint, request: Request | None,
           **details: Any) -> None:
    record_event(
        session, action, request=request, principal=access.principal, workspace_id=access.workspace_id,
        target_type="webhook", target_id=endpoint.id, details={"url": endpoint.url, **details},
    )


def create_endpoint(
    session: Session, access: WorkspaceAccess, body: WebhookCreate, settings: Settings, *, request: Request | None = None
) -> tuple[WebhookEndpoint, str]:
    url = _vetted_url(settings, body.url)
    secret = new_secret()
    now = utcnow()
    endpoint = WebhookEndpoint(
        id=uuid.uuid4(), workspace_id=access.workspace_id, url=url, description=body.description or None,
        event_types=list(body.event_types), secret_encrypted=encrypt_secret(secret, _secret_key(settings)),
        enabled=body.enabled, disabled_at=None if body.enabled else now,
        disabled_reason=None if body.enabled else "created disabled", consecutive_failures=0,
        created_by_id=access.principal.user.id if access.principal.user else None, created_at=now, updated_at=now,
    )
    session.add(endpoint)
    session.flush()
    _audit(session, access, "webhook.created", endpoint, request, event_types=endpoint.event_types,
           enabled=endpoint.enabled)
    return endpoint, secret


def list_endpoints(session: Session, access: WorkspaceAccess, page: PageParams) -> tuple[list[WebhookEndpoint], int]:
    endpoints = list(session.scalars(
        access.scoped(select(WebhookEndpoint), WebhookEndpoint)
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id).limit(page.limit).offset(page.offset)
    ))
    total = session.scalar(access.scoped(select(func.count()).select_from(WebhookEndpoint), WebhookEndpoint)) or 0
    return endpoints, int(total)


def get_endpoint(session: Session, access: WorkspaceAccess, webhook_id: uuid.UUID, *, lock: bool = False) -> WebhookEndpoint:
    statement = access.scoped(select(WebhookEndpoint), WebhookEndpoint).where(WebhookEndpoint.id == webhook_id)
    endpoint = session.scalar(statement.with_for_update() if lock else statement)
    if endpoint is None:
        raise NotFound("Webhook endpoint not found", code="webhook_not_found", details={"webhook_id": str(webhook_id)})
    return endpoint


def _cancel_pending(session: Session, endpoint: WebhookEndpoint, why: str) -> None:
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == DeliveryStatus.PENDING.value)
        .values(status=DeliveryStatus.CANCELLED.value, next_attempt_at=None, last_error=why)
        .execution_options(synchronize_session=False)
    )


def update_endpoint(
    session: Session, access: WorkspaceAccess, webhook_id: uuid.UUID, body: WebhookUpdate, settings: Settings, *,
    request: Request | None = None,
) -> WebhookEndpoint:
    endpoint = get_endpoint(session, access, webhook_id, lock=True)
    given = body.model_dump(exclude_unset=True)
    changes: dict[str, Any] = {}
    if given.get("url") is not None:
        url = _vetted_url(settings, given["url"])
        if url != endpoint.url:
            changes["url"] = {"from": endpoint.url, "to": url}
            endpoint.url = url
    if given.get("event_types") is not None and list(given["event_types"]) != list(endpoint.event_types):
        changes["event_types"] = {"from": list(endpoint.event_types), "to": list(given["event_types"])}
        endpoint.event_types = list(given["event_types"])
    if "description" in given and (given["description"] or None) != endpoint.description:
        changes["description"] = {"from": endpoint.description, "to": given["description"] or None}
        endpoint.description = given["description"] or None
    if given.get("enabled") is not None and given["enabled"] != endpoint.enabled:
        changes["enabled"] = {"from": endpoint.enabled, "to": given["enabled"]}
        endpoint.enabled = given["enabled"]
        if endpoint.enabled:  # a fresh start: the health counts from here
            endpoint.disabled_at = endpoint.disabled_reason = None
            endpoint.consecutive_failures = 0
            endpoint.failing_since = None
        else:
            who = access.principal.user.email if access.principal.user else "an API key"
            endpoint.disabled_at, endpoint.disabled_reason = utcnow(), f"disabled by {who}"
            _cancel_pending(session, endpoint, "the endpoint was disabled")
    if changes:
        endpoint.updated_at = utcnow()
        session.flush()
        _audit(session, access, "webhook.updated", endpoint, request, changes=changes)
    return endpoint


def delete_endpoint(session: Session, access: WorkspaceAccess, webhook_id: uuid.UUID, *, request: Request | None = None) -> None:
    endpoint = get_endpoint(session, access, webhook_id, lock=True)
    _audit(session, access, "webhook.deleted", endpoint, request, event_types=list(endpoint.event_types))
    session.delete(endpoint)  # its deliveries and their attempts go with it (ON DELETE CASCADE)
    session.flush()


def rotate_secret(
    session: Session, access: WorkspaceAccess, webhook_id: uuid.UUID, settings: Settings, *, request: Request | None = None
) -> tuple[WebhookEndpoint, str]:
    """A new secret, shown once; the old one keeps signing too for ROTATION_OVERLAP."""
    endpoint = get_endpoint(session, access, webhook_id, lock=True)
    secret = new_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = utcnow() + ROTATION_OVERLAP
    endpoint.secret_encrypted = encrypt_secret(secret, _secret_key(settings))
    endpoint.updated_at = utcnow()
    session.flush()
    _audit(session, access, "webhook.secret_rotated", endpoint, request,
           previous_valid_until=endpoint.previous_secret_expires_at)
    return endpoint, secret


def _deliveries_out(session: Session, rows: list[tuple[WebhookDelivery, WebhookEvent]]) -> list[DeliveryOut]:
    ids = [delivery.id for delivery, _ in rows]
    attempts: dict[uuid.UUID, list[AttemptOut]] = {delivery_id: [] for delivery_id in ids}
    if ids:
        for attempt in session.scalars(
            select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids)).order_by(WebhookAttempt.id)
        ):
            attempts[attempt.delivery_id].append(AttemptOut.model_validate(attempt, from_attributes=True))
    return [
        DeliveryOut(
            id=delivery.id, endpoint_id=delivery.endpoint_id, event_id=event.id, event_type=event.type,
            status=delivery.status, attempts=delivery.attempts, next_attempt_at=delivery.next_attempt_at,
            last_attempt_at=delivery.last_attempt_at, last_status_code=delivery.last_status_code,
            last_error=delivery.last_error, succeeded_at=delivery.succeeded_at, created_at=delivery.created_at,
            payload=json.loads(event.payload), attempt_log=attempts[delivery.id],
        )
        for delivery, event in rows
    ]


def list_deliveries(
    session: Session, access: WorkspaceAccess, webhook_id: uuid.UUID, page: PageParams, *, status: str | None = None
) -> tuple[list[DeliveryOut], int]:
    """An endpoint's deliveries, newest first, each with its attempt log."""
    endpoint = get_endpoint(session, access, webhook_id)
    statement = access.scoped(select(WebhookDelivery, WebhookEvent), WebhookDelivery).join(
        WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id
    ).where(WebhookDelivery.endpoint_id == endpoint.id)
    count = access.scoped(select(func.count()).select_from(WebhookDelivery), WebhookDelivery).where(
        WebhookDelivery.endpoint_id == endpoint.id
    )
    if status is not None:
        statement = statement.where(WebhookDelivery.status == status)
        count = count.where(WebhookDelivery.status == status)
    rows = session.execute(
        statement.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id).limit(page.limit).offset(page.offset)
    ).all()
    return _deliveries_out(session, [tuple(row) for row in rows]), int(session.scalar(count) or 0)


def get_delivery(session: Session, access: WorkspaceAccess, webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> DeliveryOut:
    row = session.execute(
        access.scoped(select(WebhookDelivery, WebhookEvent), WebhookDelivery)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == webhook_id)
    ).first()
    if row is None:
        raise NotFound("Delivery not found", code="delivery_not_found", details={"delivery_id": str(delivery_id)})
    return _deliveries_out(session, [tuple(row)])[0]


def redeliver(
    session: Session, access: WorkspaceAccess, webhook_id: uuid.UUID, delivery_id: uuid.UUID, *,
    request: Request | None = None,
) -> None:
    """A new attempt of the same message (same webhook-id), now, whatever the delivery's state."""
    endpoint = get_endpoint(session, access, webhook_id)
    delivery = session.scalar(
        access.scoped(select(WebhookDelivery), WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint.id)
        .with_for_update()
    )
    if delivery is None:
        raise NotFound("Delivery not found", code="delivery_not_found", details={"delivery_id": str(delivery_id)})
    if not endpoint.enabled:
        raise Conflict("The endpoint is disabled; enable it first (PATCH with \"enabled\": true)", code="webhook_disabled")
    previous = delivery.status
    delivery.status = DeliveryStatus.PENDING.value
    delivery.next_attempt_at = utcnow()
    session.flush()
    _audit(session, access, "webhook.redelivered", endpoint, request, delivery_id=delivery.id,
           event_id=delivery.event_id, previous_status=previous)
    queue_delivery(session, delivery.id, manual=True)
