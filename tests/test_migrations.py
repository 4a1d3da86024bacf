"""Migrations are the only way the schema changes: tests build the schema by running them, and a
test fails when the models and the migrations drift apart."""

from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from a3e.core import migrations
from a3e.core.database import MODEL_MODULES, load_all_models
from a3e.evidence.search import SEARCH_SCHEMA_COLUMNS, SEARCH_SCHEMA_INDEXES, SEARCH_SCHEMA_TABLES


def outside_the_models(name: str | None, type_: str, parent_names: dict) -> bool:
    """Objects a migration creates on purpose without a model: full-text search's (0007)."""
    if type_ == "table":
        return name in SEARCH_SCHEMA_TABLES
    if type_ == "column":
        return (parent_names.get("table_name"), name) in SEARCH_SCHEMA_COLUMNS
    if type_ == "index":
        return name in SEARCH_SCHEMA_INDEXES
    return False


def schema_drift(url: str, metadata: sa.MetaData) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "include_name": lambda name, type_, parents: not outside_the_models(name, type_, parents),
                },
            )
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def test_models_and_migrations_agree(database_url):
    engine = create_engine(database_url)
    migrations.upgrade(engine)
    engine.dispose()
    assert schema_drift(database_url, load_all_models()) == []


def test_the_drift_check_notices_a_model_without_a_migration(database_url):
    engine = create_engine(database_url)
    migrations.upgrade(engine)
    engine.dispose()
    drifted = sa.MetaData()
    for table in load_all_models().tables.values():
        table.to_metadata(drifted)
    sa.Table("unmigrated_table", drifted, sa.Column("id", sa.Integer, primary_key=True))
    diff = schema_drift(database_url, drifted)
    assert [entry[0] for entry in diff] == ["add_table"]


def test_status_before_and_after_upgrade_and_downgrade(database_url):
    engine = create_engine(database_url)
    with engine.connect() as connection:
        before = migrations.status(connection)
    assert not before.ok and "no schema" in before.detail
    migrations.upgrade(engine)
    migrations.upgrade(engine)  # idempotent
    with engine.connect() as connection:
        assert migrations.status(connection).ok
        assert migrations.current_revisions(connection) == migrations.head_revisions()
    from alembic import command

    with engine.connect() as connection:
        command.downgrade(migrations.alembic_config(connection), "base")
        connection.commit()
    with engine.connect() as connection:
        assert not migrations.status(connection).ok
    engine.dispose()


def test_a_schema_newer_than_the_code_is_reported(database_url):
    engine = create_engine(database_url)
    migrations.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff_from_the_future'"))
    with engine.connect() as connection:
        result = migrations.status(connection)
    engine.dispose()
    assert not result.ok and "newer than this code" in result.detail


def test_every_model_module_imports():
    for module in MODEL_MODULES:
        __import__(module)


def test_migrate_command_and_check(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {"DATABASE_URL": url, "PATH": "/usr/bin:/bin", "A3E_DATA_DIR": str(tmp_path / "d")}
    check = subprocess.run([sys.executable, "-m", "a3e", "migrate", "--check"], env=env, capture_output=True, text=True, timeout=60)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "pending" in check.stdout
    migrate = subprocess.run([sys.executable, "-m", "a3e", "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert migrate.returncode == 0, migrate.stderr
    assert "migrated" in migrate.stdout
    check = subprocess.run([sys.executable, "-m", "a3e", "migrate", "--check"], env=env, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_database_refuses_two_open_invitations_to_one_address(database_url):
    import uuid
    from datetime import timedelta

    import pytest
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    from a3e.core.models import utcnow
    from a3e.workspaces.models import Invitation, Workspace

    engine = create_engine(database_url)
    migrations.upgrade(engine)
    with Session(engine) as session:
        workspace = Workspace(name="W")
        session.add(workspace)
        session.flush()

        def invitation(**values) -> Invitation:
            return Invitation(
                workspace_id=workspace.id, email="x@example.edu", role="viewer", token_hash=uuid.uuid4().hex,
                expires_at=utcnow() + timedelta(days=7), **values,
            )

        session.add_all([invitation(revoked_at=utcnow()), invitation(accepted_at=utcnow()), invitation()])
        session.commit()  # closed ones don't count
        session.add(invitation())
        with pytest.raises(IntegrityError):
            session.commit()
    engine.dispose()


def test_the_head_read_from_the_files_is_alembics():
    assert migrations._heads_from_files() == migrations.head_revisions()


def test_an_up_to_date_database_is_recognised_without_loading_alembic(tmp_path):
    """The readiness check at start-up: at head, no Alembic import; one behind, Alembic says so."""
    url = f"sqlite:///{tmp_path / 'ready.db'}"
    engine = create_engine(url)
    migrations.upgrade(engine)
    engine.dispose()
    probe = (
        "import sys; from sqlalchemy import create_engine; from a3e.core import migrations\n"
        f"engine = create_engine({url!r})\n"
        "with engine.connect() as connection: result = migrations.status(connection)\n"
        "print(result.status, 'alembic' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["ok", "False"], done.stdout + done.stderr

    engine = create_engine(url)
    [head] = migrations.head_revisions()
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '0012_billing'"))
    with engine.connect() as connection:
        behind = migrations.status(connection)
    engine.dispose()
    assert head != "0012_billing" and not behind.ok and "pending" in behind.detail
