"""Optional features (billing, email, LLM, object storage, …), isolated from each other and the core.

Each feature declares what it needs; `resolve_features` decides, without ever raising, whether it
runs. A feature that is disabled, not configured, or broken (its module fails to import or its
initialiser raises) leaves the app running: its URL prefixes answer 503 `feature_unavailable`
with the reason, and /health shows it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fastapi import APIRouter, FastAPI, Request

from a3e.core.errors import FeatureUnavailable
from a3e.core.settings import Settings, env_var_for

logger = logging.getLogger("a3e.features")


class FeatureState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"  # by A3E_DISABLED_FEATURES
    NOT_CONFIGURED = "not_configured"
    FAILED = "failed"


@dataclass(frozen=True)
class Feature:
    """What the core needs to know about an optional feature, without importing it."""

    name: str
    title: str
    # Settings fields that must be set for the feature to be configured.
    required_settings: tuple[str, ...] = ()
    # "package.module:attribute" naming an APIRouter or a list of them; imported only when enabled.
    routers: str | None = None
    # URL path prefixes the feature owns, answered with 503 when it is unavailable.
    paths: tuple[str, ...] = ()
    # Extra configuration check beyond presence (e.g. a key's shape): returns a reason or None.
    validate: Callable[[Settings], str | None] | None = None
    # "package.module:function" called with (app, settings) when enabled; raising marks it failed.
    init: str | None = None
    # Health check for /health: no network calls to paid or external APIs, no writes.
    health: Callable[[Any], str | None] | None = None


@dataclass
class FeatureStatus:
    feature: Feature
    state: FeatureState
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.state is FeatureState.ENABLED

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.state.value, "title": self.feature.title}
        if self.reason:
            data["reason"] = self.reason
        return data | self.extra


def _load(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def describe_exception(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}"[:300]


def configuration_problem(feature: Feature, settings: Settings) -> str | None:
    missing = [env_var_for(name) for name in feature.required_settings if not getattr(settings, name, None)]
    if missing:
        return f"not configured: set {', '.join(missing)}"
    if feature.validate is not None:
        try:
            return feature.validate(settings)
        except Exception as exc:
            return f"configuration check failed ({describe_exception(exc)})"
    return None


def check_importable(feature: Feature) -> tuple[list[APIRouter], str | None]:
    """Import the feature's routers; (routers, None) or ([], reason)."""
    if not feature.routers:
        return [], None
    try:
        loaded = _load(feature.routers)
    except Exception as exc:  # a broken feature must never take the process down
        return [], f"failed to import {feature.routers} ({describe_exception(exc)})"
    routers = list(loaded) if isinstance(loaded, (list, tuple)) else [loaded]
    if not all(isinstance(router, APIRouter) for router in routers):
        return [], f"{feature.routers} is not an APIRouter or a list of them"
    return routers, None


def resolve_features(app: FastAPI, settings: Settings, features: Sequence[Feature]) -> dict[str, FeatureStatus]:
    """Decide each feature's state, mount what runs, and fence off what doesn't."""
    statuses: dict[str, FeatureStatus] = {}
    disabled = set(settings.disabled_features)
    for feature in features:
        status = _resolve_one(app, settings, feature, disabled)
        statuses[feature.name] = status
        if status.state is FeatureState.FAILED:
            logger.error("feature %s failed and is unavailable: %s", feature.name, status.reason)
        elif not status.available:
            logger.info("feature %s is %s: %s", feature.name, status.state.value, status.reason)
        if not status.available:
            _fence(app, status)
    unknown = disabled - {feature.name for feature in features}
    if unknown:
        logger.warning("A3E_DISABLED_FEATURES names unknown features: %s", ", ".join(sorted(unknown)))
    return statuses


def _resolve_one(app: FastAPI, settings: Settings, feature: Feature, disabled: set[str]) -> FeatureStatus:
    if feature.name in disabled:
        return FeatureStatus(feature, FeatureState.DISABLED, "disabled by A3E_DISABLED_FEATURES")
    if problem := configuration_problem(feature, settings):
        return FeatureStatus(feature, FeatureState.NOT_CONFIGURED, problem)
    routers, problem = check_importable(feature)
    if problem:
        return FeatureStatus(feature, FeatureState.FAILED, problem)
    if feature.init:
        try:
            _load(feature.init)(app, settings)
        except Exception as exc:
            return FeatureStatus(feature, FeatureState.FAILED, f"failed to start ({describe_exception(exc)})")
    for router in routers:
        app.include_router(router)
    return FeatureStatus(feature, FeatureState.ENABLED)


def _fence(app: FastAPI, status: FeatureStatus) -> None:
    """Answer every request under the feature's paths with 503 and the reason."""
    message = f"{status.feature.title} is unavailable: {status.reason}"

    async def unavailable(request: Request) -> None:
        raise FeatureUnavailable(message, details={"feature": status.feature.name, "status": status.state.value})

    for prefix in status.feature.paths:
        prefix = prefix.rstrip("/")
        for path in (prefix, prefix + "/{rest_of_path:path}"):
            app.add_api_route(
                path,
                unavailable,
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                include_in_schema=False,
                name=f"{status.feature.name}_unavailable",
            )


def feature_health(app: FastAPI) -> dict[str, dict[str, Any]]:
    statuses: dict[str, FeatureStatus] = getattr(app.state, "features", {})
    report = {}
    for name, status in statuses.items():
        entry = status.as_dict()
        if status.available and status.feature.health is not None:
            try:
                problem = status.feature.health(app)
            except Exception as exc:
                problem = describe_exception(exc)
            if problem:
                entry = {**entry, "status": FeatureState.FAILED.value, "reason": problem}
        report[name] = entry
    return report
