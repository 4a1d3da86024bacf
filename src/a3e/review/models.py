"""Each standard's status in a workspace, on the two axes accreditation teams work with: where
the work stands (workflow) and what the team concluded (judgment)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from a3e.core.database import Base
from a3e.core.models import BigIntPK, UTCDateTime, UUIDPrimaryKey, utcnow


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


class SuggestionStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class LinkOrigin(StrEnum):
    MANUAL = "manual"
    SUGGESTED = "suggested"


class Suggestion(Base):
    """The mapping engine's proposal that a passage supports a standard, until a person decides.

    `passage_digest` (the SHA-256 of the passage's text) carries a rejection over to the same text
    in a later revision of the document, so a rejected suggestion never comes back on re-mapping.
    """

    __tablename__ = "suggestions"
    __table_args__ = (
        UniqueConstraint("selection_id", "standard_code", "passage_id", name="uq_suggestions_selection_code_passage"),
        Index("ix_suggestions_workspace_id_status", "workspace_id", "status"),
        Index("ix_suggestions_selection_id_standard_code", "selection_id", "standard_code"),
        Index("ix_suggestions_document_id", "document_id"),
        CheckConstraint(f"status IN {tuple(item.value for item in SuggestionStatus)!r}", name="status"),
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    )
    selection_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("catalog_selections.id", ondelete="CASCADE"), nullable=False
    )
    standard_code: Mapped[str] = mapped_column(String(64), nullable=False)
    passage_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("passages.id", ondelete="CASCADE"), index=True, nullable=False
    )
    document_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("documents.id", ondelete="CASCADE"), nullable=False
    )
    revision_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("document_revisions.id", ondelete="CASCADE"), nullable=False
    )
    passage_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    confidence: Mapped[float] = mapped_column(Float(), nullable=False)
    rank: Mapped[int] = mapped_column(Integer(), nullable=False)
    engine: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=SuggestionStatus.PENDING.value)
    reason: Mapped[str | None] = mapped_column(Text())
    decided_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class EvidenceLink(UUIDPrimaryKey, Base):
    """Evidence a person stands behind: a passage (or a whole document) cited for a standard."""

    __tablename__ = "evidence_links"
    __table_args__ = (
        # One link per standard and passage; one whole-document link per standard and document.
        Index(
            "uq_evidence_links_passage", "selection_id", "standard_code", "passage_id", unique=True,
            sqlite_where=text("passage_id IS NOT NULL"), postgresql_where=text("passage_id IS NOT NULL"),
        ),
        Index(
            "uq_evidence_links_document", "selection_id", "standard_code", "document_id", unique=True,
            sqlite_where=text("passage_id IS NULL"), postgresql_where=text("passage_id IS NULL"),
        ),
        Index("ix_evidence_links_workspace_id_selection_id", "workspace_id", "selection_id"),
        Index("ix_evidence_links_document_id", "document_id"),
        CheckConstraint(f"origin IN {tuple(item.value for item in LinkOrigin)!r}", name="origin"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    )
    selection_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("catalog_selections.id", ondelete="CASCADE"), nullable=False
    )
    standard_code: Mapped[str] = mapped_column(String(64), nullable=False)
    document_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("documents.id", ondelete="CASCADE"), nullable=False
    )
    passage_id: Mapped[int | None] = mapped_column(BigIntPK, ForeignKey("passages.id", ondelete="CASCADE"))
    origin: Mapped[str] = mapped_column(String(16), nullable=False)
    confidence: Mapped[float | None] = mapped_column(Float())
    suggestion_id: Mapped[int | None] = mapped_column(BigIntPK, ForeignKey("suggestions.id", ondelete="SET NULL"))
    note: Mapped[str | None] = mapped_column(Text())
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class MappingRun(Base):
    """One revision mapped against one of the workspace's catalogs: the workspace's mapping
    progress is how many of its current revisions have a finished run for each catalog."""

    __tablename__ = "mapping_runs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="status"),
        Index("ix_mapping_runs_workspace_id_status", "workspace_id", "status"),
    )

    revision_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("document_revisions.id", ondelete="CASCADE"), primary_key=True
    )
    selection_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("catalog_selections.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    engine: Mapped[str] = mapped_column(String(32), nullable=False)
    suggestions: Mapped[int] = mapped_column(Integer(), nullable=False, default=0)
    detail: Mapped[str | None] = mapped_column(Text())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


# The listeners that bump a workspace's review version when these tables change, registered
# wherever the review models are loaded (the service and every worker).
from a3e.review import versions as _versions  # noqa: E402, F401
