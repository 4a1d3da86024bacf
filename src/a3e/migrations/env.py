"""Alembic environment: runs on the connection handed in by a3e.core.migrations."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from a3e.core.database import load_all_models

target_metadata = load_all_models()
config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # `alembic` run by hand with -x url=...
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the database with: alembic -x url=postgresql+psycopg://... upgrade head")
    with create_engine(url).connect() as conn:
        _run(conn)
