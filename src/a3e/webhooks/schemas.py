from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from a3e.webhooks.events import EVENT_TYPES


def _known_event_types(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    unknown = [value for value in values if value not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type {unknown[0]!r}; known types: {', '.join(EVENT_TYPES)}")
    return list(dict.fromkeys(values))  # in the order given, without repeats


class WebhookCreate(BaseModel):
    url: str = Field(min_length=1, max_length=2048, description="Where events are POSTed (https:// in production)")
    event_types: list[str] = Field(min_length=1, description="The events to receive; see the README's catalogue")
    description: str | None = Field(None, max_length=500)
    enabled: bool = True

    @field_validator("event_types")
    @classmethod
    def _check_types(cls, value: list[str] | None) -> list[str] | None:
        return _known_event_types(value)


class WebhookUpdate(BaseModel):
    url: str | None = Field(None, min_length=1, max_length=2048)
    event_types: list[str] | None = Field(None, min_length=1)
    description: str | None = Field(None, max_length=500)
    enabled: bool | None = Field(None, description="false stops deliveries; true resumes them and resets the health")

    @field_validator("event_types")
    @classmethod
    def _check_types(cls, value: list[str] | None) -> list[str] | None:
        return _known_event_types(value)


class WebhookHealth(BaseModel):
    status: Literal["new", "healthy", "failing", "disabled"]
    consecutive_failures: int
    failing_since: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_failure_reason: str | None
    disabled_at: datetime | None
    disabled_reason: str | None


class WebhookOut(BaseModel):
    id: uuid.UUID
    workspace_id: uuid.UUID
    url: str
    description: str | None
    event_types: list[str]
    enabled: bool
    health: WebhookHealth
    previous_secret_valid_until: datetime | None = Field(
        None, description="After a rotation, deliveries are signed with the old secret too until then"
    )
    created_by_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="The signing secret (whsec_…): shown only in this response")


class AttemptOut(BaseModel):
    number: int
    manual: bool
    started_at: datetime
    duration_ms: int
    succeeded: bool
    status_code: int | None
    error: str | None
    response_body: str | None = Field(description="The first 1 KiB of the receiver's answer")


class DeliveryOut(BaseModel):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: str = Field(description="The message id: the webhook-id header, the same on every attempt")
    event_type: str
    status: Literal["pending", "succeeded", "failed", "cancelled"]
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    succeeded_at: datetime | None
    created_at: datetime
    payload: dict[str, Any]
    attempt_log: list[AttemptOut]
