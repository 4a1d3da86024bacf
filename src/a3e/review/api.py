"""Standard statuses: `GET|PATCH /api/v1/workspaces/{id}/standards/{code}/status` and the list of a
catalog's statuses."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from a3e.core.database import SessionDep
from a3e.review import service
from a3e.review.schemas import StandardStatusOut, StatusChange
from a3e.workspaces.permissions import Action
from a3e.workspaces.scoping import WorkspaceAccess, require

router = APIRouter(prefix="/api/v1/workspaces/{workspace_id}/standards", tags=["review"])

Reader = Annotated[WorkspaceAccess, require(Action.WORKSPACE_READ)]
Editor = Annotated[WorkspaceAccess, require(Action.STANDARDS_STATUS)]
Code = Annotated[str, Path(max_length=64, description="The standard's code, as its catalog numbers it (e.g. 8.2.a)")]
CatalogParam = Annotated[
    uuid.UUID | None,
    Query(alias="catalog", description="The workspace catalog's id; needed only when several selected catalogs share the code"),
]


@router.get("/statuses", summary="Every standard of a catalog with its workflow status and judgment")
def list_statuses(
    session: SessionDep, access: Reader, catalog: Annotated[uuid.UUID, Query(description="The workspace catalog's id")]
) -> list[StandardStatusOut]:
    return service.list_statuses(session, access, catalog)


@router.get("/{code:path}/status", summary="A standard's workflow status and judgment")
def get_status(code: Code, session: SessionDep, access: Reader, catalog: CatalogParam = None) -> StandardStatusOut:
    return service.get_status(session, access, code, catalog)


@router.patch(
    "/{code:path}/status",
    summary="Change a standard's workflow status, judgment or note (editors move work; admins judge and approve)",
)
def set_status(
    code: Code, body: StatusChange, request: Request, session: SessionDep, access: Editor, catalog: CatalogParam = None
) -> StandardStatusOut:
    return service.set_status(session, access, code, catalog, body, request=request)
