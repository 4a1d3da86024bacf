"""The optional features A³E ships, each declared for the registry in a3e.core.features.

Billing (Stripe), email, LLM drafting and S3 storage join this list as they are built; until a
feature's code exists it is not listed, so /health never reports a feature that cannot run.
"""

from __future__ import annotations

from a3e.core.features import Feature

BUILTIN_FEATURES: tuple[Feature, ...] = ()
