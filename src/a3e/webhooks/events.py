"""The catalogue of events an endpoint can subscribe to, and the `data` each one carries.

The domains publish with the builders below, so that each event's payload is defined in one place
(and documented in the README from the same fields). Every `data` names its `workspace_id`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from a3e.evidence.models import Revision
    from a3e.review.models import EvidenceLink, StandardStatus, Suggestion

EVENT_TYPES: dict[str, str] = {
    "document.processed": "A document's revision was processed: its passages are ready (or it has none).",
    "document.failed": "A document's revision could not be processed; `reason` says why.",
    "link.created": "Someone linked evidence to a standard by hand.",
    "link.accepted": "Someone accepted the mapping engine's suggestion: it is now a link.",
    "standard.status_changed": "A standard's workflow, judgment or note changed.",
    "member.joined": "Someone accepted an invitation and joined the workspace.",
}


def _revision_fields(session: Session, revision: Revision) -> dict[str, Any]:
    from a3e.evidence.models import Document

    document = session.get(Document, revision.document_id)
    return {
        "workspace_id": str(revision.workspace_id),
        "document_id": str(revision.document_id),
        "title": document.title if document is not None else None,
        "revision_id": str(revision.id),
        "revision_number": revision.number,
        "filename": revision.filename,
        "kind": revision.kind,
        "sha256": revision.sha256,
    }


def document_processed(session: Session, revision: Revision) -> dict[str, Any]:
    return {
        **_revision_fields(session, revision),
        "status": revision.status,
        "page_count": revision.page_count,
        "passage_count": revision.passage_count,
        "detail": revision.status_detail,
    }


def document_failed(session: Session, revision: Revision) -> dict[str, Any]:
    return {**_revision_fields(session, revision), "status": revision.status, "reason": revision.status_detail}


def _link_fields(link: EvidenceLink) -> dict[str, Any]:
    return {
        "workspace_id": str(link.workspace_id),
        "link_id": str(link.id),
        "catalog_id": str(link.selection_id),
        "standard": link.standard_code,
        "document_id": str(link.document_id),
        "passage_id": link.passage_id,
        "origin": link.origin,
        "created_by_id": str(link.created_by_id) if link.created_by_id else None,
    }


def link_created(link: EvidenceLink) -> dict[str, Any]:
    return {**_link_fields(link), "note": link.note}


def link_accepted(session: Session, suggestion: Suggestion) -> dict[str, Any]:
    """The link an accepted suggestion made (or the one that already existed for it)."""
    from sqlalchemy import select

    from a3e.review.models import EvidenceLink

    statement = select(EvidenceLink).where(
        EvidenceLink.selection_id == suggestion.selection_id,
        EvidenceLink.standard_code == suggestion.standard_code,
        EvidenceLink.document_id == suggestion.document_id,
        EvidenceLink.passage_id.is_(None) if suggestion.passage_id is None else EvidenceLink.passage_id == suggestion.passage_id,
    )
    link = session.scalar(statement)
    data = _link_fields(link) if link is not None else {
        "workspace_id": str(suggestion.workspace_id), "link_id": None, "catalog_id": str(suggestion.selection_id),
        "standard": suggestion.standard_code, "document_id": str(suggestion.document_id),
        "passage_id": suggestion.passage_id, "origin": "suggested", "created_by_id": None,
    }
    return {
        **data,
        "suggestion_id": suggestion.id,
        "confidence": round(suggestion.confidence, 4),
        "accepted_by_id": str(suggestion.decided_by_id) if suggestion.decided_by_id else None,
    }


def standard_status_changed(status: StandardStatus, title: str | None, changes: dict[str, Any]) -> dict[str, Any]:
    return {
        "workspace_id": str(status.workspace_id),
        "catalog_id": str(status.selection_id),
        "standard": status.standard_code,
        "title": title,
        "workflow": status.workflow,
        "judgment": status.judgment,
        "note": status.note,
        "changes": changes,
        "changed_by_id": str(status.updated_by_id) if status.updated_by_id else None,
    }


def member_joined(workspace_id: uuid.UUID, user_id: uuid.UUID, email: str, role: str) -> dict[str, Any]:
    return {"workspace_id": str(workspace_id), "user_id": str(user_id), "email": email, "role": role}
