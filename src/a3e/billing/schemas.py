"""Billing's request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class LimitsOut(BaseModel):
    seats: int | None = Field(description="Members plus open invitations; null: unlimited")
    documents: int | None = Field(description="null: unlimited")
    storage_mb: int | None = Field(description="Every revision's bytes; null: unlimited")


class UsageOut(BaseModel):
    seats: int
    documents: int
    storage_bytes: int
    storage_mb: float


class BillingOut(BaseModel):
    workspace_id: str
    plan: str = Field(description="trial, monthly, annual, lapsed (adds nothing until subscribed) or default")
    status: str = Field(description="trialing, active, past_due, canceled, unpaid, trial_ended, …")
    trial_ends_at: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    past_due_since: datetime | None
    grace_ends_at: datetime | None
    has_customer: bool = Field(description="Whether the customer portal is available")
    limits: LimitsOut
    usage: UsageOut
    failing_events: int = Field(description="Stripe events about this workspace that failed to apply and are retried")
    checkout: str = Field(description="Where to subscribe or change plan (POST)")


class CheckoutIn(BaseModel):
    plan: Literal["monthly", "annual"]


class RedirectOut(BaseModel):
    url: str


class EventAck(BaseModel):
    received: bool = True
    duplicate: bool
