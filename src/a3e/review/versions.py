"""The workspace's review version: bumped by every committed change that the matrix and the gaps
are computed from, so that a computed matrix can be reused for as long as the version stands.

What counts: documents (their dates, deletion), links, suggestions, standard statuses, and the
catalogs the workspace selected or imported. Passages do not (the matrix counts links and
suggestions), but deleting them deletes their links and suggestions in the database, so code that
deletes passages, or changes these tables with a bulk statement, says so with `review_changed`.

How: ORM changes to those tables are noticed at each flush (a bulk statement on one of them,
which names no workspace the ORM could see, is logged as a warning at commit unless the code
marked its workspace); just before the transaction commits,
one UPDATE adds 1 to the version of every workspace touched. Being the last statement, the row
lock it takes is held only for the commit itself. A rolled-back transaction bumps nothing.

The version is read with the caller's access (it is a column of the workspace row that
`require()` already selects), so checking it costs no extra query.
"""

from __future__ import annotations

import logging
import uuid
from itertools import chain
from typing import Any

from sqlalchemy import event, update
from sqlalchemy.orm import Session

REVIEW_TABLES = frozenset({
    "documents", "evidence_links", "suggestions", "standard_statuses",
    "catalog_selections", "custom_catalogs", "custom_standards",
})
_CHANGED = "a3e.review.changed_workspaces"
_UNMARKED_BULK = "a3e.review.bulk_statements"

logger = logging.getLogger("a3e.review")


def review_changed(session: Session, workspace_id: uuid.UUID) -> None:
    """Bump `workspace_id`'s review version when `session` commits (for bulk statements and
    database-side cascades, which the ORM does not see)."""
    session.info.setdefault(_CHANGED, set()).add(workspace_id)


@event.listens_for(Session, "after_flush")
def _note_changes(session: Session, _flush_context: Any) -> None:
    for instance in chain(session.new, session.dirty, session.deleted):
        if getattr(instance, "__tablename__", None) in REVIEW_TABLES:
            workspace_id = getattr(instance, "workspace_id", None)
            if workspace_id is not None:
                review_changed(session, workspace_id)


@event.listens_for(Session, "do_orm_execute")
def _note_bulk_statements(state: Any) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        mapper = state.bind_mapper
        table = getattr(mapper, "local_table", None) if mapper is not None else None
        if table is not None and table.name in REVIEW_TABLES:
            state.session.info.setdefault(_UNMARKED_BULK, set()).add(table.name)


@event.listens_for(Session, "before_commit")
def _bump_versions(session: Session) -> None:
    session.flush()  # what is still pending is noted too
    changed = session.info.pop(_CHANGED, None)
    bulk = session.info.pop(_UNMARKED_BULK, None)
    if bulk and not changed:
        logger.warning(
            "a bulk change to %s was committed without review_changed(): a matrix computed before "
            "it may be reused until the workspace's next change", ", ".join(sorted(bulk)),
        )
    if changed:
        from a3e.workspaces.models import Workspace

        session.execute(
            update(Workspace)
            .where(Workspace.id.in_(sorted(changed)))
            # updated_at stays: it tells when the workspace itself (its name) last changed.
            .values(review_version=Workspace.review_version + 1, updated_at=Workspace.updated_at)
            .execution_options(synchronize_session=False)
        )


@event.listens_for(Session, "after_soft_rollback")
def _forget_changes(session: Session, previous_transaction: Any) -> None:
    # A savepoint rolled back leaves the outer transaction's changes standing: keep the marks
    # (at worst one needless bump).
    if not getattr(previous_transaction, "nested", False):
        session.info.pop(_CHANGED, None)
        session.info.pop(_UNMARKED_BULK, None)
