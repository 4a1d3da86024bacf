"""Mapping runs: which revision has been mapped against which of the workspace's catalogs.

Revision ID: 0010_mapping_runs
Revises: 0009_suggestions_links
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_mapping_runs"
down_revision = "0009_suggestions_links"
branch_labels = None
depends_on = None

_DateTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mapping_runs",
        sa.Column("revision_id", sa.Uuid(), nullable=False),
        sa.Column("selection_id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("engine", sa.String(length=32), nullable=False),
        sa.Column("suggestions", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("updated_at", _DateTime, nullable=False),
        sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name=op.f("ck_mapping_runs_status")),
        sa.ForeignKeyConstraint(
            ["revision_id"], ["document_revisions.id"], name=op.f("fk_mapping_runs_revision_id_document_revisions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["selection_id"], ["catalog_selections.id"],
            name=op.f("fk_mapping_runs_selection_id_catalog_selections"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_mapping_runs_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("revision_id", "selection_id", name=op.f("pk_mapping_runs")),
    )
    op.create_index("ix_mapping_runs_workspace_id_status", "mapping_runs", ["workspace_id", "status"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_mapping_runs_workspace_id_status", table_name="mapping_runs")
    op.drop_table("mapping_runs")
