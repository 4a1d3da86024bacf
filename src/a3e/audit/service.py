"""Recording audit events. Call `record_event` inside the request's transaction, so that the
record and the change it describes are committed together, or not at all."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from a3e.audit.models import AuditEvent

if TYPE_CHECKING:
    from starlette.requests import Request

    from a3e.auth.principal import Principal

# Keys whose values never enter an audit record, whoever passes them.
_SECRET_KEYS = ("password", "token", "secret", "key_hash", "api_key")


def _clean(details: dict[str, Any] | None) -> dict[str, Any] | None:
    if not details:
        return None
    return {k: v for k, v in details.items() if not any(word in k.lower() for word in _SECRET_KEYS)}


def record_event(
    session: Session,
    action: str,
    *,
    request: Request | None = None,
    principal: Principal | None = None,
    workspace_id: uuid.UUID | None = None,
    target_type: str | None = None,
    target_id: Any = None,
    details: dict[str, Any] | None = None,
    actor_user_id: uuid.UUID | None = None,
    actor_label: str | None = None,
) -> AuditEvent:
    """Append one event. The actor comes from `principal`, or from `actor_*` when there is no
    authenticated principal yet (e.g. a failed login names the email that was tried)."""
    from a3e.core.clientip import client_ip

    api_key_id = None
    if principal is not None:
        if principal.user is not None:
            actor_user_id, actor_label = principal.user.id, principal.user.email
        if principal.api_key is not None:
            api_key_id, actor_label = principal.api_key.id, f"api key {principal.api_key.name} ({principal.api_key.prefix}…)"
    event = AuditEvent(
        action=action,
        workspace_id=workspace_id,
        actor_user_id=actor_user_id,
        actor_api_key_id=api_key_id,
        actor_label=actor_label,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        client_ip=client_ip(request) if request is not None else None,
        request_id=request.scope.get("state", {}).get("request_id") if request is not None else None,
        details=_clean(details),
    )
    session.add(event)
    return event
