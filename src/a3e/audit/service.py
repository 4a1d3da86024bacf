"""Recording and reading audit events.

Call `record_event` inside the request's transaction, so that the record and the change it
describes are committed together, or not at all. Reading is for workspace owners and admins
(`Action.AUDIT_READ`): newest first, keyset pagination on the id, CSV export streamed in chunks.
"""

from __future__ import annotations

import base64
import binascii
import csv
import enum
import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from a3e.audit.models import AuditEvent

if TYPE_CHECKING:
    from starlette.requests import Request

    from a3e.auth.principal import Principal
    from a3e.core.database import Database

# Keys whose values never enter an audit record, whoever passes them (at any depth of `details`).
_SECRET_KEYS = ("password", "token", "secret", "key_hash", "api_key", "authorization", "cookie")
REDACTED = "[redacted]"
_MAX_DEPTH = 5

# Column sizes of audit_events: longer free text is cut rather than failing the transaction
# (PostgreSQL refuses an over-long value; a failed login must not turn into a 500).
_LIMITS = {"actor_label": 320, "target_type": 32, "target_id": 64, "client_ip": 64, "request_id": 128}
MAX_ACTION_LENGTH = 64


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of `value`: UUIDs, datetimes, enums, sets and decimals converted, secret
    keys dropped at every depth."""
    if isinstance(value, dict):
        if depth >= _MAX_DEPTH:
            return REDACTED
        return {
            str(k): _jsonable(v, depth + 1)
            for k, v in value.items()
            if not any(word in str(k).lower() for word in _SECRET_KEYS)
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        if depth >= _MAX_DEPTH:
            return REDACTED
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(item, depth + 1) for item in items]
    if isinstance(value, enum.Enum):
        return _jsonable(value.value, depth)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)  # UUID, Decimal, Path, …


def _clean(details: dict[str, Any] | None) -> dict[str, Any] | None:
    if not details:
        return None
    return _jsonable(details) or None


def _cut(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    return value[: _LIMITS[name]]


def record_event(
    session: Session,
    action: str,
    *,
    request: Request | None = None,
    principal: Principal | None = None,
    workspace_id: uuid.UUID | None = None,
    target_type: str | None = None,
    target_id: Any = None,
    details: dict[str, Any] | None = None,
    actor_user_id: uuid.UUID | None = None,
    actor_label: str | None = None,
) -> AuditEvent:
    """Append one event. The actor comes from `principal`, or from `actor_*` when there is no
    authenticated principal yet (e.g. a failed login names the email that was tried).

    `details` is stored as JSON: keys that look like secrets (password, token, secret, api_key, …)
    are dropped at any depth; UUIDs, datetimes and enums become strings."""
    from a3e.core.clientip import client_ip

    if not action or len(action) > MAX_ACTION_LENGTH:
        raise ValueError(f"an audit action is 1 to {MAX_ACTION_LENGTH} characters: {action!r}")
    api_key_id = None
    if principal is not None:
        if principal.user is not None:
            actor_user_id, actor_label = principal.user.id, principal.user.email
        if principal.api_key is not None:
            api_key_id, actor_label = principal.api_key.id, f"api key {principal.api_key.name} ({principal.api_key.prefix}…)"
    event = AuditEvent(
        action=action,
        workspace_id=workspace_id,
        actor_user_id=actor_user_id,
        actor_api_key_id=api_key_id,
        actor_label=_cut("actor_label", actor_label),
        target_type=_cut("target_type", target_type),
        target_id=_cut("target_id", str(target_id)) if target_id is not None else None,
        client_ip=_cut("client_ip", client_ip(request)) if request is not None else None,
        request_id=_cut("request_id", request.scope.get("state", {}).get("request_id")) if request is not None else None,
        details=_clean(details),
    )
    session.add(event)
    return event


# ---- reading ---------------------------------------------------------------------------------

ACTION_FILTER = re.compile(r"^[A-Za-z0-9_.:-]*\*?$")


@dataclass(frozen=True)
class AuditFilters:
    """What to read. `action` is exact, or a prefix when it ends with `*` (`member.*`) or `.`.
    `since` is inclusive and `until` exclusive; both are aware (UTC) datetimes."""

    action: str | None = None
    actor_user_id: uuid.UUID | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if self.action:
            if self.action.endswith("*") or self.action.endswith("."):
                prefix = self.action.rstrip("*")
                if prefix:  # `*` alone means every action
                    # autoescape: `_` and `%` in the prefix are literal characters, not wildcards.
                    conditions.append(AuditEvent.action.startswith(prefix, autoescape=True))
            else:
                conditions.append(AuditEvent.action == self.action)
        if self.actor_user_id is not None:
            conditions.append(AuditEvent.actor_user_id == self.actor_user_id)
        if self.target_type is not None:
            conditions.append(AuditEvent.target_type == self.target_type)
        if self.target_id is not None:
            conditions.append(AuditEvent.target_id == self.target_id)
        if self.since is not None:
            conditions.append(AuditEvent.occurred_at >= self.since)
        if self.until is not None:
            conditions.append(AuditEvent.occurred_at < self.until)
        return conditions

    def as_details(self) -> dict[str, Any]:
        """The filters that were set, for the audit record of an export."""
        values = {
            "action": self.action,
            "actor_user_id": self.actor_user_id,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "since": self.since,
            "until": self.until,
        }
        return {name: value for name, value in values.items() if value is not None}


def events_query(workspace_id: uuid.UUID, filters: AuditFilters) -> Select[tuple[AuditEvent]]:
    """The workspace's events matching the filters, newest first (the id is the order of
    insertion; `occurred_at` follows it)."""
    return (
        select(AuditEvent)
        .where(AuditEvent.workspace_id == workspace_id, *filters.conditions())
        .order_by(AuditEvent.id.desc())
    )


class InvalidCursor(ValueError):
    pass


_CURSOR_VERSION = 1


def encode_cursor(last_id: int) -> str:
    raw = json.dumps({"v": _CURSOR_VERSION, "before": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id the next page starts below; InvalidCursor for anything we did not issue."""
    if len(cursor) > 200:
        raise InvalidCursor("the cursor is not one this API issued")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidCursor("the cursor is not one this API issued") from None
    before = data.get("before") if isinstance(data, dict) and data.get("v") == _CURSOR_VERSION else None
    if not isinstance(before, int) or isinstance(before, bool) or before < 1:
        raise InvalidCursor("the cursor is not one this API issued")
    return before


