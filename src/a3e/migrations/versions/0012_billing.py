"""Billing: each workspace's Stripe customer and subscription state, and the Stripe events received.

Revision ID: 0012_billing
Revises: 0011_review_version
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_billing"
down_revision = "0011_review_version"
branch_labels = None
depends_on = None

# As a3e.core.models.UTCDateTime stores it (timezone-aware; naive UTC on SQLite).
_DateTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "billing_accounts",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(length=255), nullable=True),
        sa.Column("plan", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("trial_ends_at", _DateTime, nullable=True),
        sa.Column("current_period_end", _DateTime, nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("past_due_since", _DateTime, nullable=True),
        sa.Column("state_event_id", sa.String(length=255), nullable=True),
        sa.Column("state_event_created", sa.BigInteger(), nullable=True),
        sa.Column("created_at", _DateTime, nullable=False),
        sa.Column("updated_at", _DateTime, nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_billing_accounts_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_billing_accounts")),
        sa.UniqueConstraint("stripe_customer_id", name=op.f("uq_billing_accounts_stripe_customer_id")),
    )
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("workspace_id", sa.Uuid(), nullable=True),
        sa.Column("received_at", _DateTime, nullable=False),
        sa.Column("next_attempt_at", _DateTime, nullable=True),
        sa.Column("processed_at", _DateTime, nullable=True),
        sa.CheckConstraint(
            "status IN ('received', 'processed', 'ignored', 'failed')", name=op.f("ck_stripe_events_status")
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_stripe_events_workspace_id_workspaces"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    op.create_index(op.f("ix_stripe_events_workspace_id"), "stripe_events", ["workspace_id"], unique=False)
    op.create_index(
        "ix_stripe_events_status_next_attempt_at", "stripe_events", ["status", "next_attempt_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_stripe_events_status_next_attempt_at", table_name="stripe_events")
    op.drop_index(op.f("ix_stripe_events_workspace_id"), table_name="stripe_events")
    op.drop_table("stripe_events")
    op.drop_table("billing_accounts")
