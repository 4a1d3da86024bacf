"""Documents, their immutable revisions, the passages extracted from each revision, and the blobs
(stored files) revisions point to.

A document is what a liaison thinks of ("Faculty Handbook"): metadata and tags, and a current
revision. Each upload of new content is a revision: its bytes are a content-addressed blob (one
stored file however many revisions, in any workspace, share it), its processing state, and, once
processed, its passages with exact locations. Passages never change after they are written: a
later change to the document is a new revision with passages of its own.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from a3e.core.database import Base
from a3e.core.models import BigIntPK, Timestamps, UTCDateTime, UUIDPrimaryKey, utcnow


class RevisionStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


REVISION_STATUSES = tuple(status.value for status in RevisionStatus)
DOCUMENT_KINDS = ("pdf", "docx", "xlsx", "csv", "txt", "md", "html")


class Blob(Base):
    """A stored file, by the SHA-256 of its bytes. The row is the lock that orders storing a blob
    against removing it once no revision references it any more."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger(), nullable=False)
    media_type: Mapped[str] = mapped_column(String(127), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class Document(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_workspace_id_created_at", "workspace_id", "created_at"),)

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    )
    title: Mapped[str] = mapped_column(String(300), nullable=False)
    description: Mapped[str | None] = mapped_column(Text())
    document_date: Mapped[date | None] = mapped_column(Date())
    effective_date: Mapped[date | None] = mapped_column(Date())
    review_date: Mapped[date | None] = mapped_column(Date())  # next review, or expiry
    owner: Mapped[str | None] = mapped_column(String(200))  # the office or person responsible
    # The revision shown and searched by default: the latest upload. No foreign key, so that a
    # document and its revisions can be inserted and deleted in any order.
    current_revision_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    revision_count: Mapped[int] = mapped_column(Integer(), default=0, nullable=False)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), ForeignKey("users.id", ondelete="SET NULL"))


class DocumentTag(Base):
    __tablename__ = "document_tags"
    __table_args__ = (Index("ix_document_tags_workspace_id_tag", "workspace_id", "tag"),)

    document_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    )


class Revision(UUIDPrimaryKey, Base):
    __tablename__ = "document_revisions"
    __table_args__ = (
        UniqueConstraint("document_id", "number", name="uq_document_revisions_document_number"),
        Index("ix_document_revisions_workspace_id_sha256", "workspace_id", "sha256"),
        Index("ix_document_revisions_status_status_changed_at", "status", "status_changed_at"),
        CheckConstraint(f"status IN {REVISION_STATUSES!r}", name="status"),
        CheckConstraint(f"kind IN {DOCUMENT_KINDS!r}", name="kind"),
    )

    document_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("documents.id", ondelete="CASCADE"), index=True, nullable=False
    )
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    )
    number: Mapped[int] = mapped_column(Integer(), nullable=False)  # 1, 2, … within the document
    sha256: Mapped[str] = mapped_column(String(64), ForeignKey("blobs.sha256"), index=True, nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger(), nullable=False)
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)
    media_type: Mapped[str] = mapped_column(String(127), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=RevisionStatus.QUEUED.value)
    # Why it failed, or a note on a success ("no text found — scanned document?").
    status_detail: Mapped[str | None] = mapped_column(Text())
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer(), default=0, nullable=False)
    page_count: Mapped[int | None] = mapped_column(Integer())
    passage_count: Mapped[int | None] = mapped_column(Integer())
    character_count: Mapped[int | None] = mapped_column(Integer())
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Passage(Base):
    """A span of a revision's extracted text: `text == revision_text[char_start:char_end]`.

    The integer id is stable (a revision's passages are written once) and is what full-text
    search and, later, mapping links refer to.
    """

    __tablename__ = "passages"
    __table_args__ = (
        UniqueConstraint("revision_id", "ordinal", name="uq_passages_revision_ordinal"),
        Index("ix_passages_workspace_id_document_id", "workspace_id", "document_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    revision_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("document_revisions.id", ondelete="CASCADE"), nullable=False
    )
    document_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("documents.id", ondelete="CASCADE"), nullable=False
    )
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    )
    ordinal: Mapped[int] = mapped_column(Integer(), nullable=False)
    text: Mapped[str] = mapped_column(Text(), nullable=False)
    page: Mapped[int | None] = mapped_column(Integer())
    char_start: Mapped[int] = mapped_column(Integer(), nullable=False)
    char_end: Mapped[int] = mapped_column(Integer(), nullable=False)
    heading: Mapped[str | None] = mapped_column(Text())
    location: Mapped[str | None] = mapped_column(String(200))
