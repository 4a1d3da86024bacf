"""The standards × evidence matrix and the gaps, computed from the workspace's own data: the
links people accepted or made, the pending suggestions, the documents' dates, and the statuses.

Traffic light per standard:
- green: at least one link that is strong (made by hand, or accepted with a confidence of at
  least `low_confidence`) to a document that is current (no review/expiry date, or one on or after
  `as_of`);
- amber: evidence, but none of it strong and current (only low-confidence links, or only evidence
  past its review date), or no links but pending suggestions;
- red: nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, case, distinct, func, or_, select
from sqlalchemy.orm import Session

from a3e.evidence.models import Document, Passage
from a3e.review.models import EvidenceLink, LinkOrigin, StandardStatus, Suggestion, SuggestionStatus
from a3e.review.service import CatalogStandards, catalog_standards
from a3e.standards.service import get_catalog
from a3e.workspaces.scoping import WorkspaceAccess

GREEN, AMBER, RED = "green", "amber", "red"
DEFAULT_LOW_CONFIDENCE = 0.5
DEFAULT_STALE_YEARS = 5


@dataclass
class StandardRow:
    code: str
    title: str
    section: str
    accepted_links: int = 0
    documents: int = 0
    pending_suggestions: int = 0
    workflow: str = "not_started"
    judgment: str = "not_assessed"
    light: str = RED
    reasons: list[str] = field(default_factory=list)
    newest_evidence: date | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code, "title": self.title, "section": self.section,
            "accepted_links": self.accepted_links, "documents": self.documents,
            "pending_suggestions": self.pending_suggestions, "workflow": self.workflow, "judgment": self.judgment,
            "gap_status": self.light, "reasons": self.reasons,
            "newest_evidence": self.newest_evidence.isoformat() if self.newest_evidence else None,
        }


@dataclass
class Matrix:
    standards: CatalogStandards
    rows: list[StandardRow]
    as_of: date
    low_confidence: float
    stale_years: int


def _as_date(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])  # SQLite may hand back text from an aggregate


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def build_matrix(
    session: Session,
    access: WorkspaceAccess,
    catalog_id: uuid.UUID,
    *,
    as_of: date,
    low_confidence: float = DEFAULT_LOW_CONFIDENCE,
    stale_years: int = DEFAULT_STALE_YEARS,
) -> Matrix:
    standards = catalog_standards(session, get_catalog(session, access, catalog_id))
    rows = {code: StandardRow(code, title, standards.section_of(code)) for code, title in standards.titles.items()}
    selection = standards.catalog_id

    strong = or_(EvidenceLink.origin == LinkOrigin.MANUAL.value, EvidenceLink.confidence >= low_confidence)
    current = or_(Document.review_date.is_(None), Document.review_date >= as_of)
    links = session.execute(
        select(
            EvidenceLink.standard_code,
            func.count(EvidenceLink.id),
            func.count(distinct(EvidenceLink.document_id)),
            func.sum(case((strong, 1), else_=0)),
            func.sum(case((and_(strong, current), 1), else_=0)),
            func.sum(case((current, 0), else_=1)),
            func.max(func.coalesce(Document.document_date, Document.effective_date)),
            func.max(Document.created_at),
        )
        .join(Document, Document.id == EvidenceLink.document_id)
        .where(EvidenceLink.workspace_id == access.workspace_id, EvidenceLink.selection_id == selection)
        .group_by(EvidenceLink.standard_code)
    ).all()
    pending = dict(
        session.execute(
            select(Suggestion.standard_code, func.count(Suggestion.id))
            .where(Suggestion.workspace_id == access.workspace_id, Suggestion.selection_id == selection,
                   Suggestion.status == SuggestionStatus.PENDING.value)
            .group_by(Suggestion.standard_code)
        ).all()
    )
    for status in session.scalars(select(StandardStatus).where(StandardStatus.selection_id == selection)):
        row = rows.get(status.standard_code)
        if row is not None:
            row.workflow, row.judgment = status.workflow, status.judgment

    stale_before = _years_before(as_of, stale_years)
    seen: set[str] = set()
    for code, count, documents, strong_count, strong_current, expired, newest_dated, newest_uploaded in links:
        row = rows.get(code)
        if row is None:  # a code no longer in the catalog's edition: not shown
            continue
        seen.add(code)
        row.accepted_links, row.documents = int(count), int(documents)
        row.newest_evidence = _as_date(newest_dated) or _as_date(newest_uploaded)
        if int(strong_current or 0) > 0:
            row.light = GREEN
        else:
            row.light = AMBER
            if int(strong_count or 0) == 0:
                row.reasons.append(f"only low-confidence links (below {low_confidence:g})")
            if int(expired or 0) > 0:
                row.reasons.append("evidence past its review date")
        if row.newest_evidence is not None and row.newest_evidence < stale_before:
            row.reasons.append(f"all evidence is older than {stale_years} years")
            if row.light == GREEN:
                row.light = AMBER
    for code, row in rows.items():
        row.pending_suggestions = int(pending.get(code, 0))
        if code not in seen:
            if row.pending_suggestions:
                row.light = AMBER
                row.reasons.append("only pending suggestions")
            else:
                row.reasons.append("no evidence")
    return Matrix(standards, list(rows.values()), as_of, low_confidence, stale_years)


def filter_rows(rows: list[StandardRow], *, section: str | None, gap: str | None,
                has_pending: bool | None) -> list[StandardRow]:
    return [
        row for row in rows
        if (section is None or row.section == section)
        and (gap is None or row.light == gap)
        and (has_pending is None or (row.pending_suggestions > 0) == has_pending)
    ]


def counts(rows: list[StandardRow]) -> dict[str, Any]:
    def tally(items: list[StandardRow]) -> dict[str, int]:
        result = {"standards": len(items), GREEN: 0, AMBER: 0, RED: 0}
        for item in items:
            result[item.light] += 1
        return result

    sections: dict[str, list[StandardRow]] = {}
    for row in rows:
        sections.setdefault(row.section, []).append(row)
    return {"catalog": tally(rows), "sections": {name: tally(items) for name, items in sections.items()}}


def lint(session: Session, access: WorkspaceAccess, matrix: Matrix) -> list[dict[str, Any]]:
    """The readiness checklist: each problem with its rule, what it concerns, and why."""
    problems: list[dict[str, Any]] = []
    selection = matrix.standards.catalog_id
    for row in matrix.rows:
        if row.judgment == "compliant" and row.accepted_links == 0:
            problems.append({"rule": "compliant_without_evidence", "standard": row.code,
                             "message": f"{row.code} is judged compliant but has no accepted evidence"})
        if row.newest_evidence is not None and row.newest_evidence < _years_before(matrix.as_of, matrix.stale_years):
            problems.append({"rule": "stale_evidence", "standard": row.code,
                             "message": f"All evidence for {row.code} is older than {matrix.stale_years} years "
                                        f"(newest: {row.newest_evidence.isoformat()})"})
    expired = session.execute(
        select(Document.id, Document.title, Document.review_date)
        .where(Document.workspace_id == access.workspace_id, Document.review_date < matrix.as_of,
               Document.id.in_(select(EvidenceLink.document_id).where(EvidenceLink.selection_id == selection)))
        .order_by(Document.review_date)
    ).all()
    for document_id, title, review_date in expired:
        problems.append({"rule": "evidence_expired", "document_id": str(document_id),
                         "message": f"{title!r} is cited as evidence but expired or was due for review on "
                                    f"{review_date.isoformat()}, before {matrix.as_of.isoformat()}"})
    unlinked = session.execute(
        select(Document.id, Document.title)
        .where(Document.workspace_id == access.workspace_id,
               ~Document.id.in_(select(EvidenceLink.document_id).where(EvidenceLink.selection_id == selection)))
        .order_by(Document.title)
    ).all()
    for document_id, title in unlinked:
        problems.append({"rule": "document_unlinked", "document_id": str(document_id),
                         "message": f"{title!r} is linked to no standard of this catalog"})
    return problems


def cell(session: Session, access: WorkspaceAccess, catalog_id: uuid.UUID, code: str) -> dict[str, Any]:
    """The evidence behind one standard's cell: its links (with passages) and pending suggestions."""
    standards = catalog_standards(session, get_catalog(session, access, catalog_id))
    if code not in standards.titles:
        from a3e.core.errors import NotFound

        raise NotFound(f"No standard {code!r} in this catalog", code="standard_not_found")
    links = session.execute(
        select(EvidenceLink, Document.title, Passage)
        .join(Document, Document.id == EvidenceLink.document_id)
        .outerjoin(Passage, Passage.id == EvidenceLink.passage_id)
        .where(EvidenceLink.workspace_id == access.workspace_id, EvidenceLink.selection_id == standards.catalog_id,
               EvidenceLink.standard_code == code)
        .order_by(EvidenceLink.created_at)
    ).all()
    suggestions = session.execute(
        select(Suggestion, Passage, Document.title)
        .join(Passage, Passage.id == Suggestion.passage_id)
        .join(Document, Document.id == Suggestion.document_id)
        .where(Suggestion.workspace_id == access.workspace_id, Suggestion.selection_id == standards.catalog_id,
               Suggestion.standard_code == code, Suggestion.status == SuggestionStatus.PENDING.value)
        .order_by(Suggestion.confidence.desc(), Suggestion.id)
    ).all()

    def passage_dict(passage: Passage | None) -> dict[str, Any] | None:
        if passage is None:
            return None
        return {"id": passage.id, "revision_id": passage.revision_id, "page": passage.page,
                "location": passage.location, "char_start": passage.char_start, "char_end": passage.char_end,
                "text": passage.text}

    return {
        "catalog_id": standards.catalog_id,
        "code": code,
        "title": standards.titles[code],
        "links": [
            {"id": link.id, "document_id": link.document_id, "document_title": title, "origin": link.origin,
             "confidence": link.confidence, "created_by_id": link.created_by_id, "created_at": link.created_at,
             "passage": passage_dict(passage)}
            for link, title, passage in links
        ],
        "pending_suggestions": [
            {"id": suggestion.id, "document_id": suggestion.document_id, "document_title": title,
             "confidence": suggestion.confidence, "passage": passage_dict(passage)}
            for suggestion, passage, title in suggestions
        ],
    }


EXPORT_COLUMNS = ("code", "title", "section", "gap_status", "accepted_links", "documents", "pending_suggestions",
                  "workflow", "judgment", "newest_evidence", "reasons")


def export_rows(matrix: Matrix) -> list[list[Any]]:
    rows = []
    for row in matrix.rows:
        data = row.as_dict()
        data["reasons"] = "; ".join(row.reasons)
        rows.append([data[column] for column in EXPORT_COLUMNS])
    return rows
