"""The matrix (standards × evidence) and the gaps of a workspace's catalog."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from a3e.audit.service import csv_safe
from a3e.core.database import SessionDep
from a3e.core.models import utcnow
from a3e.core.pagination import PageParams, page_params
from a3e.review import matrix as service
from a3e.review.matrix_cache import Computed, matrix_cache
from a3e.workspaces.permissions import Action
from a3e.workspaces.scoping import WorkspaceAccess, require

router = APIRouter(prefix="/api/v1/workspaces/{workspace_id}", tags=["review"])

Reader = Annotated[WorkspaceAccess, require(Action.EVIDENCE_READ)]
Catalog = Annotated[uuid.UUID, Query(description="The workspace catalog's id")]
AsOf = Annotated[
    date | None,
    Query(description="The date evidence must be current on — e.g. the accreditation review's (default: today)"),
]
LowConfidence = Annotated[
    float, Query(ge=0, le=1, description="Accepted suggestions below this confidence count as weak evidence")
]
StaleYears = Annotated[int, Query(ge=1, le=50, description="Evidence older than this many years counts as stale")]


def _matrix(request, session, access, catalog, as_of, low_confidence, stale_years) -> Computed:
    """The catalog's matrix: the one this process computed last if nothing changed since (the
    workspace's review version, read with the caller's access, says), else computed now."""
    day = as_of or utcnow().date()
    key = (access.workspace_id, catalog, day, low_confidence, stale_years)
    return matrix_cache(request).get(
        key, access.workspace.review_version,
        lambda: service.build_matrix(session, access, catalog, as_of=day, low_confidence=low_confidence,
                                     stale_years=stale_years),
    )


def _summary(computed: Computed) -> dict[str, Any]:
    """What the matrix and the gaps both open with: which catalog, on which day, and the counts."""
    return {"catalog_id": computed.matrix.standards.catalog_id, "as_of": computed.matrix.as_of,
            "counts": computed.counts}


@router.get("/matrix", summary="Standards × evidence: per standard its links, documents, pending suggestions and gap status")
def get_matrix(
    request: Request,
    session: SessionDep,
    access: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    catalog: Catalog,
    section: Annotated[str | None, Query(max_length=64, description="Only this top-level standard's part")] = None,
    gap: Annotated[Literal["green", "amber", "red"] | None, Query(description="Only standards with this status")] = None,
    has_pending: Annotated[bool | None, Query(description="Only standards with (or without) pending suggestions")] = None,
    as_of: AsOf = None,
    low_confidence: LowConfidence = service.DEFAULT_LOW_CONFIDENCE,
    stale_years: StaleYears = service.DEFAULT_STALE_YEARS,
) -> dict[str, Any]:
    computed = _matrix(request, session, access, catalog, as_of, low_confidence, stale_years)
    matrix = computed.matrix
    rows = service.filter_rows(matrix.rows, section=section, gap=gap, has_pending=has_pending)
    return {
        **_summary(computed),
        "items": [row.as_dict() for row in rows[page.offset : page.offset + page.limit]],
        "total": len(rows),
        "limit": page.limit,
        "offset": page.offset,
    }


@router.get("/matrix/export", summary="The whole matrix as CSV or XLSX")
def export_matrix(
    request: Request,
    session: SessionDep,
    access: Reader,
    catalog: Catalog,
    format: Annotated[Literal["csv", "xlsx"], Query(description="csv or xlsx")] = "csv",
    as_of: AsOf = None,
    low_confidence: LowConfidence = service.DEFAULT_LOW_CONFIDENCE,
    stale_years: StaleYears = service.DEFAULT_STALE_YEARS,
) -> Response:
    matrix = _matrix(request, session, access, catalog, as_of, low_confidence, stale_years).matrix
    rows = service.export_rows(matrix)
    name = f"matrix-{matrix.as_of.isoformat()}"
    if format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(service.EXPORT_COLUMNS)
        writer.writerows([[csv_safe(value) for value in row] for row in rows])
        return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Matrix")
    sheet.append(list(service.EXPORT_COLUMNS))
    for row in rows:
        # Text that looks like a formula is written as text, never evaluated by the spreadsheet.
        sheet.append([csv_safe(value) if isinstance(value, str) else value for value in row])
    buffer_bytes = io.BytesIO()
    workbook.save(buffer_bytes)
    return Response(
        buffer_bytes.getvalue(),
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'},
    )


@router.get("/matrix/{code:path}/evidence", summary="The passages behind one standard's cell: links and pending suggestions")
def matrix_cell(
    code: Annotated[str, Path(max_length=64)], session: SessionDep, access: Reader, catalog: Catalog
) -> dict[str, Any]:
    return service.cell(session, access, catalog, code)


@router.get("/gaps", summary="Per standard a traffic light with its reasons, the readiness checklist, and counts")
def get_gaps(
    request: Request,
    session: SessionDep,
    access: Reader,
    catalog: Catalog,
    as_of: AsOf = None,
    low_confidence: LowConfidence = service.DEFAULT_LOW_CONFIDENCE,
    stale_years: StaleYears = service.DEFAULT_STALE_YEARS,
) -> dict[str, Any]:
    computed = _matrix(request, session, access, catalog, as_of, low_confidence, stale_years)
    matrix = computed.matrix

    def gaps() -> dict[str, Any]:
        return {
            **_summary(computed),
            "standards": [
                {"code": row.code, "title": row.title, "section": row.section, "gap_status": row.light,
                 "reasons": row.reasons}
                for row in matrix.rows
            ],
            "lint": service.lint(session, access, matrix),
        }

    return matrix_cache(request).extra(computed, "gaps", gaps)