@dataclass
class EventPage:
    items: list[AuditEvent]
    next_cursor: str | None
    total: int | None = None


def list_events(
    session: Session,
    workspace_id: uuid.UUID,
    filters: AuditFilters,
    *,
    limit: int,
    cursor: str | None = None,
    include_total: bool = False,
) -> EventPage:
    """One page, newest first. Keyset on the id: events recorded while a client pages have higher
    ids, so they never shift the pages it has yet to read (no duplicate, no gap)."""
    statement = events_query(workspace_id, filters)
    if cursor:
        statement = statement.where(AuditEvent.id < decode_cursor(cursor))
    rows = list(session.scalars(statement.limit(limit + 1)))
    more = len(rows) > limit
    items = rows[:limit]
    total = None
    if include_total:
        total = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.workspace_id == workspace_id, *filters.conditions())
        )
    return EventPage(items=items, next_cursor=encode_cursor(items[-1].id) if more and items else None, total=total)


# ---- CSV export --------------------------------------------------------------------------------

CSV_COLUMNS = (
    "id",
    "occurred_at",
    "action",
    "actor_user_id",
    "actor_api_key_id",
    "actor_label",
    "target_type",
    "target_id",
    "client_ip",
    "request_id",
    "details",
)
# A cell starting with one of these is a formula to spreadsheet programs (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
EXPORT_CHUNK_ROWS = 500


def csv_safe(value: Any) -> str:
    """A cell's text, with a leading apostrophe when a spreadsheet would read it as a formula."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_row(event: AuditEvent) -> list[str]:
    details = json.dumps(event.details, ensure_ascii=False, separators=(",", ":"), sort_keys=True) if event.details else None
    occurred = event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z") if event.occurred_at else None
    values = (
        event.id,
        occurred,
        event.action,
        event.actor_user_id,
        event.actor_api_key_id,
        event.actor_label,
        event.target_type,
        event.target_id,
        event.client_ip,
        event.request_id,
        details,
    )
    return [csv_safe(value) for value in values]


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows(rows)
    return buffer.getvalue()


@dataclass
class CsvExport:
    """The rows of an export, read in chunks of `chunk_rows` with a short-lived session each, so
    that neither the rows nor a database connection are held while the client downloads."""

    database: Database
    workspace_id: uuid.UUID
    filters: AuditFilters
    below_id: int | None = None  # only events recorded before the export was asked for
    chunk_rows: int = EXPORT_CHUNK_ROWS
    rows_written: int = field(default=0, init=False)

    def __iter__(self) -> Iterator[bytes]:
        yield _csv_text([list(CSV_COLUMNS)]).encode("utf-8")
        before = self.below_id
        while True:
            statement = events_query(self.workspace_id, self.filters).limit(self.chunk_rows)
            if before is not None:
                statement = statement.where(AuditEvent.id < before)
            with self.database.session() as session:
                events = list(session.scalars(statement))
            if not events:
                return
            self.rows_written += len(events)
            yield _csv_text([csv_row(event) for event in events]).encode("utf-8")
            if len(events) < self.chunk_rows:
                return
            before = events[-1].id
