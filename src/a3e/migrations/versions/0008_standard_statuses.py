"""Standard statuses: each standard's workflow status and judgment under a workspace's catalog.

Revision ID: 0008_standard_statuses
Revises: 0007_passage_search
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_standard_statuses"
down_revision = "0007_passage_search"
branch_labels = None
depends_on = None

# As a3e.core.models.UTCDateTime stores it (timezone-aware; naive UTC on SQLite).
_DateTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "standard_statuses",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("selection_id", sa.Uuid(), nullable=False),
        sa.Column("standard_code", sa.String(length=64), nullable=False),
        sa.Column("workflow", sa.String(length=16), nullable=False),
        sa.Column("judgment", sa.String(length=24), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("updated_by_id", sa.Uuid(), nullable=True),
        sa.Column("updated_at", _DateTime, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "judgment IN ('compliant', 'partially_compliant', 'non_compliant', 'not_applicable', 'not_assessed')",
            name=op.f("ck_standard_statuses_judgment"),
        ),
        sa.CheckConstraint(
            "workflow IN ('not_started', 'in_progress', 'in_review', 'approved')",
            name=op.f("ck_standard_statuses_workflow"),
        ),
        sa.ForeignKeyConstraint(
            ["selection_id"], ["catalog_selections.id"],
            name=op.f("fk_standard_statuses_selection_id_catalog_selections"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"], ["users.id"], name=op.f("fk_standard_statuses_updated_by_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_standard_statuses_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_standard_statuses")),
        sa.UniqueConstraint("selection_id", "standard_code", name="uq_standard_statuses_selection_code"),
    )
    op.create_index(op.f("ix_standard_statuses_workspace_id"), "standard_statuses", ["workspace_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_standard_statuses_workspace_id"), table_name="standard_statuses")
    op.drop_table("standard_statuses")
