"""The app's one Stripe client, and Stripe's failures turned into our error envelope.

Every call goes through the official library (`stripe.StripeClient`): the API base from
STRIPE_API_BASE (tests run a local fake Stripe), an HTTP client with a timeout, and the library's
own retries of network failures (which reuse one idempotency key per request). Nothing here
connects at construction; the library is imported only when billing starts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from a3e.core.errors import AppError

if TYPE_CHECKING:
    import stripe

    from a3e.core.settings import Settings

logger = logging.getLogger("a3e.billing")
T = TypeVar("T")


class StripeUnavailable(AppError):
    """Stripe could not be reached, or asked us to slow down: worth trying again shortly."""

    status_code = 503
    code = "stripe_unavailable"


class StripeFailed(AppError):
    """Stripe answered with an error that another attempt would not mend."""

    status_code = 502
    code = "stripe_error"


def build_stripe_client(settings: Settings) -> stripe.StripeClient:
    import stripe

    assert settings.stripe_secret_key is not None
    base_addresses: dict[str, str] = {}
    if settings.stripe_api_base:
        base_addresses = {"api": settings.stripe_api_base}
    return stripe.StripeClient(
        settings.stripe_secret_key.get_secret_value(),
        base_addresses=base_addresses,  # type: ignore[arg-type]
        max_network_retries=settings.stripe_max_network_retries,
        http_client=stripe.HTTPXClient(timeout=settings.stripe_timeout, allow_sync_methods=True),
    )


class LazyStripeClient:
    """The app's client, built at its first use: importing the library costs ~150 ms, which a
    start-up (and every deployment that never calls Stripe) should not pay."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: stripe.StripeClient | None = None
        self._lock = threading.Lock()

    def get(self) -> stripe.StripeClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = build_stripe_client(self._settings)
        return self._client


def call_stripe(what: str, call: Callable[[], T]) -> T:
    """Run one Stripe call; its failure becomes a 503 (try again) or a 502 (Stripe said no), never
    a 500. The message names what failed and Stripe's request id, never a key."""
    import stripe

    try:
        return call()
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        logger.warning("stripe: %s failed, Stripe unreachable or busy: %s", what, _describe(exc))
        raise StripeUnavailable(
            f"Stripe could not be reached to {what}; try again shortly", headers={"Retry-After": "10"}
        ) from None
    except stripe.AuthenticationError as exc:
        logger.error("stripe: %s refused: the API key was not accepted (%s)", what, _describe(exc))
        raise StripeFailed(
            f"Stripe refused this service's API key while trying to {what}; an operator must check STRIPE_SECRET_KEY"
        ) from None
    except stripe.StripeError as exc:
        logger.error("stripe: %s failed: %s", what, _describe(exc))
        details: dict[str, Any] = {"stripe_code": exc.code} if exc.code else {}
        if exc.request_id:
            details["stripe_request_id"] = exc.request_id
        raise StripeFailed(
            f"Stripe refused to {what}: {exc.user_message or 'see the server log'}", details=details or None
        ) from None


def _describe(exc: Exception) -> str:
    # The library's messages never hold the key; our logging also masks every configured secret.
    status = getattr(exc, "http_status", None)
    request_id = getattr(exc, "request_id", None)
    return f"{exc.__class__.__name__} (status {status}, request {request_id}): {str(exc)[:300]}"
