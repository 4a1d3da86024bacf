"""Standard statuses: reading them for a catalog, and changing one (audited).

Editors move the work along (not started, in progress, in review); admins and owners judge
compliance and approve, or reopen approved work. A standard is named by its code; when the
workspace has selected several catalogs that share a code, the catalog must be given.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from a3e.audit.service import record_event
from a3e.core.errors import AppError, Conflict, NotFound
from a3e.core.models import utcnow
from a3e.review.models import Judgment, StandardStatus, Workflow
from a3e.review.schemas import StandardStatusOut, StatusChange
from a3e.standards.models import CatalogSelection, CustomStandard
from a3e.standards.service import CatalogView, get_catalog
from a3e.webhooks import events as webhook_events
from a3e.webhooks.publish import publish
from a3e.workspaces.permissions import Action
from a3e.workspaces.scoping import WorkspaceAccess


@dataclass(frozen=True)
class CatalogStandards:
    view: CatalogView
    titles: dict[str, str]  # code → title, in catalog order
    parents: dict[str, str | None]  # code → its parent's code

    @property
    def catalog_id(self) -> uuid.UUID:
        return self.view.selection.id

    def section_of(self, code: str) -> str:
        """The top-level standard `code` falls under (itself, for a top-level one)."""
        seen = 0
        while (parent := self.parents.get(code)) is not None and seen < 64:
            code, seen = parent, seen + 1
        return code


def catalog_standards(session: Session, view: CatalogView) -> CatalogStandards:
    if view.custom is not None:
        rows = session.execute(
            select(CustomStandard.code, CustomStandard.title, CustomStandard.parent_code)
            .where(CustomStandard.catalog_id == view.custom.id)
            .order_by(CustomStandard.position)
        ).all()
        return CatalogStandards(view, {code: title for code, title, _ in rows}, {code: parent for code, _, parent in rows})
    nodes = view.edition.nodes if view.edition is not None else []
    return CatalogStandards(view, {node.code: node.title for node in nodes}, {node.code: node.parent for node in nodes})


def _selections(session: Session, access: WorkspaceAccess) -> list[uuid.UUID]:
    return list(
        session.scalars(
            access.scoped(select(CatalogSelection.id), CatalogSelection).order_by(CatalogSelection.created_at)
        )
    )


def resolve(session: Session, access: WorkspaceAccess, code: str, catalog_id: uuid.UUID | None) -> CatalogStandards:
    """The catalog holding standard `code`: the one given, or the only selected one that has it."""
    if catalog_id is not None:
        standards = catalog_standards(session, get_catalog(session, access, catalog_id))
        if code not in standards.titles:
            raise NotFound(f"No standard {code!r} in this catalog", code="standard_not_found")
        return standards
    holding = [
        standards
        for standards in (catalog_standards(session, get_catalog(session, access, sid)) for sid in _selections(session, access))
        if code in standards.titles
    ]
    if not holding:
        raise NotFound(f"No standard {code!r} in the workspace's catalogs", code="standard_not_found")
    if len(holding) > 1:
        raise Conflict(
            f"Standard {code!r} is in {len(holding)} of the workspace's catalogs; say which with ?catalog=<catalog id>",
            code="ambiguous_standard",
            details={"catalogs": [str(standards.catalog_id) for standards in holding]},
        )
    return holding[0]


def _out(standards: CatalogStandards, code: str, row: StandardStatus | None) -> StandardStatusOut:
    return StandardStatusOut(
        catalog_id=standards.catalog_id,
        code=code,
        title=standards.titles[code],
        workflow=Workflow(row.workflow) if row else Workflow.NOT_STARTED,
        judgment=Judgment(row.judgment) if row else Judgment.NOT_ASSESSED,
        note=row.note if row else None,
        updated_by_id=row.updated_by_id if row else None,
        updated_at=row.updated_at if row else None,
    )


def _row(session: Session, standards: CatalogStandards, code: str, *, lock: bool = False) -> StandardStatus | None:
    statement = select(StandardStatus).where(
        StandardStatus.selection_id == standards.catalog_id, StandardStatus.standard_code == code
    )
    return session.scalar(statement.with_for_update() if lock else statement)


def get_status(session: Session, access: WorkspaceAccess, code: str, catalog_id: uuid.UUID | None) -> StandardStatusOut:
    standards = resolve(session, access, code, catalog_id)
    return _out(standards, code, _row(session, standards, code))


def list_statuses(session: Session, access: WorkspaceAccess, catalog_id: uuid.UUID) -> list[StandardStatusOut]:
    standards = catalog_standards(session, get_catalog(session, access, catalog_id))
    rows = {
        row.standard_code: row
        for row in session.scalars(select(StandardStatus).where(StandardStatus.selection_id == standards.catalog_id))
    }
    return [_out(standards, code, rows.get(code)) for code in standards.titles]


def set_status(
    session: Session,
    access: WorkspaceAccess,
    code: str,
    catalog_id: uuid.UUID | None,
    change: StatusChange,
    *,
    request: Request | None = None,
) -> StandardStatusOut:
    access.require(Action.STANDARDS_STATUS)
    given = change.model_dump(exclude_unset=True)
    if not given:
        raise AppError("Send workflow, judgment or note", status_code=422, code="nothing_to_change")
    standards = resolve(session, access, code, catalog_id)
    row = _row(session, standards, code, lock=True)
    before = {
        "workflow": row.workflow if row else Workflow.NOT_STARTED.value,
        "judgment": row.judgment if row else Judgment.NOT_ASSESSED.value,
        "note": row.note if row else None,
    }
    after = dict(before)
    if "workflow" in given and given["workflow"] is not None:
        after["workflow"] = Workflow(given["workflow"]).value
    if "judgment" in given and given["judgment"] is not None:
        after["judgment"] = Judgment(given["judgment"]).value
    if "note" in given:
        after["note"] = given["note"] or None
    approving = Workflow.APPROVED.value in (before["workflow"], after["workflow"]) and before["workflow"] != after["workflow"]
    if after["judgment"] != before["judgment"] or approving:
        # Judging compliance, approving, and reopening approved work are the liaison's calls.
        access.require(Action.STANDARDS_JUDGE)
    changed = {key: {"from": before[key], "to": after[key]} for key in after if after[key] != before[key]}
    if changed:
        if row is None:
            row = StandardStatus(workspace_id=access.workspace_id, selection_id=standards.catalog_id, standard_code=code)
            session.add(row)
        row.workflow, row.judgment, row.note = after["workflow"], after["judgment"], after["note"]
        row.updated_by_id = access.principal.user.id if access.principal.user else None
        row.updated_at = utcnow()
        session.flush()
        record_event(
            session,
            "standard.status_changed",
            request=request,
            principal=access.principal,
            workspace_id=access.workspace_id,
            target_type="standard",
            target_id=code,
            details={"catalog_id": str(standards.catalog_id), "title": standards.titles[code], "changes": changed},
        )
        publish(session, access.workspace_id, "standard.status_changed",
                lambda: webhook_events.standard_status_changed(row, standards.titles[code], changed))
    return _out(standards, code, row)
