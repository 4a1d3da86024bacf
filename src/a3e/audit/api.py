"""The audit log of a workspace, for its owners and admins (`Action.AUDIT_READ`).

- `GET /api/v1/workspaces/{workspace_id}/audit-log`: newest first, filtered, paginated by an
  opaque keyset cursor; `total` only when asked for (`include_total=true`: a count over the same
  filters, which costs a scan of the workspace's matching events).
- `GET /api/v1/workspaces/{workspace_id}/audit-log/export`: the same filters, every matching event
  as CSV, streamed in chunks; the export is itself recorded (`audit_log.exported`).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse

from a3e.audit.schemas import AuditEventOut, AuditLogPage
from a3e.audit.service import ACTION_FILTER, AuditFilters, CsvExport, InvalidCursor, list_events, record_event
from a3e.core.database import SessionDep
from a3e.core.pagination import MAX_LIMIT
from a3e.workspaces.permissions import Action
from a3e.workspaces.scoping import WorkspaceAccess, require

logger = logging.getLogger("a3e.audit")

router = APIRouter(prefix="/api/v1", tags=["audit"])

_NO_STORE = {"Cache-Control": "no-store"}
_ACCESS_ERRORS = {
    401: {"description": "Missing, expired or invalid access token"},
    403: {"description": "Editors, viewers and API keys do not read the audit log"},
    404: {"description": "No such workspace, or the caller is not a member"},
}


def _invalid(parameter: str, message: str, error_type: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", parameter), "msg": message, "type": error_type}])


def parse_timestamp(parameter: str, value: str | None) -> datetime | None:
    """An ISO 8601 date or datetime; without an offset it is UTC. A `+` of an offset that arrived
    unencoded (and so as a space) is taken back."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    candidates = [text]
    if re.search(r" \d{2}(:?\d{2})?$", text):
        head, _, tail = text.rpartition(" ")
        candidates.append(f"{head}+{tail}")
    for candidate in candidates:
        try:
            parsed = datetime.fromisoformat(candidate.replace("z", "Z"))
        except ValueError:
            continue
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise _invalid(parameter, "must be an ISO 8601 date or datetime, e.g. 2026-01-31T09:00:00Z", "datetime_parsing")


def audit_filters(
    action: Annotated[
        str | None,
        Query(
            max_length=65,
            pattern=ACTION_FILTER.pattern,
            description="An action (`member.role_changed`), or every action under a prefix: `member.*`",
        ),
    ] = None,
    actor_user_id: Annotated[uuid.UUID | None, Query(description="Events by this person")] = None,
    target_type: Annotated[str | None, Query(max_length=32, description="e.g. workspace, member, api_key")] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[
        str | None, Query(description="From this moment on, inclusive (ISO 8601; without an offset, UTC)")
    ] = None,
    until: Annotated[
        str | None, Query(description="Before this moment, exclusive (ISO 8601; without an offset, UTC)")
    ] = None,
) -> AuditFilters:
    start, end = parse_timestamp("since", since), parse_timestamp("until", until)
    if start is not None and end is not None and start > end:
        raise _invalid("until", "must not be before since", "value_error")
    return AuditFilters(
        action=action or None,
        actor_user_id=actor_user_id,
        target_type=target_type,
        target_id=target_id,
        since=start,
        until=end,
    )


FiltersDep = Annotated[AuditFilters, Depends(audit_filters)]


@router.get(
    "/workspaces/{workspace_id}/audit-log",
    response_model=AuditLogPage,
    responses=_ACCESS_ERRORS,
    summary="The workspace's audit log, newest first",
)
def read_audit_log(
    response: Response,
    session: SessionDep,
    access: Annotated[WorkspaceAccess, require(Action.AUDIT_READ)],
    filters: FiltersDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="How many events at most")] = 50,
    cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page")] = None,
    include_total: Annotated[bool, Query(description="Also count every matching event (slower)")] = False,
) -> AuditLogPage:
    try:
        page = list_events(
            session, access.workspace_id, filters, limit=limit, cursor=cursor or None, include_total=include_total
        )
    except InvalidCursor as exc:
        raise _invalid("cursor", str(exc), "value_error") from None
    response.headers.update(_NO_STORE)
    return AuditLogPage(
        items=[AuditEventOut.of(event) for event in page.items], next_cursor=page.next_cursor, total=page.total
    )


@router.get(
    "/workspaces/{workspace_id}/audit-log/export",
    summary="The workspace's audit log as CSV (same filters), newest first",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "A CSV file with a header row"}, **_ACCESS_ERRORS},
)
def export_audit_log(
    request: Request,
    session: SessionDep,
    access: Annotated[WorkspaceAccess, require(Action.AUDIT_READ)],
    filters: FiltersDep,
) -> StreamingResponse:
    event = record_event(
        session,
        "audit_log.exported",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="workspace",
        target_id=access.workspace_id,
        details={"format": "csv", "filters": filters.as_details()},
    )
    session.flush()
    # Committed before the first byte leaves: the record of the export exists whatever happens to
    # the download, and no write transaction stays open (on SQLite, the one write lock) meanwhile.
    session.commit()
    export = CsvExport(request.app.state.database, access.workspace_id, filters, below_id=event.id)
    filename = f"audit-log-{access.workspace_id}-{datetime.now(UTC):%Y-%m-%d}.csv"
    return StreamingResponse(
        _logged(export),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **_NO_STORE},
    )


def _logged(export: CsvExport) -> Iterator[bytes]:
    """The export's chunks; a failure midway is logged and breaks the connection, so that the
    client never takes a truncated file for a complete one."""
    try:
        yield from export
    except Exception:
        logger.exception(
            "audit log export of workspace %s failed after %d rows", export.workspace_id, export.rows_written
        )
        raise
