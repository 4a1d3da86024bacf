"""Full-text search over passages, one index per backend.

PostgreSQL: a stored generated column `passages.search_vector` (to_tsvector('english', text)) with
a GIN index. A generated column rather than an expression index because ranking (`ts_rank_cd`)
needs the tsvector of every matching row: with an expression index PostgreSQL recomputes
to_tsvector for each of them at query time, with the column it reads it. Passages are written
once and never updated, so the column costs only its storage.

SQLite: an FTS5 external-content table `passages_fts` over `passages.text` (porter stemming over
unicode61, close to PostgreSQL's english configuration), kept in step with `passages` by triggers.
A later migration that rebuilds `passages` on SQLite (batch mode copies the table) drops those
triggers with the old table and must create them again.

Both live only here, not in the models: a3e.evidence.search names them (SEARCH_SCHEMA_OBJECTS)
and the drift test ignores exactly those.

Revision ID: 0007_passage_search
Revises: 0006_evidence
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0007_passage_search"
down_revision = "0006_evidence"
branch_labels = None
depends_on = None

_SQLITE_STATEMENTS = (
    """CREATE VIRTUAL TABLE passages_fts USING fts5(
        text, content='passages', content_rowid='id', tokenize='porter unicode61'
    )""",
    """CREATE TRIGGER passages_fts_after_insert AFTER INSERT ON passages BEGIN
        INSERT INTO passages_fts (rowid, text) VALUES (new.id, new.text);
    END""",
    """CREATE TRIGGER passages_fts_after_delete AFTER DELETE ON passages BEGIN
        INSERT INTO passages_fts (passages_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END""",
    """CREATE TRIGGER passages_fts_after_update AFTER UPDATE OF id, text ON passages BEGIN
        INSERT INTO passages_fts (passages_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO passages_fts (rowid, text) VALUES (new.id, new.text);
    END""",
    # Passages written before this migration.
    "INSERT INTO passages_fts (passages_fts) VALUES ('rebuild')",
)


def _require_fts5() -> None:
    bind = op.get_bind()
    options = {row[0] for row in bind.exec_driver_sql("PRAGMA compile_options")}
    if "ENABLE_FTS5" not in options:
        raise RuntimeError(
            "This Python's SQLite library was built without FTS5, which full-text search needs. "
            "Use a Python whose sqlite3 has FTS5 (CPython from python.org, Debian and most distributions do), "
            "or use PostgreSQL (DATABASE_URL)."
        )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        # '<' hidden from the parser: it would take "<b and c>" for an HTML tag and drop its words.
        op.execute(
            "ALTER TABLE passages ADD COLUMN search_vector tsvector "
            "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, replace(text, '<', chr(3)))) STORED"
        )
        op.execute("CREATE INDEX ix_passages_search_vector ON passages USING gin (search_vector)")
    elif dialect == "sqlite":
        _require_fts5()
        for statement in _SQLITE_STATEMENTS:
            op.execute(statement)
    else:  # pragma: no cover - A3E runs on these two only
        raise RuntimeError(f"full-text search is not implemented for {dialect}")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_passages_search_vector")
        op.execute("ALTER TABLE passages DROP COLUMN IF EXISTS search_vector")
    elif dialect == "sqlite":
        for trigger in ("passages_fts_after_insert", "passages_fts_after_delete", "passages_fts_after_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS passages_fts")
