"""What the audit-log API answers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from a3e.audit.models import AuditEvent


class AuditActor(BaseModel):
    user_id: uuid.UUID | None = Field(None, description="The person who acted, if a person did")
    api_key_id: uuid.UUID | None = Field(None, description="The API key that acted, if a key did")
    label: str | None = Field(None, description="Who it was at the time: an email, or the key's name and prefix")


class AuditTarget(BaseModel):
    type: str | None = Field(None, description="What was acted on: workspace, member, invitation, api_key, …")
    id: str | None = None


class AuditEventOut(BaseModel):
    id: int
    occurred_at: datetime
    action: str = Field(description="e.g. workspace.created, member.role_changed, audit_log.exported")
    actor: AuditActor
    target: AuditTarget
    client_ip: str | None = None
    request_id: str | None = None
    details: dict[str, Any] | None = None

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            id=event.id,
            occurred_at=event.occurred_at,
            action=event.action,
            actor=AuditActor(user_id=event.actor_user_id, api_key_id=event.actor_api_key_id, label=event.actor_label),
            target=AuditTarget(type=event.target_type, id=event.target_id),
            client_ip=event.client_ip,
            request_id=event.request_id,
            details=event.details,
        )


class AuditLogPage(BaseModel):
    items: list[AuditEventOut]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next (older) page; null on the last page"
    )
    total: int | None = Field(
        None,
        description="How many events match the filters (all pages); only with include_total=true, null otherwise",
    )
