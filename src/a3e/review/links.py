"""Evidence links and the engine's suggestions: people accept, reject, or link by hand.

A link records who made it, when, and its origin (manual, or suggested with the engine's
confidence). A rejected suggestion stays rejected: re-mapping never proposes it again (see
`Suggestion.passage_digest`). Every decision is audited.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from a3e.audit.service import record_event
from a3e.core.errors import Conflict, NotFound
from a3e.core.models import utcnow
from a3e.core.pagination import PageParams
from a3e.evidence.models import Document, Passage
from a3e.evidence.service import get_document
from a3e.review.models import EvidenceLink, LinkOrigin, Suggestion, SuggestionStatus
from a3e.review.schemas import LinkCreate, LinkOut, PassageRef, SuggestionOut
from a3e.review.service import resolve
from a3e.webhooks import events as webhook_events
from a3e.webhooks.publish import publish
from a3e.workspaces.scoping import WorkspaceAccess


def _user_id(access: WorkspaceAccess) -> uuid.UUID | None:
    return access.principal.user.id if access.principal.user else None


def link_out(link: EvidenceLink) -> LinkOut:
    return LinkOut(
        id=link.id, catalog_id=link.selection_id, standard=link.standard_code, document_id=link.document_id,
        passage_id=link.passage_id, origin=link.origin, confidence=link.confidence, suggestion_id=link.suggestion_id,
        note=link.note, created_by_id=link.created_by_id, created_at=link.created_at,
    )


def _existing_link(session: Session, selection_id: uuid.UUID, code: str, document_id: uuid.UUID,
                   passage_id: int | None) -> EvidenceLink | None:
    statement = select(EvidenceLink).where(
        EvidenceLink.selection_id == selection_id, EvidenceLink.standard_code == code,
        EvidenceLink.document_id == document_id,
    )
    statement = statement.where(
        EvidenceLink.passage_id.is_(None) if passage_id is None else EvidenceLink.passage_id == passage_id
    )
    return session.scalar(statement)


def add_link(session: Session, access: WorkspaceAccess, body: LinkCreate, *, request: Request | None = None) -> EvidenceLink:
    standards = resolve(session, access, body.standard, body.catalog)
    document = get_document(session, access, body.document_id)
    if body.passage_id is not None:
        passage = session.scalar(
            access.scoped(select(Passage), Passage).where(Passage.id == body.passage_id, Passage.document_id == document.id)
        )
        if passage is None:
            raise NotFound("No such passage in this document", code="passage_not_found")
    existing = _existing_link(session, standards.catalog_id, body.standard, document.id, body.passage_id)
    if existing is not None:
        raise Conflict("This evidence is already linked to this standard", code="link_exists",
                       details={"link_id": str(existing.id)})
    link = EvidenceLink(
        id=uuid.uuid4(), workspace_id=access.workspace_id, selection_id=standards.catalog_id,
        standard_code=body.standard, document_id=document.id, passage_id=body.passage_id,
        origin=LinkOrigin.MANUAL.value, note=body.note or None, created_by_id=_user_id(access), created_at=utcnow(),
    )
    session.add(link)
    session.flush()
    record_event(
        session, "link.added", request=request, principal=access.principal, workspace_id=access.workspace_id,
        target_type="standard", target_id=body.standard,
        details={"catalog_id": str(standards.catalog_id), "document_id": str(document.id), "title": document.title,
                 "passage_id": body.passage_id, "origin": "manual"},
    )
    publish(session, access.workspace_id, "link.created", lambda: webhook_events.link_created(link))
    return link


def list_links(session: Session, access: WorkspaceAccess, page: PageParams, *, catalog: uuid.UUID | None,
               standard: str | None, document_id: uuid.UUID | None) -> tuple[list[LinkOut], int]:
    statement = access.scoped(select(EvidenceLink), EvidenceLink)
    if catalog is not None:
        statement = statement.where(EvidenceLink.selection_id == catalog)
    if standard:
        statement = statement.where(EvidenceLink.standard_code == standard)
    if document_id is not None:
        statement = statement.where(EvidenceLink.document_id == document_id)
    total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    links = session.scalars(statement.order_by(EvidenceLink.created_at, EvidenceLink.id).limit(page.limit).offset(page.offset))
    return [link_out(link) for link in links], int(total)


def remove_link(session: Session, access: WorkspaceAccess, link_id: uuid.UUID, *, request: Request | None = None) -> None:
    link = session.scalar(access.scoped(select(EvidenceLink), EvidenceLink).where(EvidenceLink.id == link_id))
    if link is None:
        raise NotFound("Link not found", code="link_not_found")
    if link.suggestion_id is not None:  # undoing an acceptance: the suggestion is pending again
        suggestion = session.get(Suggestion, link.suggestion_id)
        if suggestion is not None and suggestion.status == SuggestionStatus.ACCEPTED.value:
            suggestion.status, suggestion.decided_by_id, suggestion.decided_at = SuggestionStatus.PENDING.value, None, None
    record_event(
        session, "link.removed", request=request, principal=access.principal, workspace_id=access.workspace_id,
        target_type="standard", target_id=link.standard_code,
        details={"catalog_id": str(link.selection_id), "document_id": str(link.document_id),
                 "passage_id": link.passage_id, "origin": link.origin},
    )
    session.delete(link)
    session.flush()


# ---- suggestions -------------------------------------------------------------------------------


def _suggestion_rows(session: Session, statement: Any) -> list[SuggestionOut]:
    rows = session.execute(statement).all()
    return [
        SuggestionOut(
            id=s.id, catalog_id=s.selection_id, standard=s.standard_code, confidence=s.confidence, rank=s.rank,
            status=s.status, reason=s.reason, decided_by_id=s.decided_by_id, decided_at=s.decided_at,
            created_at=s.created_at,
            passage=PassageRef(
                id=p.id, document_id=p.document_id, document_title=title, revision_id=p.revision_id, page=p.page,
                location=p.location, char_start=p.char_start, char_end=p.char_end, text=p.text,
            ),
        )
        for s, p, title in rows
    ]


def list_suggestions(session: Session, access: WorkspaceAccess, page: PageParams, *, catalog: uuid.UUID | None,
                     standard: str | None, document_id: uuid.UUID | None,
                     status: SuggestionStatus | None) -> tuple[list[SuggestionOut], int]:
    statement = (
        access.scoped(select(Suggestion, Passage, Document.title), Suggestion)
        .join(Passage, Passage.id == Suggestion.passage_id)
        .join(Document, Document.id == Suggestion.document_id)
    )
    if catalog is not None:
        statement = statement.where(Suggestion.selection_id == catalog)
    if standard:
        statement = statement.where(Suggestion.standard_code == standard)
    if document_id is not None:
        statement = statement.where(Suggestion.document_id == document_id)
    if status is not None:
        statement = statement.where(Suggestion.status == status.value)
    total = session.scalar(select(func.count()).select_from(statement.with_only_columns(Suggestion.id).subquery())) or 0
    statement = statement.order_by(Suggestion.confidence.desc(), Suggestion.id).limit(page.limit).offset(page.offset)
    return _suggestion_rows(session, statement), int(total)


def _suggestion(session: Session, access: WorkspaceAccess, suggestion_id: int) -> Suggestion:
    suggestion = session.scalar(
        access.scoped(select(Suggestion), Suggestion).where(Suggestion.id == suggestion_id).with_for_update()
    )
    if suggestion is None:
        raise NotFound("Suggestion not found", code="suggestion_not_found")
    return suggestion


def suggestion_out(session: Session, access: WorkspaceAccess, suggestion_id: int) -> SuggestionOut:
    statement = (
        access.scoped(select(Suggestion, Passage, Document.title), Suggestion)
        .join(Passage, Passage.id == Suggestion.passage_id)
        .join(Document, Document.id == Suggestion.document_id)
        .where(Suggestion.id == suggestion_id)
    )
    return _suggestion_rows(session, statement)[0]


def accept(session: Session, access: WorkspaceAccess, suggestion_id: int, *, request: Request | None = None) -> Suggestion:
    suggestion = _suggestion(session, access, suggestion_id)
    if suggestion.status == SuggestionStatus.ACCEPTED.value:
        return suggestion  # accepting twice is one acceptance
    suggestion.status = SuggestionStatus.ACCEPTED.value
    suggestion.reason = None
    suggestion.decided_by_id, suggestion.decided_at = _user_id(access), utcnow()
    existing = _existing_link(session, suggestion.selection_id, suggestion.standard_code, suggestion.document_id,
                              suggestion.passage_id)
    if existing is None:
        session.add(EvidenceLink(
            id=uuid.uuid4(), workspace_id=access.workspace_id, selection_id=suggestion.selection_id,
            standard_code=suggestion.standard_code, document_id=suggestion.document_id,
            passage_id=suggestion.passage_id, origin=LinkOrigin.SUGGESTED.value, confidence=suggestion.confidence,
            suggestion_id=suggestion.id, created_by_id=_user_id(access), created_at=utcnow(),
        ))
    session.flush()
    record_event(
        session, "suggestion.accepted", request=request, principal=access.principal, workspace_id=access.workspace_id,
        target_type="standard", target_id=suggestion.standard_code,
        details={"catalog_id": str(suggestion.selection_id), "suggestion_id": suggestion.id,
                 "document_id": str(suggestion.document_id), "passage_id": suggestion.passage_id,
                 "confidence": round(suggestion.confidence, 4)},
    )
    publish(session, access.workspace_id, "link.accepted", lambda: webhook_events.link_accepted(session, suggestion))
    return suggestion


def reject(session: Session, access: WorkspaceAccess, suggestion_id: int, reason: str | None, *,
           request: Request | None = None) -> Suggestion:
    suggestion = _suggestion(session, access, suggestion_id)
    if suggestion.status == SuggestionStatus.ACCEPTED.value:  # a change of mind: the link it made goes
        link = _existing_link(session, suggestion.selection_id, suggestion.standard_code, suggestion.document_id,
                              suggestion.passage_id)
        if link is not None and link.suggestion_id == suggestion.id:
            session.delete(link)
    suggestion.status = SuggestionStatus.REJECTED.value
    suggestion.reason = reason or None
    suggestion.decided_by_id, suggestion.decided_at = _user_id(access), utcnow()
    session.flush()
    record_event(
        session, "suggestion.rejected", request=request, principal=access.principal, workspace_id=access.workspace_id,
        target_type="standard", target_id=suggestion.standard_code,
        details={"catalog_id": str(suggestion.selection_id), "suggestion_id": suggestion.id,
                 "document_id": str(suggestion.document_id), "passage_id": suggestion.passage_id,
                 "reason": suggestion.reason},
    )
    return suggestion
