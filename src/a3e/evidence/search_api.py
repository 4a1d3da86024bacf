"""Full-text search over a workspace's passages: `GET /api/v1/workspaces/{workspace_id}/search?q=`.

Anyone who may read the workspace's evidence (`Action.EVIDENCE_READ`: every member, and API keys
of either scope) may search it. The query language and both backends are described in
`a3e.evidence.search`.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from a3e.core.database import SessionDep
from a3e.core.pagination import PageParams, page_params
from a3e.evidence.search import MAX_QUERY_LENGTH, SearchFilters, SearchHit, parse_query, search_passages
from a3e.workspaces.permissions import Action
from a3e.workspaces.scoping import WorkspaceAccess, require

router = APIRouter(prefix="/api/v1", tags=["search"])

MAX_DOCUMENT_FILTERS = 100
MAX_TAG_FILTERS = 10

_ACCESS_ERRORS = {
    401: {"description": "Missing, expired or invalid credentials"},
    404: {"description": "No such workspace, or the caller is not a member"},
}


class SearchHitOut(BaseModel):
    passage_id: int
    document_id: uuid.UUID
    document_title: str
    revision_id: uuid.UUID
    revision_number: int
    current_revision: bool = Field(description="Whether the passage belongs to its document's current revision")
    page: int | None = Field(description="1-based page of the passage, where the format has pages")
    location: str | None = Field(description="Where in the document, in words (sheet, section, …)")
    heading: str | None
    char_start: int = Field(description="Offset of the passage in its revision's extracted text")
    char_end: int
    snippet: str = Field(
        description=(
            "HTML: an excerpt of the passage's text, HTML-escaped, with matched words wrapped in "
            "<mark>…</mark> and no other markup; safe to insert into a page as HTML"
        )
    )
    score: float = Field(
        description=(
            "Relevance, higher is better: the backend's raw score (PostgreSQL ts_rank_cd, SQLite "
            "bm25), not normalized; compare scores only within one search"
        )
    )

    @classmethod
    def of(cls, hit: SearchHit) -> SearchHitOut:
        return cls(**hit.__dict__)


class SearchPage(BaseModel):
    items: list[SearchHitOut]
    total: int = Field(description="How many passages match in all")
    limit: int
    offset: int


def _invalid(parameter: str, message: str, error_type: str = "value_error") -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", parameter), "msg": message, "type": error_type}])


@router.get(
    "/workspaces/{workspace_id}/search",
    response_model=SearchPage,
    responses=_ACCESS_ERRORS,
    summary="Search the workspace's passages (full text, ranked, with highlighted snippets)",
)
def search(
    response: Response,
    session: SessionDep,
    access: Annotated[WorkspaceAccess, require(Action.EVIDENCE_READ)],
    q: Annotated[
        str,
        Query(
            max_length=MAX_QUERY_LENGTH,
            description=(
                'Words to find (all of them; stemmed, so "accredit" finds "accreditation"); '
                '"a quoted phrase"; -word or -"a phrase" to exclude; `or` between two items for either'
            ),
        ),
    ],
    pagination: Annotated[PageParams, Depends(page_params)],
    document_id: Annotated[
        list[uuid.UUID] | None, Query(description="Only these documents (repeat for several)")
    ] = None,
    tag: Annotated[
        list[str] | None, Query(description="Only documents with this tag (repeat: with every one of them)")
    ] = None,
    date_from: Annotated[date | None, Query(description="Only documents dated on or after this day")] = None,
    date_to: Annotated[date | None, Query(description="Only documents dated on or before this day")] = None,
    revision: Annotated[
        Literal["current", "all"],
        Query(description="`current`: each document's current revision only; `all`: earlier revisions too"),
    ] = "current",
) -> SearchPage:
    if not q.strip():
        raise _invalid("q", "must contain something to search for", "missing")
    if document_id is not None and len(document_id) > MAX_DOCUMENT_FILTERS:
        raise _invalid("document_id", f"at most {MAX_DOCUMENT_FILTERS} documents")
    tags = tuple(dict.fromkeys(t.strip() for t in tag or () if t.strip()))
    if len(tags) > MAX_TAG_FILTERS:
        raise _invalid("tag", f"at most {MAX_TAG_FILTERS} tags")
    if date_from is not None and date_to is not None and date_from > date_to:
        raise _invalid("date_to", "must not be before date_from")
    filters = SearchFilters(
        document_ids=tuple(dict.fromkeys(document_id or ())),
        tags=tags,
        date_from=date_from,
        date_to=date_to,
        all_revisions=revision == "all",
    )
    results = search_passages(
        session, access.workspace_id, parse_query(q), filters, limit=pagination.limit, offset=pagination.offset
    )
    # Tenant data: never kept by a shared cache.
    response.headers["Cache-Control"] = "private, no-store"
    return SearchPage(
        items=[SearchHitOut.of(hit) for hit in results.hits],
        total=results.total,
        limit=pagination.limit,
        offset=pagination.offset,
    )
