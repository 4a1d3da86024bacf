"""Billing logic: a workspace's effective plan and usage, the limits where they bite, Stripe
Checkout and the customer portal, and applying Stripe events to the stored subscription state.

No HTTP types here. The limit checks are called by other domains (inviting a member, uploading)
inside their transaction; they import nothing heavy and never call Stripe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, exists, false, func, literal, select, update
from sqlalchemy.orm import Session

from a3e.audit.service import record_event
from a3e.billing.models import BillingAccount, EventStatus, StripeEvent
from a3e.billing.plans import PAID_PLANS, LAPSED_LIMITS, Limits, Plan, PlanName, Plans, billing_enabled, plans_from_settings
from a3e.core.errors import AppError, Conflict
from a3e.core.models import UTCDateTime, utcnow

if TYPE_CHECKING:
    from starlette.requests import Request

    from a3e.core.settings import Settings
    from a3e.workspaces.models import Workspace
    from a3e.workspaces.scoping import WorkspaceAccess

logger = logging.getLogger("a3e.billing")

# Stripe subscription statuses under which the subscribed plan applies.
_LIVE_STATUSES = {"active", "trialing"}
# Statuses after which the workspace adds nothing until it subscribes again.
_ENDED_STATUSES = {"canceled", "unpaid", "incomplete_expired", "paused"}
MEGABYTE = 1024 * 1024


class PlanLimitReached(AppError):
    status_code = 402
    code = "plan_limit_reached"


# ---- the effective plan --------------------------------------------------------------------


@dataclass(frozen=True)
class BillingState:
    enabled: bool
    plan: Plan
    status: str
    trial_ends_at: datetime | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False
    past_due_since: datetime | None = None
    grace_ends_at: datetime | None = None
    has_customer: bool = False

    @property
    def limits(self) -> Limits:
        return self.plan.limits


@dataclass(frozen=True)
class Usage:
    seats: int  # members and open invitations
    documents: int
    storage_bytes: int


def effective_state(
    settings: Settings, workspace: Workspace, account: BillingAccount | None, *, now: datetime | None = None
) -> BillingState:
    """Which plan's limits apply to the workspace now, and why.

    Billing off: the default plan. Subscribed (active or trialing in Stripe): its plan. Past due:
    its plan until the grace period ends, then lapsed. Canceled or unpaid: lapsed. Never
    subscribed: the trial for A3E_BILLING_TRIAL_DAYS from its start (`trial_started_at`: the
    workspace's creation, or when billing was switched on for a workspace that existed before),
    then lapsed. A workspace the minute sweep has not counted yet is in a trial starting now."""
    if not billing_enabled(settings):
        return BillingState(enabled=False, plan=plans_from_settings(settings).default, status="unmanaged")
    plans = plans_from_settings(settings)
    now = now or utcnow()
    lapsed = Plan(PlanName.LAPSED, LAPSED_LIMITS)
    common: dict[str, Any] = {"enabled": True, "has_customer": bool(account and account.stripe_customer_id)}
    if account is not None and account.plan in PAID_PLANS and account.status:
        paid = plans.get(account.plan)
        details = {
            **common,
            "trial_ends_at": account.trial_ends_at,
            "current_period_end": account.current_period_end,
            "cancel_at_period_end": account.cancel_at_period_end,
            "past_due_since": account.past_due_since,
        }
        if account.status in _LIVE_STATUSES:
            return BillingState(plan=paid, status=account.status, **details)
        if account.status == "past_due":
            grace_ends = (account.past_due_since or now) + timedelta(days=plans.grace_days)
            return BillingState(plan=paid if now < grace_ends else lapsed, status="past_due", grace_ends_at=grace_ends, **details)
        if account.status in _ENDED_STATUSES:
            return BillingState(plan=lapsed, status=account.status, **details)
        # incomplete: the first payment is still being made; the trial goes on meanwhile.
    if account is None:
        trial_start = max(workspace.created_at, now)  # not counted yet (billing switched on < 1 min ago)
    else:
        trial_start = account.trial_started_at or account.created_at
    trial_ends = trial_start + timedelta(days=plans.trial_days)
    if now < trial_ends:
        return BillingState(plan=plans.trial, status="trialing", trial_ends_at=trial_ends, **common)
    return BillingState(plan=lapsed, status="trial_ended", trial_ends_at=trial_ends, **common)


def workspace_state(session: Session, settings: Settings, workspace_id: uuid.UUID) -> BillingState:
    from a3e.workspaces.models import Workspace

    if not billing_enabled(settings):
        return effective_state(settings, None, None)  # type: ignore[arg-type]
    workspace = session.get(Workspace, workspace_id)
    assert workspace is not None
    return effective_state(settings, workspace, session.get(BillingAccount, workspace_id))


def usage(session: Session, workspace_id: uuid.UUID, *, except_invitee: str | None = None) -> Usage:
    from a3e.evidence.models import Document, Revision
    from a3e.workspaces.models import Invitation, Membership

    members = session.scalar(select(func.count()).select_from(Membership).where(Membership.workspace_id == workspace_id)) or 0
    open_invitations = select(func.count()).select_from(Invitation).where(
        Invitation.workspace_id == workspace_id,
        Invitation.accepted_at.is_(None),
        Invitation.revoked_at.is_(None),
        Invitation.expires_at > utcnow(),
    )
    if except_invitee is not None:  # a new invitation to the same address replaces the open one
        open_invitations = open_invitations.where(Invitation.email != except_invitee)
    invited = session.scalar(open_invitations) or 0
    documents = session.scalar(select(func.count()).select_from(Document).where(Document.workspace_id == workspace_id)) or 0
    stored = session.scalar(
        select(func.coalesce(func.sum(Revision.size_bytes), 0)).where(Revision.workspace_id == workspace_id)
    ) or 0
    return Usage(seats=int(members) + int(invited), documents=int(documents), storage_bytes=int(stored))


# ---- limits where they bite ----------------------------------------------------------------


def checkout_path(workspace_id: uuid.UUID) -> str:
    return f"/api/v1/workspaces/{workspace_id}/billing/checkout"


def _refuse(
    state: BillingState, workspace_id: uuid.UUID, limit: str, current: int | float, maximum: int, unit: str
) -> PlanLimitReached:
    """402 naming the limit, the usage, and how to upgrade (the checkout endpoint)."""
    upgrade = checkout_path(workspace_id)
    if state.plan.name == PlanName.LAPSED:
        why = {"trial_ended": "the trial has ended", "past_due": "payment is overdue beyond the grace period"}.get(
            state.status, f"the subscription is {state.status}"
        )
        message = (
            f"Plan limit reached: {why}, so nothing more can be added ({limit}: {current} {unit} in use; "
            f"everything stays readable). Subscribe with POST {upgrade} and plan monthly or annual."
        )
    else:
        message = (
            f"Plan limit reached: the {state.plan.name.value} plan allows {maximum} {unit} and this workspace "
            f"uses {current}. Upgrade with POST {upgrade} and plan monthly or annual."
        )
    return PlanLimitReached(
        message,
        details={
            "limit": limit,
            "plan": state.plan.name.value,
            "status": state.status,
            "current": current,
            "maximum": maximum,
            "unit": unit,
            "upgrade": {"method": "POST", "path": upgrade, "plans": [plan.value for plan in PAID_PLANS]},
        },
    )


def enforce_seat_limit(session: Session, settings: Settings, workspace_id: uuid.UUID, *, invitee_email: str) -> None:
    """Inviting one more person: members plus open invitations must stay within the plan's seats."""
    state = workspace_state(session, settings, workspace_id)
    seats = state.limits.seats
    if seats is None:
        return
    current = usage(session, workspace_id, except_invitee=invitee_email).seats
    if current + 1 > seats:
        raise _refuse(state, workspace_id, "seats", current, seats, "seats (members and open invitations)")


def enforce_upload_limit(
    session: Session, settings: Settings, workspace_id: uuid.UUID, *, new_documents: int, new_bytes: int
) -> None:
    """Adding a document (new_documents=1) or a revision (0): the document count and the stored
    bytes (every revision counts) must stay within the plan."""
    state = workspace_state(session, settings, workspace_id)
    limits = state.limits
    if limits.documents is None and limits.storage_mb is None:
        return
    current = usage(session, workspace_id)
    if limits.documents is not None and new_documents and current.documents + new_documents > limits.documents:
        raise _refuse(state, workspace_id, "documents", current.documents, limits.documents, "documents")
    if limits.storage_bytes is not None and current.storage_bytes + new_bytes > limits.storage_bytes:
        used_mb = round(current.storage_bytes / MEGABYTE, 1)
        raise _refuse(state, workspace_id, "storage", used_mb, limits.storage_mb or 0, "MB of storage")


# How recent a workspace must be for its trial to start at its creation when billing first counts
# it; an older one existed before billing was switched on, and its trial starts then.
NEW_WORKSPACE_WINDOW = timedelta(minutes=5)


def count_new_workspaces(session: Session, *, now: datetime | None = None) -> int:
    """Give every workspace without a billing account one, starting its trial: at its creation
    if it is new, else now — so that switching billing on for an existing deployment starts every
    workspace's trial, instead of finding them all long past it. Idempotent, race-safe."""
    from a3e.workspaces.models import Workspace

    now = now or utcnow()
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    started = case((Workspace.created_at >= now - NEW_WORKSPACE_WINDOW, Workspace.created_at), else_=literal(now, UTCDateTime()))
    uncounted = select(Workspace.id, false(), started, literal(now, UTCDateTime()), literal(now, UTCDateTime())).where(
        ~exists().where(BillingAccount.workspace_id == Workspace.id)
    )
    result = session.execute(
        insert(BillingAccount)
        .from_select(["workspace_id", "cancel_at_period_end", "trial_started_at", "created_at", "updated_at"], uncounted)
        .on_conflict_do_nothing(index_elements=["workspace_id"])
    )
    return max(result.rowcount or 0, 0)


# ---- checkout and portal -------------------------------------------------------------------


def _account_for_update(session: Session, workspace_id: uuid.UUID) -> BillingAccount:
    """The workspace's account row, created if absent, locked until the transaction ends."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    now = utcnow()
    session.execute(
        insert(BillingAccount)
        .values(workspace_id=workspace_id, cancel_at_period_end=False, trial_started_at=now, created_at=now,
                updated_at=now)
        .on_conflict_do_nothing(index_elements=["workspace_id"])
    )
    account = session.scalar(
        select(BillingAccount).where(BillingAccount.workspace_id == workspace_id).with_for_update().execution_options(
            populate_existing=True
        )
    )
    assert account is not None
    return account


def start_checkout(
    session: Session,
    stripe_client: Any,
    settings: Settings,
    access: WorkspaceAccess,
    plan_name: PlanName,
    *,
    idempotency_key: str | None,
    request: Request | None = None,
) -> str:
    """A Stripe Checkout Session (subscription mode) for the workspace; returns its URL.

    The Stripe customer is created once per workspace and kept (its creation has an idempotency key
    derived from the workspace, so a retry never makes a second one). The session carries the
    workspace id in its metadata and in the subscription's, so that every later event finds the
    workspace. Its idempotency key comes from the caller's Idempotency-Key header or, without one,
    from the workspace, plan and the current 10-minute window: a double click gives one session."""
    from a3e.billing.stripe_client import call_stripe

    plan = plans_from_settings(settings).get(plan_name)
    workspace_id = access.workspace_id
    customer_id = ensure_customer(session, stripe_client, access)
    app_url = settings.app_url
    metadata = {"workspace_id": str(workspace_id), "plan": plan.name.value}
    params = {
        "mode": "subscription",
        "customer": customer_id,
        "client_reference_id": str(workspace_id),
        "line_items": [{"price": plan.price_id, "quantity": 1}],
        "metadata": metadata,
        "subscription_data": {"metadata": metadata},
        "success_url": f"{app_url}/workspaces/{workspace_id}/billing?checkout=success&session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{app_url}/workspaces/{workspace_id}/billing?checkout=canceled",
    }
    if idempotency_key is None:
        window = int(utcnow().timestamp()) // 600
        idempotency_key = f"{workspace_id}:{plan.name.value}:{customer_id}:{window}"
    key = "a3e-checkout-" + hashlib.sha256(f"{workspace_id}:{plan.name.value}:{idempotency_key}".encode()).hexdigest()[:40]
    checkout = call_stripe(
        "start a checkout",
        lambda: stripe_client.v1.checkout.sessions.create(params=params, options={"idempotency_key": key}),
    )
    record_event(
        session,
        "billing.checkout_started",
        request=request,
        principal=access.principal,
        workspace_id=workspace_id,
        target_type="workspace",
        target_id=workspace_id,
        details={"plan": plan.name.value, "checkout_session": checkout.id, "customer": customer_id},
    )
    return str(checkout.url)


def ensure_customer(session: Session, stripe_client: Any, access: WorkspaceAccess) -> str:
    """The workspace's Stripe customer id, creating the customer the first time (and committing it
    at once, so that a failure later in the request never loses it)."""
    from a3e.billing.stripe_client import call_stripe

    account = session.get(BillingAccount, access.workspace_id)
    if account is not None and account.stripe_customer_id:
        return account.stripe_customer_id
    workspace_id = access.workspace_id
    params: dict[str, Any] = {"name": access.workspace.name[:200], "metadata": {"workspace_id": str(workspace_id)}}
    if access.principal.user is not None:
        params["email"] = access.principal.user.email
    customer = call_stripe(
        "create the customer",
        lambda: stripe_client.v1.customers.create(params=params, options={"idempotency_key": f"a3e-customer-{workspace_id}"}),
    )
    account = _account_for_update(session, workspace_id)
    if account.stripe_customer_id:  # another request stored one meanwhile (the same, by the idempotency key)
        return account.stripe_customer_id
    account.stripe_customer_id = customer.id
    session.commit()
    return str(customer.id)


def open_portal(
    session: Session, stripe_client: Any, settings: Settings, access: WorkspaceAccess, *, request: Request | None = None
) -> str:
    """A Stripe customer-portal URL for the workspace (409 before its first checkout)."""
    from a3e.billing.stripe_client import call_stripe

    account = session.get(BillingAccount, access.workspace_id)
    if account is None or not account.stripe_customer_id:
        raise Conflict(
            f"This workspace has no Stripe customer yet; subscribe first with POST {checkout_path(access.workspace_id)}",
            code="no_billing_customer",
        )
    customer_id = account.stripe_customer_id
    portal = call_stripe(
        "open the customer portal",
        lambda: stripe_client.v1.billing_portal.sessions.create(
            params={"customer": customer_id, "return_url": f"{settings.app_url}/workspaces/{access.workspace_id}/billing"}
        ),
    )
    record_event(
        session,
        "billing.portal_opened",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="workspace",
        target_id=access.workspace_id,
        details={"customer": customer_id},
    )
    return str(portal.url)


# ---- incoming Stripe events -----------------------------------------------------------------

# A failing event is tried this many times, backing off, before it is left failed for an operator.
MAX_EVENT_ATTEMPTS = 8
RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)


def store_event(session: Session, event: dict[str, Any], payload: str) -> bool:
    """Store a verified event once; False when its id was stored before (a duplicate)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    result = session.execute(
        insert(StripeEvent)
        .values(
            id=event["id"],
            type=str(event.get("type", ""))[:100],
            created=int(event.get("created") or 0),
            livemode=bool(event.get("livemode")),
            payload=payload,
            status=EventStatus.RECEIVED.value,
            attempts=0,
            received_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(StripeEvent.id)  # a row back only when inserted (rowcount is not reliable here)
    )
    return result.first() is not None


def retry_delay(attempts: int) -> timedelta:
    return min(RETRY_BASE * (2 ** max(attempts - 1, 0)), RETRY_CAP)


@dataclass(frozen=True)
class Outcome:
    status: EventStatus
    detail: str | None = None
    workspace_id: uuid.UUID | None = None


HANDLED_TYPES = (
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
    "customer.subscription.trial_will_end",
)


def process_event(
    session: Session, settings: Settings, event_id: str, *, enqueue_after_commit: Callable[..., None]
) -> EventStatus | None:
    """Apply one stored event, exactly once: claimed by a conditional UPDATE that is the
    transaction's first write (PostgreSQL locks the row; SQLite the database), so a second run —
    a redelivered job, the sweep — finds it done. None: already done (or unknown)."""
    claimed = session.execute(
        update(StripeEvent)
        .where(
            StripeEvent.id == event_id,
            StripeEvent.status.in_((EventStatus.RECEIVED.value, EventStatus.FAILED.value)),
        )
        .values(attempts=StripeEvent.attempts + 1)
    )
    if not claimed.rowcount:
        return None
    stored = session.get(StripeEvent, event_id)
    assert stored is not None
    outcome = apply_event(session, settings, json.loads(stored.payload), enqueue_after_commit=enqueue_after_commit)
    stored.status = outcome.status.value
    stored.last_error = outcome.detail
    stored.workspace_id = outcome.workspace_id
    stored.processed_at = utcnow()
    stored.next_attempt_at = None
    return outcome.status


def record_failure(session: Session, event_id: str, error: str) -> None:
    """After a failed attempt (its transaction rolled back): count it, keep the reason, schedule the next."""
    stored = session.get(StripeEvent, event_id)
    if stored is None or stored.status in (EventStatus.PROCESSED.value, EventStatus.IGNORED.value):
        return
    stored.attempts += 1
    stored.status = EventStatus.FAILED.value
    if stored.workspace_id is None:  # so that the workspace's billing page shows it too
        try:
            with session.begin_nested():
                obj = ((json.loads(stored.payload).get("data") or {}).get("object")) or {}
                stored.workspace_id = _find_workspace(session, obj) if isinstance(obj, dict) else None
        except Exception:  # the payload is what failed: the event stays unattributed
            stored.workspace_id = None
    stored.last_error = error[:2000]
    stored.next_attempt_at = utcnow() + retry_delay(stored.attempts) if stored.attempts < MAX_EVENT_ATTEMPTS else None


def _id_of(value: Any) -> str | None:
    """A Stripe reference: an id string, or an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return str(value) if value else None


def _metadata_workspace(obj: dict[str, Any]) -> str | None:
    candidates = [obj.get("metadata") or {}]
    if obj.get("object") == "checkout.session" and obj.get("client_reference_id"):
        candidates.append({"workspace_id": obj["client_reference_id"]})
    # Invoices carry their subscription's metadata (older API versions at the top, newer under parent).
    candidates.append((obj.get("subscription_details") or {}).get("metadata") or {})
    candidates.append(((obj.get("parent") or {}).get("subscription_details") or {}).get("metadata") or {})
    for metadata in candidates:
        if metadata.get("workspace_id"):
            return str(metadata["workspace_id"])
    return None


def _find_workspace(session: Session, obj: dict[str, Any]) -> uuid.UUID | None:
    from a3e.workspaces.models import Workspace

    named = _metadata_workspace(obj)
    if named:
        try:
            workspace_id = uuid.UUID(named)
        except ValueError:
            return None
        return workspace_id if session.get(Workspace, workspace_id) is not None else None
    customer = _id_of(obj.get("customer"))
    if customer:
        return session.scalar(select(BillingAccount.workspace_id).where(BillingAccount.stripe_customer_id == customer))
    return None


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


def _subscription_id(obj: dict[str, Any]) -> str | None:
    if obj.get("object") == "subscription":
        return _id_of(obj.get("id"))
    found = _id_of(obj.get("subscription"))
    if found:
        return found
    return _id_of(((obj.get("parent") or {}).get("subscription_details") or {}).get("subscription"))


def apply_event(
    session: Session, settings: Settings, event: dict[str, Any], *, enqueue_after_commit: Callable[..., None]
) -> Outcome:
    event_type = str(event.get("type", ""))
    if event_type not in HANDLED_TYPES:
        return Outcome(EventStatus.IGNORED, f"event type {event_type} is not used by A3E")
    obj = (event.get("data") or {}).get("object") or {}
    workspace_id = _find_workspace(session, obj)
    if workspace_id is None:
        return Outcome(EventStatus.IGNORED, "no workspace of this service matches its metadata or customer")
    if event_type == "customer.subscription.trial_will_end":
        _notify_trial_ending(session, settings, workspace_id, obj, enqueue_after_commit)
        return Outcome(EventStatus.PROCESSED, workspace_id=workspace_id)

    account = _account_for_update(session, workspace_id)
    # Links are facts, not state: recorded whatever the order (and never changed once set).
    customer = _id_of(obj.get("customer"))
    if customer and not account.stripe_customer_id:
        account.stripe_customer_id = customer
    subscription = _subscription_id(obj)
    if subscription and not account.stripe_subscription_id:
        account.stripe_subscription_id = subscription

    created, event_id = int(event.get("created") or 0), str(event.get("id"))
    # Ordered by (created, id): an older event never overwrites newer state, and a replay (the same
    # pair) changes nothing. Ties in the second are broken by id, so every replay converges.
    if (created, event_id) <= (account.state_event_created or 0, account.state_event_id or ""):
        return Outcome(EventStatus.PROCESSED, "older than the state already applied: nothing changed", workspace_id)
    before = (account.plan, account.status)
    plans = plans_from_settings(settings)
    changed = _apply_state(account, plans, event_type, obj, _timestamp(created) or utcnow())
    if not changed:
        return Outcome(EventStatus.PROCESSED, "nothing to change", workspace_id)
    if subscription:
        account.stripe_subscription_id = subscription  # a newer subscription replaces a canceled one
    account.state_event_created, account.state_event_id = created, event_id
    account.updated_at = utcnow()
    if (account.plan, account.status) != before:
        record_event(
            session,
            "billing.subscription_changed",
            workspace_id=workspace_id,
            target_type="workspace",
            target_id=workspace_id,
            actor_label="Stripe",
            details={
                "event": event_id,
                "event_type": event_type,
                "plan": {"from": before[0], "to": account.plan},
                "status": {"from": before[1], "to": account.status},
            },
        )
    return Outcome(EventStatus.PROCESSED, workspace_id=workspace_id)


def _apply_state(account: BillingAccount, plans: Plans, event_type: str, obj: dict[str, Any], at: datetime) -> bool:
    if event_type == "checkout.session.completed":
        if obj.get("mode") not in (None, "subscription"):
            return False
        plan = (obj.get("metadata") or {}).get("plan")
        if plan in PAID_PLANS:
            account.plan = plan
        if obj.get("payment_status") in ("paid", "no_payment_required") and account.status not in ("canceled",):
            account.status = "active"
            account.past_due_since = None
        return True
    if event_type.startswith("customer.subscription."):
        items = ((obj.get("items") or {}).get("data") or [{}])
        first_item = items[0] if items else {}
        price = _id_of((first_item.get("price") or {}).get("id")) if isinstance(first_item.get("price"), dict) else None
        plan = plans.for_price(price)
        if plan is not None:
            account.plan = plan.name.value
        elif (obj.get("metadata") or {}).get("plan") in PAID_PLANS:
            account.plan = obj["metadata"]["plan"]
        status = "canceled" if event_type.endswith(".deleted") else str(obj.get("status") or account.status or "")
        account.status = status or None
        account.trial_ends_at = _timestamp(obj.get("trial_end"))
        period_end = obj.get("current_period_end") or first_item.get("current_period_end")
        account.current_period_end = _timestamp(period_end) or account.current_period_end
        account.cancel_at_period_end = bool(obj.get("cancel_at_period_end"))
        if status == "past_due":
            account.past_due_since = account.past_due_since or at
        else:
            account.past_due_since = None
        return True
    if event_type == "invoice.paid":
        if account.status in ("canceled", "incomplete_expired"):
            return False  # a late invoice does not revive a subscription that is over
        if account.status not in _LIVE_STATUSES:  # a trial's $0 invoice leaves it trialing
            account.status = "active"
        account.past_due_since = None
        lines = (obj.get("lines") or {}).get("data") or []
        period_end = (lines[0].get("period") or {}).get("end") if lines else None
        account.current_period_end = _timestamp(period_end) or account.current_period_end
        return True
    if event_type == "invoice.payment_failed":
        if account.status in _ENDED_STATUSES:
            return False
        account.status = "past_due"
        account.past_due_since = account.past_due_since or at
        return True
    return False


def _notify_trial_ending(
    session: Session, settings: Settings, workspace_id: uuid.UUID, obj: dict[str, Any],
    enqueue_after_commit: Callable[..., None],
) -> None:
    from a3e.auth.models import User
    from a3e.workspaces.models import Membership, Workspace

    workspace = session.get(Workspace, workspace_id)
    assert workspace is not None
    owners = session.scalars(
        select(User.email).join(Membership, Membership.user_id == User.id).where(
            Membership.workspace_id == workspace_id, Membership.role == "owner"
        )
    ).all()
    trial_end = _timestamp(obj.get("trial_end"))
    for address in owners:
        enqueue_after_commit(
            session,
            "email.send",
            template="billing_trial_will_end",
            to=address,
            context_values={
                "workspace_name": workspace.name,
                "trial_end": trial_end.strftime("%d %B %Y") if trial_end else "soon",
                "billing_url": f"{settings.app_url}/workspaces/{workspace_id}/billing",
            },
        )
    record_event(
        session,
        "billing.trial_will_end",
        workspace_id=workspace_id,
        target_type="workspace",
        target_id=workspace_id,
        actor_label="Stripe",
        details={"trial_end": trial_end, "notified": len(owners)},
    )


def failing_events(session: Session, workspace_id: uuid.UUID | None = None) -> tuple[int, str | None]:
    """How many events are failing (being retried or given up), and the latest reason."""
    statement = select(StripeEvent).where(StripeEvent.status == EventStatus.FAILED.value)
    if workspace_id is not None:
        statement = statement.where(StripeEvent.workspace_id == workspace_id)
    count = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    latest = session.scalar(statement.order_by(StripeEvent.received_at.desc()).limit(1))
    return int(count), (latest.last_error if latest is not None else None)
