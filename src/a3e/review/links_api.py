"""Suggestions and evidence links: list, accept, reject, link by hand, unlink."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response

from a3e.core.database import SessionDep
from a3e.core.pagination import Page, PageParams, page_params
from a3e.review import links as service
from a3e.review.models import SuggestionStatus
from a3e.review.schemas import LinkCreate, LinkOut, RejectBody, SuggestionOut
from a3e.workspaces.permissions import Action
from a3e.workspaces.scoping import WorkspaceAccess, require

router = APIRouter(prefix="/api/v1/workspaces/{workspace_id}", tags=["review"])

Paging = Annotated[PageParams, Depends(page_params)]
Reader = Annotated[WorkspaceAccess, require(Action.EVIDENCE_READ)]
Reviewer = Annotated[WorkspaceAccess, require(Action.LINKS_REVIEW)]
SuggestionId = Annotated[int, Path(ge=1, description="The suggestion's id")]
Catalog = Annotated[uuid.UUID | None, Query(description="Only this workspace catalog's")]
Standard = Annotated[str | None, Query(max_length=64, description="Only this standard's (its code)")]
DocumentFilter = Annotated[uuid.UUID | None, Query(description="Only this document's")]


@router.get("/suggestions", summary="The engine's suggestions, most confident first, each with its passage")
def list_suggestions(
    session: SessionDep, access: Reader, page: Paging, catalog: Catalog = None, standard: Standard = None,
    document_id: DocumentFilter = None,
    status: Annotated[SuggestionStatus | None, Query(description="pending, accepted or rejected")] = None,
) -> Page[SuggestionOut]:
    items, total = service.list_suggestions(session, access, page, catalog=catalog, standard=standard,
                                            document_id=document_id, status=status)
    return Page(items=items, total=total, **page.model_dump())


@router.post("/suggestions/{suggestion_id}/accept", summary="Accept a suggestion: its passage becomes a link")
def accept_suggestion(suggestion_id: SuggestionId, request: Request, session: SessionDep, access: Reviewer) -> SuggestionOut:
    service.accept(session, access, suggestion_id, request=request)
    return service.suggestion_out(session, access, suggestion_id)


@router.post("/suggestions/{suggestion_id}/reject", summary="Reject a suggestion (with an optional reason); it never comes back")
def reject_suggestion(
    suggestion_id: SuggestionId, request: Request, session: SessionDep, access: Reviewer,
    body: Annotated[RejectBody | None, Body()] = None,
) -> SuggestionOut:
    service.reject(session, access, suggestion_id, body.reason if body else None, request=request)
    return service.suggestion_out(session, access, suggestion_id)


@router.get("/links", summary="Evidence linked to standards")
def list_links(
    session: SessionDep, access: Reader, page: Paging, catalog: Catalog = None, standard: Standard = None,
    document_id: DocumentFilter = None,
) -> Page[LinkOut]:
    items, total = service.list_links(session, access, page, catalog=catalog, standard=standard, document_id=document_id)
    return Page(items=items, total=total, **page.model_dump())


@router.post("/links", status_code=201, summary="Link a passage, or a whole document, to a standard by hand")
def add_link(body: LinkCreate, request: Request, session: SessionDep, access: Reviewer) -> LinkOut:
    return service.link_out(service.add_link(session, access, body, request=request))


@router.delete("/links/{link_id}", status_code=204, response_class=Response, summary="Remove a link")
def remove_link(
    link_id: Annotated[uuid.UUID, Path(description="The link's id")], request: Request, session: SessionDep,
    access: Reviewer,
) -> Response:
    service.remove_link(session, access, link_id, request=request)
    return Response(status_code=204)


@router.get("/mapping", summary="Mapping progress: processed documents × selected catalogs, runs done, pending suggestions")
def mapping_progress(session: SessionDep, access: Reader) -> dict:
    from a3e.review.mapping import progress

    return progress(session, access.workspace_id)
