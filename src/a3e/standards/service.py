"""The catalogs a workspace is reviewed against: select a built-in one, import a custom one, list,
remove, and read a selected catalog's tree. Every change is audited in the same transaction.

Services flush; the request's session commits (see `a3e.core.database.get_session`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from a3e.audit.service import record_event
from a3e.core.errors import AppError, Conflict, NotFound
from a3e.core.models import utcnow
from a3e.core.pagination import PageParams
from a3e.standards.catalogs import Accreditor, Edition, registry
from a3e.standards.models import CatalogSelection, CustomCatalog, CustomStandard
from a3e.standards.validator import CatalogInvalid, ParsedCatalog
from a3e.review.versions import review_changed
from a3e.workspaces.scoping import WorkspaceAccess

if TYPE_CHECKING:
    from starlette.requests import Request

# A workspace is reviewed against a handful of catalogs; this bounds what one workspace can store
# (with at most 5,000 standards in each custom catalog).
MAX_SELECTIONS = 50


class InvalidCatalog(AppError):
    status_code = 422
    code = "invalid_catalog"

    @classmethod
    def from_error(cls, error: CatalogInvalid) -> InvalidCatalog:
        total = len(error.problems) + error.more
        first = error.problems[0] if error.problems else None
        message = f"The catalog has {total} problem{'s' if total != 1 else ''}"
        if first is not None:
            message += f"; first: {first}"
        details: list[dict[str, Any]] = [problem.as_dict() for problem in error.problems]
        if error.more:
            details.append({"location": "file", "message": f"{error.more} more problems not listed"})
        return cls(message, details=details)


# ---- the built-in registry ---------------------------------------------------------------------


def accreditor_or_404(code: str) -> Accreditor:
    accreditor = registry().get(code)
    if accreditor is None:
        known = ", ".join(registry().accreditors)
        raise NotFound(f"No accreditor {code!r}; known accreditors: {known}", details={"accreditor": code})
    return accreditor


def edition_or_404(accreditor: Accreditor, edition: str | None) -> Edition:
    found = accreditor.edition(edition)
    if found is None:
        known = ", ".join(accreditor.editions)
        raise NotFound(
            f"{accreditor.code} has no edition {edition!r}; editions: {known}",
            details={"accreditor": accreditor.code, "edition": edition, "editions": list(accreditor.editions)},
        )
    return found


# ---- views ---------------------------------------------------------------------------------------


@dataclass
class CatalogView:
    selection: CatalogSelection
    custom: CustomCatalog | None
    edition: Edition | None  # None for a custom catalog, or a built-in edition no longer shipped

    def as_dict(self) -> dict[str, Any]:
        selection = self.selection
        base: dict[str, Any] = {
            "id": selection.id,
            "kind": selection.kind,
            "selected_at": selection.created_at,
            "selected_by_id": selection.selected_by_id,
        }
        if self.custom is not None:
            custom = self.custom
            title = f"{custom.name} ({custom.version})" if custom.version else custom.name
            return {
                **base,
                "name": custom.name,
                "title": title,
                "accreditor": None,
                "edition": custom.version or None,
                "standard_count": custom.item_count,
                "max_depth": custom.max_depth,
                "custom_catalog_id": custom.id,
                "description": custom.description,
                "source_format": custom.source_format,
                "source_filename": custom.source_filename,
                "content_sha256": custom.content_sha256,
            }
        accreditor = registry().get(selection.accreditor_code or "")
        edition = self.edition
        return {
            **base,
            "name": accreditor.name if accreditor else selection.accreditor_code or "",
            "title": edition.title if edition else f"{selection.accreditor_code} {selection.edition}",
            "accreditor": selection.accreditor_code,
            "edition": selection.edition,
            "standard_count": edition.standard_count if edition else 0,
            "max_depth": max((n.depth for n in edition.nodes), default=0) if edition else None,
        }


def _builtin_edition(selection: CatalogSelection) -> Edition | None:
    accreditor = registry().get(selection.accreditor_code or "")
    return accreditor.editions.get(selection.edition or "") if accreditor else None


def _views(session: Session, selections: list[CatalogSelection]) -> list[CatalogView]:
    custom_ids = [s.custom_catalog_id for s in selections if s.custom_catalog_id is not None]
    customs = (
        {c.id: c for c in session.scalars(select(CustomCatalog).where(CustomCatalog.id.in_(custom_ids)))}
        if custom_ids
        else {}
    )
    views = []
    for selection in selections:
        if selection.kind == "custom":
            views.append(CatalogView(selection, customs.get(selection.custom_catalog_id), None))
        else:
            views.append(CatalogView(selection, None, _builtin_edition(selection)))
    return views


# ---- reading -------------------------------------------------------------------------------------


def list_catalogs(session: Session, access: WorkspaceAccess, page: PageParams) -> tuple[list[CatalogView], int]:
    statement = access.scoped(select(CatalogSelection), CatalogSelection).order_by(
        CatalogSelection.created_at, CatalogSelection.id
    )
    selections = list(session.scalars(statement.limit(page.limit).offset(page.offset)))
    total = session.scalar(access.scoped(select(func.count()).select_from(CatalogSelection), CatalogSelection)) or 0
    return _views(session, selections), total


def get_catalog(session: Session, access: WorkspaceAccess, catalog_id: uuid.UUID) -> CatalogView:
    selection = session.scalar(
        access.scoped(select(CatalogSelection).where(CatalogSelection.id == catalog_id), CatalogSelection)
    )
    if selection is None:
        raise NotFound("Catalog not found in this workspace", details={"catalog_id": str(catalog_id)})
    return _views(session, [selection])[0]


def custom_tree(session: Session, access: WorkspaceAccess, custom: CustomCatalog) -> list[dict[str, Any]]:
    rows = session.execute(
        access.scoped(
            select(CustomStandard.code, CustomStandard.parent_code, CustomStandard.title, CustomStandard.text)
            .where(CustomStandard.catalog_id == custom.id)
            .order_by(CustomStandard.position),
            CustomStandard,
        )
    ).all()
    edition = custom.version or None
    nodes: dict[str, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for code, parent, title, text in rows:
        node = {
            "code": code,
            "parent": parent,
            "title": title,
            "kind": None,
            "description": text,
            "typical_evidence": [],
            "edition": edition,
            "children": [],
        }
        nodes[code] = node
    for node in nodes.values():  # dicts keep insertion (position) order
        parent = nodes.get(node["parent"]) if node["parent"] is not None else None
        (parent["children"] if parent is not None else roots).append(node)
    return roots


# ---- changes -------------------------------------------------------------------------------------


def _check_room(session: Session, access: WorkspaceAccess) -> None:
    count = session.scalar(access.scoped(select(func.count()).select_from(CatalogSelection), CatalogSelection)) or 0
    if count >= MAX_SELECTIONS:
        raise Conflict(
            f"A workspace selects at most {MAX_SELECTIONS} catalogs; remove one first",
            code="too_many_catalogs",
            details={"limit": MAX_SELECTIONS},
        )


def _existing_builtin(session: Session, access: WorkspaceAccess, code: str, edition: str) -> CatalogSelection | None:
    return session.scalar(
        access.scoped(
            select(CatalogSelection).where(
                CatalogSelection.kind == "builtin",
                CatalogSelection.accreditor_code == code,
                CatalogSelection.edition == edition,
            ),
            CatalogSelection,
        )
    )


def select_builtin(
    session: Session,
    access: WorkspaceAccess,
    accreditor_code: str,
    edition_name: str | None,
    *,
    request: Request | None = None,
) -> tuple[CatalogView, bool]:
    """Select an accreditor's edition (its default when none is named). Selecting it again is the
    same as once: (view, False)."""
    accreditor = accreditor_or_404(accreditor_code)
    edition = edition_or_404(accreditor, edition_name)
    existing = _existing_builtin(session, access, accreditor.code, edition.edition)
    if existing is not None:
        return CatalogView(existing, None, edition), False
    _check_room(session, access)
    selection = CatalogSelection(
        id=uuid.uuid4(),
        workspace_id=access.workspace_id,
        kind="builtin",
        accreditor_code=accreditor.code,
        edition=edition.edition,
        selected_by_id=access.principal.user.id if access.principal.user else None,
        created_at=utcnow(),
    )
    try:
        with session.begin_nested():
            session.add(selection)
            session.flush()
    except IntegrityError:  # selected at the same moment by someone else
        existing = _existing_builtin(session, access, accreditor.code, edition.edition)
        if existing is None:
            raise
        return CatalogView(existing, None, edition), False
    record_event(
        session,
        "catalog.selected",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="catalog",
        target_id=selection.id,
        details={"kind": "builtin", "accreditor": accreditor.code, "edition": edition.edition},
    )
    session.flush()
    _map_after_commit(session, request, selection)
    return CatalogView(selection, None, edition), True


def content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def items_digest(items: Any) -> str:
    canonical = json.dumps(items, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return content_digest(canonical.encode("utf-8"))


def import_custom(
    session: Session,
    access: WorkspaceAccess,
    parsed: ParsedCatalog,
    *,
    name: str,
    version: str | None,
    description: str | None,
    source_format: str,
    source_filename: str | None,
    sha256: str,
    request: Request | None = None,
) -> CatalogView:
    """Store a validated custom catalog and select it for the workspace."""
    version = (version or "").strip()
    name = name.strip()
    duplicate = session.scalar(
        access.scoped(
            select(CustomCatalog.id).where(CustomCatalog.name == name, CustomCatalog.version == version), CustomCatalog
        )
    )
    if duplicate is not None:
        raise _name_taken(name, version)
    _check_room(session, access)
    user_id = access.principal.user.id if access.principal.user else None
    now = utcnow()
    custom = CustomCatalog(
        id=uuid.uuid4(),
        workspace_id=access.workspace_id,
        name=name,
        version=version,
        description=description,
        source_format=source_format,
        source_filename=(source_filename or None) and source_filename[-255:],
        content_sha256=sha256,
        item_count=len(parsed.items),
        max_depth=parsed.depth,
        created_by_id=user_id,
        created_at=now,
        updated_at=now,
    )
    selection = CatalogSelection(
        id=uuid.uuid4(),
        workspace_id=access.workspace_id,
        kind="custom",
        custom_catalog_id=custom.id,
        selected_by_id=user_id,
        created_at=now,
    )
    depth: dict[str, int] = {}
    rows = []
    for position, item in enumerate(_parents_first(parsed)):
        depth[item.code] = 1 if item.parent is None else depth[item.parent] + 1
        rows.append(
            {
                "catalog_id": custom.id,
                "workspace_id": access.workspace_id,
                "code": item.code,
                "parent_code": item.parent,
                "title": item.title,
                "text": item.text,
                "position": position,
                "depth": depth[item.code],
            }
        )
    try:
        with session.begin_nested():
            session.add(custom)
            session.flush()
            session.execute(insert(CustomStandard), rows)
            session.add(selection)
            session.flush()
    except IntegrityError:  # the same name imported at the same moment
        raise _name_taken(name, version) from None
    record_event(
        session,
        "catalog.imported",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="catalog",
        target_id=selection.id,
        details={
            "kind": "custom",
            "custom_catalog_id": custom.id,
            "name": name,
            "version": version or None,
            "format": source_format,
            "filename": custom.source_filename,
            "items": custom.item_count,
            "sha256": sha256,
        },
    )
    session.flush()
    _map_after_commit(session, request, selection)
    return CatalogView(selection, custom, None)


def _map_after_commit(session: Session, request: Request | None, selection: CatalogSelection) -> None:
    """A newly selected catalog: the workspace's documents are mapped against it in the background."""
    jobs = getattr(request.app.state, "jobs", None) if request is not None else None
    if jobs is not None:
        jobs.enqueue_after_commit(session, "mapping.map_selection", str(selection.id))


