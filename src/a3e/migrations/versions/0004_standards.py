"""Standards catalogs: custom frameworks imported into a workspace, their standards, and the
catalogs each workspace selects (a built-in accreditor edition or a custom catalog).

Revision ID: 0004_standards
Revises: 0003_open_invitation_unique
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_standards"
down_revision = "0003_open_invitation_unique"
branch_labels = None
depends_on = None

# As a3e.core.models.UTCDateTime stores it (timezone-aware; naive UTC on SQLite).
_DateTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "custom_catalogs",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("source_format", sa.String(length=8), nullable=False),
        sa.Column("source_filename", sa.String(length=255), nullable=True),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("max_depth", sa.Integer(), nullable=False),
        sa.Column("created_by_id", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", _DateTime, nullable=False),
        sa.Column("updated_at", _DateTime, nullable=False),
        sa.CheckConstraint("source_format IN ('csv', 'json', 'yaml')", name=op.f("ck_custom_catalogs_source_format")),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_custom_catalogs_created_by_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_custom_catalogs_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custom_catalogs")),
        sa.UniqueConstraint("workspace_id", "name", "version", name="uq_custom_catalogs_workspace_name_version"),
    )
    with op.batch_alter_table("custom_catalogs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_custom_catalogs_workspace_id"), ["workspace_id"], unique=False)

    op.create_table(
        "catalog_selections",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("accreditor_code", sa.String(length=16), nullable=True),
        sa.Column("edition", sa.String(length=32), nullable=True),
        sa.Column("custom_catalog_id", sa.Uuid(), nullable=True),
        sa.Column("selected_by_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", _DateTime, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "(kind = 'builtin' AND accreditor_code IS NOT NULL AND edition IS NOT NULL AND custom_catalog_id IS NULL)"
            " OR (kind = 'custom' AND custom_catalog_id IS NOT NULL AND accreditor_code IS NULL AND edition IS NULL)",
            name=op.f("ck_catalog_selections_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["custom_catalog_id"],
            ["custom_catalogs.id"],
            name=op.f("fk_catalog_selections_custom_catalog_id_custom_catalogs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["selected_by_id"], ["users.id"], name=op.f("fk_catalog_selections_selected_by_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_catalog_selections_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_selections")),
        sa.UniqueConstraint("workspace_id", "accreditor_code", "edition", name="uq_catalog_selections_builtin"),
        sa.UniqueConstraint("workspace_id", "custom_catalog_id", name="uq_catalog_selections_custom"),
    )
    with op.batch_alter_table("catalog_selections", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_catalog_selections_workspace_id"), ["workspace_id"], unique=False)

    op.create_table(
        "custom_standards",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("catalog_id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("parent_code", sa.String(length=64), nullable=True),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["catalog_id"], ["custom_catalogs.id"], name=op.f("fk_custom_standards_catalog_id_custom_catalogs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_custom_standards_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custom_standards")),
        sa.UniqueConstraint("catalog_id", "code", name="uq_custom_standards_catalog_code"),
    )
    with op.batch_alter_table("custom_standards", schema=None) as batch_op:
        batch_op.create_index("ix_custom_standards_catalog_id_position", ["catalog_id", "position"], unique=False)
        batch_op.create_index(batch_op.f("ix_custom_standards_workspace_id"), ["workspace_id"], unique=False)


def downgrade() -> None:
    op.drop_table("custom_standards")
    op.drop_table("catalog_selections")
    op.drop_table("custom_catalogs")
