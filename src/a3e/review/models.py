"""Each standard's status in a workspace, on the two axes accreditation teams work with: where
the work stands (workflow) and what the team concluded (judgment)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from a3e.core.database import Base
from a3e.core.models import UTCDateTime, UUIDPrimaryKey, utcnow


class Workflow(StrEnum):
    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    IN_REVIEW = "in_review"
    APPROVED = "approved"


class Judgment(StrEnum):
    COMPLIANT = "compliant"
    PARTIALLY_COMPLIANT = "partially_compliant"
    NON_COMPLIANT = "non_compliant"
    NOT_APPLICABLE = "not_applicable"
    NOT_ASSESSED = "not_assessed"


class StandardStatus(UUIDPrimaryKey, Base):
    """A standard's status under one of the workspace's catalogs. No row: not started, not assessed."""

    __tablename__ = "standard_statuses"
    __table_args__ = (
        UniqueConstraint("selection_id", "standard_code", name="uq_standard_statuses_selection_code"),
        CheckConstraint(f"workflow IN {tuple(item.value for item in Workflow)!r}", name="workflow"),
        CheckConstraint(f"judgment IN {tuple(item.value for item in Judgment)!r}", name="judgment"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), index=True, nullable=False
    )
    # The catalog as the workspace selected it; unselecting a catalog removes its statuses.
    selection_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("catalog_selections.id", ondelete="CASCADE"), nullable=False
    )
    standard_code: Mapped[str] = mapped_column(String(64), nullable=False)
    workflow: Mapped[str] = mapped_column(String(16), nullable=False, default=Workflow.NOT_STARTED.value)
    judgment: Mapped[str] = mapped_column(String(24), nullable=False, default=Judgment.NOT_ASSESSED.value)
    note: Mapped[str | None] = mapped_column(Text())
    updated_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), ForeignKey("users.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
