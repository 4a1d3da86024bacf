"""Workspaces get a review version: a counter bumped by every change the matrix and gaps are
computed from, so that a computed matrix can be reused until the workspace changes.

Revision ID: 0011_review_version
Revises: 0010_mapping_runs
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_review_version"
down_revision = "0010_mapping_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(sa.Column("review_version", sa.BigInteger(), server_default=sa.text("0"), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("workspaces") as batch:
        batch.drop_column("review_version")
