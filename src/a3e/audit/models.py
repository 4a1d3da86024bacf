from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from a3e.core.database import Base
from a3e.core.models import BigIntPK, UTCDateTime, utcnow


class AuditEvent(Base):
    """Append-only: the migration installs triggers that refuse UPDATE and DELETE.

    No foreign keys on purpose: the record outlives the workspace, user or key it mentions.
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_workspace_id_id", "workspace_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False, index=True)
    workspace_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), index=True)
    actor_api_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    # Who it was at the time (an email or a key's name), kept even if the account goes away.
    actor_label: Mapped[str | None] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON())
