"""Billing tables: each workspace's Stripe customer and subscription state, and every Stripe event
received (stored once under its Stripe id, processed by a background job)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from a3e.core.database import Base
from a3e.core.models import Timestamps, UTCDateTime, utcnow


class BillingAccount(Timestamps, Base):
    """A workspace's place in billing: its trial's start, then its Stripe customer and subscription.
    Made for every workspace by the minute sweep once billing is on (or by a checkout or event)."""

    __tablename__ = "billing_accounts"

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255))
    # monthly | annual once subscribed; None before.
    plan: Mapped[str | None] = mapped_column(String(16))
    # Stripe's subscription status (trialing, active, past_due, canceled, unpaid, incomplete, …).
    status: Mapped[str | None] = mapped_column(String(32))
    trial_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When A3E's own trial started (the workspace's creation, or when billing first counted a
    # workspace that existed before it was switched on); the trial runs A3E_BILLING_TRIAL_DAYS.
    trial_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean(), default=False, nullable=False)
    # When payments started failing: the grace period runs from here.
    past_due_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The Stripe event that last set the state, and its `created` time (seconds): an older event
    # never overwrites newer state, whatever order they arrive in.
    state_event_id: Mapped[str | None] = mapped_column(String(255))
    state_event_created: Mapped[int | None] = mapped_column(BigInteger())


class EventStatus(StrEnum):
    RECEIVED = "received"  # stored, waiting for its job
    PROCESSED = "processed"
    IGNORED = "ignored"  # a type we do not handle, or no workspace of ours
    FAILED = "failed"  # retried with backoff until MAX_EVENT_ATTEMPTS


class StripeEvent(Base):
    __tablename__ = "stripe_events"
    __table_args__ = (
        CheckConstraint("status IN ('received', 'processed', 'ignored', 'failed')", name="status"),
        Index("ix_stripe_events_status_next_attempt_at", "status", "next_attempt_at"),
    )

    # Stripe's event id (evt_…): the primary key is what makes each event stored once.
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100), nullable=False)
    created: Mapped[int] = mapped_column(BigInteger(), nullable=False)
    livemode: Mapped[bool] = mapped_column(Boolean(), default=False, nullable=False)
    payload: Mapped[str] = mapped_column(Text(), nullable=False)
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.RECEIVED.value, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer(), default=0, nullable=False)
    last_error: Mapped[str | None] = mapped_column(Text())
    workspace_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="SET NULL"), index=True
    )
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
