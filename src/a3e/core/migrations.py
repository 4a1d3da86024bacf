"""Alembic, driven from code: the migrations ship inside the package, no alembic.ini needed."""

from __future__ import annotations

import ast
import functools
import re
from importlib import resources
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, text

from a3e.core.database import CheckResult

if TYPE_CHECKING:
    from alembic.config import Config

# Any fixed number: serialises concurrent `a3e migrate` runs against one PostgreSQL database.
_PG_MIGRATION_LOCK = 0x0A3E_0001


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "a3e:migrations")
    config.attributes["connection"] = connection
    return config


@functools.cache
def head_revisions() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(connection: Connection) -> frozenset[str]:
    from alembic.runtime.migration import MigrationContext

    return frozenset(MigrationContext.configure(connection).get_current_heads())


_ASSIGNMENT = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.MULTILINE)


@functools.cache
def _heads_from_files() -> frozenset[str] | None:
    """The head revision(s), read from each migration file's `revision = …` and `down_revision = …`
    lines, without importing Alembic and every migration module (most of the readiness check's
    cost at start-up). None when a file is not in that plain form: then Alembic decides."""
    revisions: set[str] = set()
    parents: set[str] = set()
    try:
        for entry in (resources.files("a3e.migrations") / "versions").iterdir():
            if not entry.name.endswith(".py") or entry.name.startswith("_"):
                continue
            found = dict(_ASSIGNMENT.findall(entry.read_text(encoding="utf-8")))
            revision, down = ast.literal_eval(found["revision"]), ast.literal_eval(found["down_revision"])
            if not isinstance(revision, str):
                return None
            revisions.add(revision)
            parents.update(down if isinstance(down, tuple) else () if down is None else (down,))
    except (KeyError, ValueError, SyntaxError, OSError):
        return None
    heads = frozenset(revisions - parents)
    return heads or None


def _stamped_revisions(connection: Connection) -> frozenset[str]:
    """What the database says it is at (Alembic's version table), read with one SELECT."""
    if not connection.dialect.has_table(connection, "alembic_version"):
        return frozenset()
    return frozenset(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


def status(connection: Connection) -> CheckResult:
    # The usual case — the database is at the code's head — is settled without Alembic.
    fast_head = _heads_from_files()
    if fast_head is not None and _stamped_revisions(connection) == fast_head:
        return CheckResult("ok", "the schema is at the latest migration",
                           {"current": sorted(fast_head), "head": sorted(fast_head)})
    current, head = current_revisions(connection), head_revisions()
    extra = {"current": sorted(current) or None, "head": sorted(head)}
    if current == head:
        return CheckResult("ok", "the schema is at the latest migration", extra)
    if not current:
        return CheckResult("fail", "migrations pending: the database has no schema yet; run `a3e migrate`", extra)
    if current - head and not _known(current):
        return CheckResult(
            "fail", "the database schema is newer than this code (was a newer release deployed?)", extra
        )
    return CheckResult("fail", "migrations pending; run `a3e migrate`", extra)


def _known(revisions: frozenset[str]) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    script = ScriptDirectory.from_config(alembic_config())
    try:
        return all(script.get_revision(rev) is not None for rev in revisions)
    except CommandError:
        return False


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade to `revision`; concurrent callers on PostgreSQL wait for each other."""
    from alembic import command

    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            connection.commit()
        try:
            command.upgrade(alembic_config(connection), revision)
            connection.commit()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_MIGRATION_LOCK})
                connection.commit()
