"""Billing endpoints: the workspace's plan and usage, Stripe Checkout and the customer portal
(owners and admins), and the Stripe event endpoint (signed by Stripe, no user).

Mounted only when the `billing` feature runs (a3e.features.BILLING); otherwise its paths answer
503 feature_unavailable.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool

from a3e.billing import service
from a3e.billing.plans import PlanName
from a3e.billing.schemas import BillingOut, CheckoutIn, EventAck, LimitsOut, RedirectOut, UsageOut
from a3e.core.database import SessionDep
from a3e.core.errors import AppError
from a3e.core.settings import Settings
from a3e.workspaces.permissions import Action
from a3e.workspaces.scoping import WorkspaceAccess, require

logger = logging.getLogger("a3e.billing")

workspace_router = APIRouter(prefix="/api/v1/workspaces/{workspace_id}/billing", tags=["billing"])
events_router = APIRouter(prefix="/api/v1/webhooks", tags=["billing"])
routers = [workspace_router, events_router]

BillingReader = Annotated[WorkspaceAccess, require(Action.BILLING_READ)]
BillingManager = Annotated[WorkspaceAccess, require(Action.BILLING_MANAGE)]


def init_billing(app: FastAPI, settings: Settings) -> None:
    """The feature's start: one Stripe client per app, built at its first use (no import of the
    library and no network until then)."""
    from a3e.billing.stripe_client import LazyStripeClient

    app.state.stripe = LazyStripeClient(settings)


def _billing_out(session: Any, settings: Settings, access: WorkspaceAccess) -> BillingOut:
    state = service.workspace_state(session, settings, access.workspace_id)
    used = service.usage(session, access.workspace_id)
    failing, _ = service.failing_events(session, access.workspace_id)
    limits = state.limits
    return BillingOut(
        workspace_id=str(access.workspace_id),
        plan=state.plan.name.value,
        status=state.status,
        trial_ends_at=state.trial_ends_at,
        current_period_end=state.current_period_end,
        cancel_at_period_end=state.cancel_at_period_end,
        past_due_since=state.past_due_since,
        grace_ends_at=state.grace_ends_at,
        has_customer=state.has_customer,
        limits=LimitsOut(seats=limits.seats, documents=limits.documents, storage_mb=limits.storage_mb),
        usage=UsageOut(
            seats=used.seats,
            documents=used.documents,
            storage_bytes=used.storage_bytes,
            storage_mb=round(used.storage_bytes / service.MEGABYTE, 2),
        ),
        failing_events=failing,
        checkout=service.checkout_path(access.workspace_id),
    )


@workspace_router.get("", summary="The workspace's plan, subscription status, limits and usage (owners and admins)")
def get_billing(request: Request, session: SessionDep, access: BillingReader) -> BillingOut:
    return _billing_out(session, request.app.state.settings, access)


@workspace_router.post(
    "/checkout",
    summary="Start a Stripe Checkout for the monthly or annual plan; returns the URL to send the person to",
)
def start_checkout(
    body: CheckoutIn,
    request: Request,
    session: SessionDep,
    access: BillingManager,
    idempotency_key: Annotated[
        str | None, Header(max_length=200, description="Repeat a checkout without making a second session")
    ] = None,
) -> RedirectOut:
    url = service.start_checkout(
        session,
        request.app.state.stripe.get(),
        request.app.state.settings,
        access,
        PlanName(body.plan),
        idempotency_key=idempotency_key,
        request=request,
    )
    return RedirectOut(url=url)


@workspace_router.post("/portal", summary="A Stripe customer-portal URL (invoices, payment method, cancel)")
def open_portal(request: Request, session: SessionDep, access: BillingManager) -> RedirectOut:
    url = service.open_portal(session, request.app.state.stripe.get(), request.app.state.settings, access, request=request)
    return RedirectOut(url=url)


class BadStripeEvent(AppError):
    status_code = 400
    code = "invalid_stripe_event"


def _verified_event(settings: Settings, body: bytes, signature: str | None) -> tuple[dict[str, Any], str]:
    """The event, once its signature holds for this exact body (HMAC-SHA256 over "{t}.{body}" with
    STRIPE_WEBHOOK_SECRET, within the tolerance); 400 otherwise. Never parsed before verified."""
    import stripe

    if not signature:
        raise BadStripeEvent("Missing Stripe-Signature header: only events signed by Stripe are accepted")
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadStripeEvent("The event body is not UTF-8") from None
    assert settings.stripe_webhook_secret is not None
    try:
        stripe.WebhookSignature.verify_header(
            payload, signature, settings.stripe_webhook_secret.get_secret_value(), settings.stripe_webhook_tolerance
        )
    except stripe.SignatureVerificationError as exc:
        # The library says which: no valid signature, or a timestamp outside the tolerance.
        raise BadStripeEvent(f"Stripe signature rejected: {exc.user_message or exc}") from None
    try:
        event = json.loads(payload)
    except json.JSONDecodeError:
        raise BadStripeEvent("The event body is not JSON") from None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not event["id"]
        or not isinstance(event.get("type"), str)
        or not isinstance(event.get("created"), int)
    ):
        raise BadStripeEvent("The event lacks an id, a type or a created time")
    return event, payload


@events_router.post(
    "/stripe",
    summary="Stripe events (signed): stored once under their id, acknowledged at once, applied in the background",
)
async def receive_stripe_event(
    request: Request,
    session: SessionDep,
    stripe_signature: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> EventAck:
    body = await request.body()
    event, payload = _verified_event(request.app.state.settings, body, stripe_signature)

    def store() -> bool:
        stored = service.store_event(session, event, payload)
        if stored:
            request.app.state.jobs.enqueue_after_commit(session, "billing.process_event", event["id"])
        return stored

    stored = await run_in_threadpool(store)
    return EventAck(duplicate=not stored)
