"""Plans and their limits, from configuration.

Four plans: `trial` (every new workspace while billing is on, for A3E_BILLING_TRIAL_DAYS),
`monthly` and `annual` (the paid plans, whose Stripe prices are STRIPE_PRICE_MONTHLY and
STRIPE_PRICE_ANNUAL), and `default` (every workspace while billing is off: self-hosting, unlimited
unless A3E_PLAN_DEFAULT_LIMITS says otherwise). A lapsed workspace (canceled, trial over, or past
due beyond the grace period) keeps reading everything but adds nothing: see `LAPSED`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from a3e.core.settings import Settings

LIMIT_NAMES = ("seats", "documents", "storage_mb")


class PlanName(StrEnum):
    DEFAULT = "default"
    TRIAL = "trial"
    MONTHLY = "monthly"
    ANNUAL = "annual"
    LAPSED = "lapsed"


PAID_PLANS = (PlanName.MONTHLY, PlanName.ANNUAL)


@dataclass(frozen=True)
class Limits:
    """None means unlimited."""

    seats: int | None = None
    documents: int | None = None
    storage_mb: int | None = None

    @property
    def storage_bytes(self) -> int | None:
        return None if self.storage_mb is None else self.storage_mb * 1024 * 1024


# Nothing more may be added: a lapsed workspace keeps its data readable, and grows again once paid.
LAPSED_LIMITS = Limits(seats=0, documents=0, storage_mb=0)


@dataclass(frozen=True)
class Plan:
    name: PlanName
    limits: Limits
    price_id: str | None = None


def parse_limits(text: str) -> Limits:
    """`"seats=5,documents=100,storage_mb=1024"` → Limits; `unlimited` (or leaving one out) is no limit."""
    values: dict[str, int | None] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name, raw = name.strip().lower(), raw.strip().lower()
        if not sep or name not in LIMIT_NAMES:
            raise ValueError(f"{item!r} is not a limit; write e.g. seats=5,documents=100,storage_mb=1024")
        if name in values:
            raise ValueError(f"{name} is given twice")
        if raw == "unlimited":
            values[name] = None
        elif raw.isdigit():
            values[name] = int(raw)
        else:
            raise ValueError(f"{name}={raw!r}: use a whole number of 0 or more, or 'unlimited'")
    return Limits(**values)


@dataclass(frozen=True)
class Plans:
    default: Plan
    trial: Plan
    monthly: Plan
    annual: Plan
    trial_days: int
    grace_days: int

    def get(self, name: str) -> Plan:
        if name == PlanName.LAPSED:
            return Plan(PlanName.LAPSED, LAPSED_LIMITS)
        return getattr(self, PlanName(name).value)

    def for_price(self, price_id: str | None) -> Plan | None:
        for plan in (self.monthly, self.annual):
            if price_id is not None and plan.price_id == price_id:
                return plan
        return None


def plans_from_settings(settings: Settings) -> Plans:
    return Plans(
        default=Plan(PlanName.DEFAULT, parse_limits(settings.plan_default_limits)),
        trial=Plan(PlanName.TRIAL, parse_limits(settings.plan_trial_limits)),
        monthly=Plan(PlanName.MONTHLY, parse_limits(settings.plan_monthly_limits), settings.stripe_price_monthly),
        annual=Plan(PlanName.ANNUAL, parse_limits(settings.plan_annual_limits), settings.stripe_price_annual),
        trial_days=settings.billing_trial_days,
        grace_days=settings.billing_grace_days,
    )


def configuration_problem(settings: Settings) -> str | None:
    """Why billing cannot run with these settings (the key is set: the feature checks that), or None.

    A half-configured Stripe never runs: checkout needs the prices, and an event endpoint without
    its signing secret would have to accept unsigned requests."""
    missing = [
        variable
        for variable, value in (
            ("STRIPE_PRICE_MONTHLY", settings.stripe_price_monthly),
            ("STRIPE_PRICE_ANNUAL", settings.stripe_price_annual),
            ("STRIPE_WEBHOOK_SECRET", settings.stripe_webhook_secret),
        )
        if not value
    ]
    if missing:
        return f"STRIPE_SECRET_KEY is set but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not"
    if settings.stripe_price_monthly == settings.stripe_price_annual:
        return "STRIPE_PRICE_MONTHLY and STRIPE_PRICE_ANNUAL are the same price; give each plan its own"
    return None


def billing_enabled(settings: Settings) -> bool:
    """Whether billing runs (and so whether plans other than the default apply): Stripe configured
    completely and the feature not disabled. Mirrors the feature registry's decision."""
    if "billing" in settings.disabled_features or settings.stripe_secret_key is None:
        return False
    return configuration_problem(settings) is None