def _parents_first(parsed: ParsedCatalog) -> list[Any]:
    """The items in file order, except that a parent listed after its children moves before them
    (siblings keep their order)."""
    children: dict[str | None, list[Any]] = {}
    for item in parsed.items:
        children.setdefault(item.parent, []).append(item)
    ordered: list[Any] = []
    stack = list(reversed(children.get(None, [])))
    while stack:
        item = stack.pop()
        ordered.append(item)
        stack.extend(reversed(children.get(item.code, [])))
    return ordered


def _name_taken(name: str, version: str) -> Conflict:
    what = f"{name!r} version {version!r}" if version else repr(name)
    return Conflict(
        f"This workspace already has a catalog named {what}; give another name or version",
        code="catalog_exists",
        details={"name": name, "version": version or None},
    )


def remove_catalog(session: Session, access: WorkspaceAccess, catalog_id: uuid.UUID, *, request: Request | None = None) -> None:
    """Deselect a catalog. A custom catalog exists only for its workspace: it is deleted with its
    standards (the audit record keeps its name, size and digest)."""
    view = get_catalog(session, access, catalog_id)
    selection, custom = view.selection, view.custom
    details: dict[str, Any] = {"kind": selection.kind}
    if custom is not None:
        details.update(
            custom_catalog_id=custom.id,
            name=custom.name,
            version=custom.version or None,
            items=custom.item_count,
            sha256=custom.content_sha256,
        )
    else:
        details.update(accreditor=selection.accreditor_code, edition=selection.edition)
    session.execute(delete(CatalogSelection).where(CatalogSelection.id == selection.id, CatalogSelection.workspace_id == access.workspace_id))
    review_changed(session, access.workspace_id)
    if custom is not None:
        session.execute(delete(CustomStandard).where(CustomStandard.catalog_id == custom.id, CustomStandard.workspace_id == access.workspace_id))
        session.execute(delete(CustomCatalog).where(CustomCatalog.id == custom.id, CustomCatalog.workspace_id == access.workspace_id))
    session.expunge(selection)
    if custom is not None:
        session.expunge(custom)
    record_event(
        session,
        "catalog.removed",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="catalog",
        target_id=selection.id,
        details=details,
    )
    session.flush()
