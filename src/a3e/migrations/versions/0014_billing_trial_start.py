"""Billing accounts record when the workspace's trial started: its creation, or — for a workspace
that existed before billing was switched on — the moment billing first counted it.

Revision ID: 0014_billing_trial_start
Revises: 0013_webhooks
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_billing_trial_start"
down_revision = "0013_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("billing_accounts") as batch:
        batch.add_column(sa.Column("trial_started_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("billing_accounts") as batch:
        batch.drop_column("trial_started_at")
