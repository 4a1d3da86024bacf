"""Login attempts replace login failures: an attempt is recorded as `pending` before its password
is checked and becomes `failed` when the password is wrong (a successful one is deleted).

Every existing failure is kept as a `failed` attempt with its time. Downgrading keeps both kinds
as failures: an attempt still in flight counted against the limit, and still does.

Revision ID: 0005_login_attempts
Revises: 0004_standards
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_login_attempts"
down_revision = "0004_standards"
branch_labels = None
depends_on = None

# As a3e.core.models.UTCDateTime stores it (timezone-aware; naive UTC on SQLite).
_DateTime = sa.DateTime(timezone=True)
_BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "login_attempts",
        sa.Column("id", _BigIntPK, autoincrement=True, nullable=False),
        sa.Column("account", sa.String(length=320), nullable=False),
        sa.Column("client_ip", sa.String(length=64), nullable=False),
        sa.Column("attempted_at", _DateTime, nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.CheckConstraint("state IN ('pending', 'failed')", name=op.f("ck_login_attempts_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempts")),
    )
    with op.batch_alter_table("login_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_login_attempts_account_attempted_at", ["account", "attempted_at"], unique=False)
        batch_op.create_index("ix_login_attempts_client_ip_attempted_at", ["client_ip", "attempted_at"], unique=False)
    # Ids are not copied: PostgreSQL's sequence for the new table would not know about them.
    op.execute(
        "INSERT INTO login_attempts (account, client_ip, attempted_at, state) "
        "SELECT account, client_ip, failed_at, 'failed' FROM login_failures"
    )
    op.drop_table("login_failures")


def downgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("id", _BigIntPK, autoincrement=True, nullable=False),
        sa.Column("account", sa.String(length=320), nullable=False),
        sa.Column("client_ip", sa.String(length=64), nullable=False),
        sa.Column("failed_at", _DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.create_index("ix_login_failures_account_failed_at", ["account", "failed_at"], unique=False)
        batch_op.create_index("ix_login_failures_client_ip_failed_at", ["client_ip", "failed_at"], unique=False)
    op.execute(
        "INSERT INTO login_failures (account, client_ip, failed_at) "
        "SELECT account, client_ip, attempted_at FROM login_attempts"
    )
    op.drop_table("login_attempts")
