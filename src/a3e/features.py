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

BUILTIN_FEATURES: tuple[Feature, ...] = (STORAGE,)
