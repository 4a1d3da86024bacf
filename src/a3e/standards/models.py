"""Custom frameworks imported into a workspace, and the catalogs each workspace selects.

Built-in catalogs live in the package (`a3e/standards/data/`), not in tables: a selection names
one by accreditor code and edition. A custom catalog and its standards are rows owned by one
workspace; a selection of it references the catalog row.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from a3e.core.database import Base
from a3e.core.models import BigIntPK, Timestamps, UTCDateTime, UUIDPrimaryKey, utcnow

SOURCE_FORMATS = ("csv", "json", "yaml")
SELECTION_KINDS = ("builtin", "custom")


class CustomCatalog(UUIDPrimaryKey, Timestamps, Base):
    """A framework a workspace imported: a programmatic accreditor, state rules, an internal one."""

    __tablename__ = "custom_catalogs"
    __table_args__ = (
        UniqueConstraint("workspace_id", "name", "version", name="uq_custom_catalogs_workspace_name_version"),
        CheckConstraint("source_format IN ('csv', 'json', 'yaml')", name="source_format"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), index=True, nullable=False
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    version: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    description: Mapped[str | None] = mapped_column(Text())
    source_format: Mapped[str] = mapped_column(String(8), nullable=False)
    source_filename: Mapped[str | None] = mapped_column(String(255))
    content_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    item_count: Mapped[int] = mapped_column(Integer(), nullable=False)
    max_depth: Mapped[int] = mapped_column(Integer(), nullable=False)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), ForeignKey("users.id", ondelete="SET NULL"))


class CustomStandard(Base):
    """One node of a custom catalog. `parent_code` names another node of the same catalog."""

    __tablename__ = "custom_standards"
    __table_args__ = (
        UniqueConstraint("catalog_id", "code", name="uq_custom_standards_catalog_code"),
        Index("ix_custom_standards_catalog_id_position", "catalog_id", "position"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    catalog_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("custom_catalogs.id", ondelete="CASCADE"), nullable=False
    )
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), index=True, nullable=False
    )
    code: Mapped[str] = mapped_column(String(64), nullable=False)
    parent_code: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(500), nullable=False)
    text: Mapped[str | None] = mapped_column(Text())
    position: Mapped[int] = mapped_column(Integer(), nullable=False)
    depth: Mapped[int] = mapped_column(Integer(), nullable=False)


class CatalogSelection(UUIDPrimaryKey, Base):
    """A catalog the workspace is reviewed against: a built-in one (accreditor + edition) or a
    custom one."""

    __tablename__ = "catalog_selections"
    __table_args__ = (
        CheckConstraint(
            "(kind = 'builtin' AND accreditor_code IS NOT NULL AND edition IS NOT NULL AND custom_catalog_id IS NULL)"
            " OR (kind = 'custom' AND custom_catalog_id IS NOT NULL AND accreditor_code IS NULL AND edition IS NULL)",
            name="kind",
        ),
        # NULLs are distinct in both: a custom selection never collides with a built-in one.
        UniqueConstraint("workspace_id", "accreditor_code", "edition", name="uq_catalog_selections_builtin"),
        UniqueConstraint("workspace_id", "custom_catalog_id", name="uq_catalog_selections_custom"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), index=True, nullable=False
    )
    kind: Mapped[str] = mapped_column(String(8), nullable=False)
    accreditor_code: Mapped[str | None] = mapped_column(String(16))
    edition: Mapped[str | None] = mapped_column(String(32))
    custom_catalog_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid(), ForeignKey("custom_catalogs.id", ondelete="CASCADE")
    )
    selected_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
