"""The evidence library: documents, their tags, immutable revisions (each a content-addressed
blob and a processing state), and the passages extracted from each revision.

Revision ID: 0006_evidence
Revises: 0005_login_attempts
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_evidence"
down_revision = "0005_login_attempts"
branch_labels = None
depends_on = None

# As a3e.core.models.UTCDateTime stores it (timezone-aware; naive UTC on SQLite).
_DateTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table('blobs',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('media_type', sa.String(length=127), nullable=False),
    sa.Column('created_at', _DateTime, nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_blobs'))
    )
    op.create_table('documents',
    sa.Column('workspace_id', sa.Uuid(), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('document_date', sa.Date(), nullable=True),
    sa.Column('effective_date', sa.Date(), nullable=True),
    sa.Column('review_date', sa.Date(), nullable=True),
    sa.Column('owner', sa.String(length=200), nullable=True),
    sa.Column('current_revision_id', sa.Uuid(), nullable=True),
    sa.Column('revision_count', sa.Integer(), nullable=False),
    sa.Column('created_by_id', sa.Uuid(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', _DateTime, nullable=False),
    sa.Column('updated_at', _DateTime, nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_documents_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_documents_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_documents'))
    )
    op.create_index('ix_documents_workspace_id_created_at', 'documents', ['workspace_id', 'created_at'], unique=False)
    op.create_table('document_revisions',
    sa.Column('document_id', sa.Uuid(), nullable=False),
    sa.Column('workspace_id', sa.Uuid(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('media_type', sa.String(length=127), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_detail', sa.Text(), nullable=True),
    sa.Column('status_changed_at', _DateTime, nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('page_count', sa.Integer(), nullable=True),
    sa.Column('passage_count', sa.Integer(), nullable=True),
    sa.Column('character_count', sa.Integer(), nullable=True),
    sa.Column('created_by_id', sa.Uuid(), nullable=True),
    sa.Column('created_at', _DateTime, nullable=False),
    sa.Column('processed_at', _DateTime, nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.CheckConstraint("kind IN ('pdf', 'docx', 'xlsx', 'csv', 'txt', 'md', 'html')", name=op.f('ck_document_revisions_kind')),
    sa.CheckConstraint("status IN ('queued', 'processing', 'ready', 'failed')", name=op.f('ck_document_revisions_status')),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_document_revisions_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], name=op.f('fk_document_revisions_document_id_documents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sha256'], ['blobs.sha256'], name=op.f('fk_document_revisions_sha256_blobs')),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_document_revisions_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_document_revisions')),
    sa.UniqueConstraint('document_id', 'number', name='uq_document_revisions_document_number')
    )
    op.create_index(op.f('ix_document_revisions_document_id'), 'document_revisions', ['document_id'], unique=False)
    op.create_index(op.f('ix_document_revisions_sha256'), 'document_revisions', ['sha256'], unique=False)
    op.create_index('ix_document_revisions_status_status_changed_at', 'document_revisions', ['status', 'status_changed_at'], unique=False)
    op.create_index('ix_document_revisions_workspace_id_sha256', 'document_revisions', ['workspace_id', 'sha256'], unique=False)
    op.create_table('document_tags',
    sa.Column('document_id', sa.Uuid(), nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.Column('workspace_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], name=op.f('fk_document_tags_document_id_documents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_document_tags_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('document_id', 'tag', name=op.f('pk_document_tags'))
    )
    op.create_index('ix_document_tags_workspace_id_tag', 'document_tags', ['workspace_id', 'tag'], unique=False)
    op.create_table('passages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('revision_id', sa.Uuid(), nullable=False),
    sa.Column('document_id', sa.Uuid(), nullable=False),
    sa.Column('workspace_id', sa.Uuid(), nullable=False),
    sa.Column('ordinal', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('page', sa.Integer(), nullable=True),
    sa.Column('char_start', sa.Integer(), nullable=False),
    sa.Column('char_end', sa.Integer(), nullable=False),
    sa.Column('heading', sa.Text(), nullable=True),
    sa.Column('location', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], name=op.f('fk_passages_document_id_documents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['revision_id'], ['document_revisions.id'], name=op.f('fk_passages_revision_id_document_revisions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_passages_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_passages')),
    sa.UniqueConstraint('revision_id', 'ordinal', name='uq_passages_revision_ordinal')
    )
    op.create_index('ix_passages_workspace_id_document_id', 'passages', ['workspace_id', 'document_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_passages_workspace_id_document_id', table_name='passages')
    op.drop_table('passages')
    op.drop_index('ix_document_tags_workspace_id_tag', table_name='document_tags')
    op.drop_table('document_tags')
    op.drop_index('ix_document_revisions_workspace_id_sha256', table_name='document_revisions')
    op.drop_index('ix_document_revisions_status_status_changed_at', table_name='document_revisions')
    op.drop_index(op.f('ix_document_revisions_sha256'), table_name='document_revisions')
    op.drop_index(op.f('ix_document_revisions_document_id'), table_name='document_revisions')
    op.drop_table('document_revisions')
    op.drop_index('ix_documents_workspace_id_created_at', table_name='documents')
    op.drop_table('documents')
    op.drop_table('blobs')
