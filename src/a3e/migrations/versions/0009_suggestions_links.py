"""Review: the mapping engine's suggestions (pending, accepted, rejected) and the evidence links
people stand behind (manual, or accepted from a suggestion).

Revision ID: 0009_suggestions_links
Revises: 0008_standard_statuses
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_suggestions_links"
down_revision = "0008_standard_statuses"
branch_labels = None
depends_on = None

# As a3e.core.models stores them.
_DateTime = sa.DateTime(timezone=True)
_BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table('suggestions',
    sa.Column('id', _BigInt, autoincrement=True, nullable=False),
    sa.Column('workspace_id', sa.Uuid(), nullable=False),
    sa.Column('selection_id', sa.Uuid(), nullable=False),
    sa.Column('standard_code', sa.String(length=64), nullable=False),
    sa.Column('passage_id', _BigInt, nullable=False),
    sa.Column('document_id', sa.Uuid(), nullable=False),
    sa.Column('revision_id', sa.Uuid(), nullable=False),
    sa.Column('passage_digest', sa.String(length=64), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('engine', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('decided_by_id', sa.Uuid(), nullable=True),
    sa.Column('decided_at', _DateTime, nullable=True),
    sa.Column('created_at', _DateTime, nullable=False),
    sa.CheckConstraint("status IN ('pending', 'accepted', 'rejected')", name=op.f('ck_suggestions_status')),
    sa.CheckConstraint('confidence >= 0 AND confidence <= 1', name=op.f('ck_suggestions_confidence')),
    sa.ForeignKeyConstraint(['decided_by_id'], ['users.id'], name=op.f('fk_suggestions_decided_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], name=op.f('fk_suggestions_document_id_documents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['passage_id'], ['passages.id'], name=op.f('fk_suggestions_passage_id_passages'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['revision_id'], ['document_revisions.id'], name=op.f('fk_suggestions_revision_id_document_revisions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['selection_id'], ['catalog_selections.id'], name=op.f('fk_suggestions_selection_id_catalog_selections'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_suggestions_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_suggestions')),
    sa.UniqueConstraint('selection_id', 'standard_code', 'passage_id', name='uq_suggestions_selection_code_passage')
    )
    op.create_index('ix_suggestions_document_id', 'suggestions', ['document_id'], unique=False)
    op.create_index(op.f('ix_suggestions_passage_id'), 'suggestions', ['passage_id'], unique=False)
    op.create_index('ix_suggestions_selection_id_standard_code', 'suggestions', ['selection_id', 'standard_code'], unique=False)
    op.create_index('ix_suggestions_workspace_id_status', 'suggestions', ['workspace_id', 'status'], unique=False)
    op.create_table('evidence_links',
    sa.Column('workspace_id', sa.Uuid(), nullable=False),
    sa.Column('selection_id', sa.Uuid(), nullable=False),
    sa.Column('standard_code', sa.String(length=64), nullable=False),
    sa.Column('document_id', sa.Uuid(), nullable=False),
    sa.Column('passage_id', _BigInt, nullable=True),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('suggestion_id', _BigInt, nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_by_id', sa.Uuid(), nullable=True),
    sa.Column('created_at', _DateTime, nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.CheckConstraint("origin IN ('manual', 'suggested')", name=op.f('ck_evidence_links_origin')),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_evidence_links_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], name=op.f('fk_evidence_links_document_id_documents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['passage_id'], ['passages.id'], name=op.f('fk_evidence_links_passage_id_passages'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['selection_id'], ['catalog_selections.id'], name=op.f('fk_evidence_links_selection_id_catalog_selections'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['suggestion_id'], ['suggestions.id'], name=op.f('fk_evidence_links_suggestion_id_suggestions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_evidence_links_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evidence_links'))
    )
    op.create_index('ix_evidence_links_document_id', 'evidence_links', ['document_id'], unique=False)
    op.create_index('ix_evidence_links_workspace_id_selection_id', 'evidence_links', ['workspace_id', 'selection_id'], unique=False)
    op.create_index('uq_evidence_links_document', 'evidence_links', ['selection_id', 'standard_code', 'document_id'], unique=True, sqlite_where=sa.text('passage_id IS NULL'), postgresql_where=sa.text('passage_id IS NULL'))
    op.create_index('uq_evidence_links_passage', 'evidence_links', ['selection_id', 'standard_code', 'passage_id'], unique=True, sqlite_where=sa.text('passage_id IS NOT NULL'), postgresql_where=sa.text('passage_id IS NOT NULL'))


def downgrade() -> None:
    op.drop_index("uq_evidence_links_passage", table_name="evidence_links")
    op.drop_index("uq_evidence_links_document", table_name="evidence_links")
    op.drop_index("ix_evidence_links_workspace_id_selection_id", table_name="evidence_links")
    op.drop_index("ix_evidence_links_document_id", table_name="evidence_links")
    op.drop_table("evidence_links")
    op.drop_index("ix_suggestions_workspace_id_status", table_name="suggestions")
    op.drop_index("ix_suggestions_selection_id_standard_code", table_name="suggestions")
    op.drop_index(op.f("ix_suggestions_passage_id"), table_name="suggestions")
    op.drop_index("ix_suggestions_document_id", table_name="suggestions")
    op.drop_table("suggestions")
