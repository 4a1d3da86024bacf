"""Outgoing webhooks: endpoints, the outbox of published events, deliveries and their attempts."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from a3e.core.database import Base
from a3e.core.models import BigIntPK, Timestamps, UTCDateTime, UUIDPrimaryKey, utcnow


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its next attempt (or being attempted)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every attempt failed; a manual redelivery may still try again
    CANCELLED = "cancelled"  # the endpoint was disabled or deleted before it got through


DELIVERY_STATUSES = tuple(status.value for status in DeliveryStatus)


class WebhookEndpoint(UUIDPrimaryKey, Timestamps, Base):
    """A URL of an integration that hears about the workspace's events it subscribed to."""

    __tablename__ = "webhook_endpoints"

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), index=True, nullable=False
    )
    url: Mapped[str] = mapped_column(String(2048), nullable=False)
    description: Mapped[str | None] = mapped_column(String(500))
    event_types: Mapped[list[str]] = mapped_column(JSON(), nullable=False)
    # Fernet tokens (key derived from SECRET_KEY): signing needs the secret itself, so it cannot be
    # a digest. The previous secret stays valid for a while after a rotation (both signatures sent).
    secret_encrypted: Mapped[str] = mapped_column(Text(), nullable=False)
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text())
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    enabled: Mapped[bool] = mapped_column(Boolean(), default=True, nullable=False)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    # Health: failed attempts since the last success, and since when it has been failing.
    consecutive_failures: Mapped[int] = mapped_column(Integer(), default=0, nullable=False)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_failure_reason: Mapped[str | None] = mapped_column(String(500))
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), ForeignKey("users.id", ondelete="SET NULL"))


class WebhookEvent(Base):
    """The outbox: one published event, written in the transaction of the change it describes."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_workspace_id_created_at", "workspace_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # msg_…, the webhook-id header
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    )
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    # The exact body sent (signatures cover these bytes, so every attempt sends the same text).
    payload: Mapped[str] = mapped_column(Text(), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class WebhookDelivery(UUIDPrimaryKey, Base):
    """One event to one endpoint: attempted until it succeeds or the attempts run out."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(f"status IN {DELIVERY_STATUSES!r}", name="status"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_id_created_at", "endpoint_id", "created_at"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    )
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
    )
    event_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True, nullable=False
    )
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer(), default=0, nullable=False)
    # When it is due (pending). While an attempt runs, this is pushed past the attempt's longest
    # possible duration: the claim, so that the sweep re-queues it only if that worker died.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status_code: Mapped[int | None] = mapped_column(Integer())
    last_error: Mapped[str | None] = mapped_column(String(500))
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery: the delivery log."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True, nullable=False
    )
    number: Mapped[int] = mapped_column(Integer(), nullable=False)
    manual: Mapped[bool] = mapped_column(Boolean(), default=False, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    duration_ms: Mapped[int] = mapped_column(Integer(), nullable=False)
    succeeded: Mapped[bool] = mapped_column(Boolean(), nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer())
    error: Mapped[str | None] = mapped_column(String(500))
    response_body: Mapped[str | None] = mapped_column(Text())  # its first bytes, for the log
