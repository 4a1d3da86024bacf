"""The optional features A³E ships, each declared for the registry in a3e.core.features.

Billing (Stripe), email, LLM drafting and S3 storage join this list as they are built; until a
feature's code exists it is not listed, so /health never reports a feature that cannot run.
"""

from __future__ import annotations

from typing import Any

from a3e.core.features import Feature


def _storage_health(app: Any) -> str | None:
    # Imported when /health asks, so that a broken storage module cannot stop the app loading.
    from a3e.evidence.storage import storage_problem

    return storage_problem(app)


STORAGE = Feature(
    name="storage",
    title="Document storage",
    init="a3e.evidence.storage:init_storage",
    # The evidence routes that read and write documents add their URL prefixes here; until then
    # they take `BlobStoreDep`, which answers 503 feature_unavailable while storage is down.
    paths=(),
    health=_storage_health,
)

def _billing_configuration(settings: Any) -> str | None:
    from a3e.billing.plans import configuration_problem

    return configuration_problem(settings)


BILLING = Feature(
    name="billing",
    title="Billing (Stripe)",
    required_settings=("stripe_secret_key",),
    # A key without prices or the signing secret is refused with the reason (never half-run: an
    # event endpoint without its secret would have to trust unsigned requests).
    validate=_billing_configuration,
    routers="a3e.billing.api:routers",
    init="a3e.billing.api:init_billing",
    paths=("/api/v1/webhooks/stripe", "/api/v1/workspaces/{workspace_id}/billing"),
)

BUILTIN_FEATURES: tuple[Feature, ...] = (STORAGE, BILLING)
