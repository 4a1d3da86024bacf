"""At most one open invitation per address and workspace.

Revision ID: 0003_open_invitation_unique
Revises: 0002_accounts
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_open_invitation_unique"
down_revision = "0002_accounts"
branch_labels = None
depends_on = None

_OPEN = sa.text("accepted_at IS NULL AND revoked_at IS NULL")


def upgrade() -> None:
    # Older duplicates (possible before this index) keep only the newest open invitation.
    op.execute(
        """
        UPDATE invitations SET revoked_at = created_at
        WHERE accepted_at IS NULL AND revoked_at IS NULL AND EXISTS (
            SELECT 1 FROM invitations AS newer
            WHERE newer.workspace_id = invitations.workspace_id AND newer.email = invitations.email
              AND newer.accepted_at IS NULL AND newer.revoked_at IS NULL
              AND newer.created_at > invitations.created_at
        )
        """
    )
    op.create_index(
        "uq_invitations_open_email",
        "invitations",
        ["workspace_id", "email"],
        unique=True,
        postgresql_where=_OPEN,
        sqlite_where=_OPEN,
    )


def downgrade() -> None:
    op.drop_index("uq_invitations_open_email", table_name="invitations")
