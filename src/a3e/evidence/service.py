"""The evidence library: adding documents and revisions, reading, changing and deleting them.

Storing a file and recording it are ordered by the blob's row: an upload inserts (or finds) the
`blobs` row and locks it *before* it puts the file in storage, and the collector that removes an
unreferenced blob locks the same row before it deletes the file. So a blob is never removed from
under a revision that is being recorded, whatever runs in parallel.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import Request
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from a3e.audit.service import record_event
from a3e.core.errors import AppError, NotFound
from a3e.core.models import utcnow
from a3e.core.pagination import PageParams
from a3e.evidence.extraction import Kind
from a3e.evidence.models import Blob, Document, DocumentTag, Passage, Revision, RevisionStatus
from a3e.evidence.schemas import DocumentDetail, DocumentMetadata, DocumentOut, RevisionOut, UploadOut
from a3e.evidence.storage import BlobStore
from a3e.review.versions import review_changed
from a3e.workspaces.scoping import WorkspaceAccess

logger = logging.getLogger("a3e.evidence")

MEDIA_TYPES: dict[str, str] = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv",
    "txt": "text/plain",
    "md": "text/markdown",
    "html": "text/html",
}
PROCESS_JOB = "evidence.process_revision"
COLLECT_JOB = "evidence.collect_blob"


class DocumentNotFound(NotFound):
    code = "document_not_found"


class ZipNotAccepted(AppError):
    status_code = 415
    code = "zip_not_accepted_here"


@dataclass(frozen=True)
class IncomingFile:
    """A received file, its type already checked from its content."""

    path: Path
    filename: str
    size: int
    sha256: str
    kind: Kind

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.kind.value]


def check_single_document(path: Path, filename: str) -> Kind:
    """The real type of an uploaded document (UnsupportedFile when it is none we read)."""
    from a3e.evidence.extraction import sniff

    kind = sniff(path, filename)
    if kind == Kind.ZIP:
        raise ZipNotAccepted(
            "This is a ZIP archive: upload archives to …/documents/bulk, which adds each document inside"
        )
    return kind


def default_title(filename: str) -> str:
    stem = PurePosixPath(filename).stem.replace("_", " ").strip()
    return (" ".join(stem.split()) or filename or "Untitled document")[:300]


# ---- reading ---------------------------------------------------------------------------------


def get_document(session: Session, access: WorkspaceAccess, document_id: uuid.UUID, *, lock: bool = False) -> Document:
    statement = access.scoped(select(Document), Document).where(Document.id == document_id)
    if lock:
        statement = statement.with_for_update()
    document = session.scalar(statement)
    if document is None:
        raise DocumentNotFound("Document not found")
    return document


def hold_document(session: Session, document_id: uuid.UUID) -> bool:
    """Before a background job writes rows under a document (passages, suggestions, mapping runs):
    take the document's row in key-share mode, first; False when it is gone.

    Deleting or reprocessing a document locks its row FOR UPDATE and then deletes its children. A
    job that locked a child first (its revision, a mapping run) and reached the document only
    through a foreign-key check of a later insert would wait on the deleter while the deleter waits
    on it: a deadlock. Taking the document first gives everyone the same order. Key-share does not
    block other jobs, nor the document's metadata being edited. (SQLite locks the whole database.)
    """
    statement = select(Document.id).where(Document.id == document_id).with_for_update(key_share=True)
    return session.scalar(statement) is not None


def get_revision(session: Session, access: WorkspaceAccess, document_id: uuid.UUID, revision_id: uuid.UUID) -> Revision:
    revision = session.scalar(
        access.scoped(select(Revision), Revision).where(Revision.document_id == document_id, Revision.id == revision_id)
    )
    if revision is None:
        raise NotFound("Revision not found", code="revision_not_found")
    return revision


def current_revision(session: Session, document: Document) -> Revision | None:
    if document.current_revision_id is None:
        return None
    return session.get(Revision, document.current_revision_id)


def _tags_of(session: Session, document_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    tags: dict[uuid.UUID, list[str]] = {document_id: [] for document_id in document_ids}
    if document_ids:
        rows = session.execute(
            select(DocumentTag.document_id, DocumentTag.tag)
            .where(DocumentTag.document_id.in_(document_ids))
            .order_by(DocumentTag.tag)
        )
        for document_id, tag in rows:
            tags[document_id].append(tag)
    return tags


def revision_out(revision: Revision) -> RevisionOut:
    return RevisionOut.model_validate(revision, from_attributes=True)


def _document_fields(document: Document, tags: list[str], revision: Revision | None) -> dict[str, Any]:
    return {
        "id": document.id,
        "workspace_id": document.workspace_id,
        "title": document.title,
        "description": document.description,
        "document_date": document.document_date,
        "effective_date": document.effective_date,
        "review_date": document.review_date,
        "owner": document.owner,
        "tags": tags,
        "status": revision.status if revision is not None else None,
        "status_detail": revision.status_detail if revision is not None else None,
        "revision_count": document.revision_count,
        "current_revision": revision_out(revision) if revision is not None else None,
        "created_at": document.created_at,
        "updated_at": document.updated_at,
        "created_by_id": document.created_by_id,
    }


def document_out(session: Session, document: Document, *, duplicate: bool | None = None) -> DocumentOut:
    fields = _document_fields(document, _tags_of(session, [document.id])[document.id], current_revision(session, document))
    if duplicate is None:
        return DocumentOut(**fields)
    return UploadOut(**fields, duplicate=duplicate)


def document_detail(session: Session, document: Document) -> DocumentDetail:
    revisions = session.scalars(
        select(Revision).where(Revision.document_id == document.id).order_by(Revision.number.desc())
    ).all()
    current = next((revision for revision in revisions if revision.id == document.current_revision_id), None)
    fields = _document_fields(document, _tags_of(session, [document.id])[document.id], current)
    return DocumentDetail(**fields, revisions=[revision_out(revision) for revision in revisions])


def list_documents(
    session: Session,
    access: WorkspaceAccess,
    page: PageParams,
    *,
    tag: str | None = None,
    status: RevisionStatus | None = None,
    title: str | None = None,
) -> tuple[list[DocumentOut], int]:
    statement = access.scoped(select(Document), Document)
    if tag:
        statement = statement.where(
            Document.id.in_(select(DocumentTag.document_id).where(DocumentTag.tag == " ".join(tag.split()).lower()))
        )
    if status is not None:
        statement = statement.where(
            Document.current_revision_id.in_(select(Revision.id).where(Revision.status == status.value))
        )
    if title:
        pattern = "%" + title.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        statement = statement.where(Document.title.ilike(pattern, escape="\\"))
    total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    documents = session.scalars(
        statement.order_by(Document.created_at.desc(), Document.id).limit(page.limit).offset(page.offset)
    ).all()
    tags = _tags_of(session, [document.id for document in documents])
    revision_ids = [document.current_revision_id for document in documents if document.current_revision_id]
    revisions = {
        revision.id: revision for revision in session.scalars(select(Revision).where(Revision.id.in_(revision_ids)))
    } if revision_ids else {}
    items = [
        DocumentOut(**_document_fields(document, tags[document.id], revisions.get(document.current_revision_id)))
        for document in documents
    ]
    return items, int(total)


def list_passages(
    session: Session, access: WorkspaceAccess, document: Document, revision_id: uuid.UUID | None, page: PageParams
) -> tuple[list[Passage], int, Revision | None]:
    revision = (
        get_revision(session, access, document.id, revision_id) if revision_id else current_revision(session, document)
    )
    if revision is None:
        return [], 0, None
    statement = access.scoped(select(Passage), Passage).where(Passage.revision_id == revision.id)
    total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    passages = session.scalars(statement.order_by(Passage.ordinal).limit(page.limit).offset(page.offset)).all()
    return list(passages), int(total), revision


# ---- adding ----------------------------------------------------------------------------------


def _lock_blob(session: Session, file: IncomingFile) -> None:
    """Insert the blob's row if it is new, and lock it until the transaction ends."""
    dialect = session.get_bind().dialect.name
    values = {"sha256": file.sha256, "size_bytes": file.size, "media_type": file.media_type, "created_at": utcnow()}
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(Blob).values(**values).on_conflict_do_nothing(index_elements=["sha256"]))
    session.execute(select(Blob.sha256).where(Blob.sha256 == file.sha256).with_for_update())


def _existing_with_content(session: Session, access: WorkspaceAccess, sha256: str) -> Document | None:
    revision = session.scalar(
        access.scoped(select(Revision), Revision).where(Revision.sha256 == sha256).order_by(Revision.created_at).limit(1)
    )
    return session.get(Document, revision.document_id) if revision is not None else None


def _new_revision(session: Session, access: WorkspaceAccess, document: Document, file: IncomingFile) -> Revision:
    document.revision_count += 1
    revision = Revision(
        id=uuid.uuid4(),
        document_id=document.id,
        workspace_id=access.workspace_id,
        number=document.revision_count,
        sha256=file.sha256,
        size_bytes=file.size,
        filename=file.filename[:255],
        kind=file.kind.value,
        media_type=file.media_type,
        status=RevisionStatus.QUEUED.value,
        status_changed_at=utcnow(),
        attempts=0,
        created_by_id=access.principal.user.id if access.principal.user else None,
    )
    session.add(revision)
    document.current_revision_id = revision.id
    document.updated_at = utcnow()
    return revision


def _set_tags(session: Session, access: WorkspaceAccess, document: Document, tags: list[str]) -> None:
    session.execute(delete(DocumentTag).where(DocumentTag.document_id == document.id))
    for tag in tags:
        session.add(DocumentTag(document_id=document.id, tag=tag, workspace_id=access.workspace_id))


def _store_within_plan(session: Session, settings: Any, store: BlobStore, access: WorkspaceAccess,
                       file: IncomingFile, *, new_document: bool) -> None:
    """Check the plan's limits for new content (402 over them), then store it."""
    from a3e.billing.service import enforce_upload_limit

    enforce_upload_limit(session, settings, access.workspace_id, new_documents=int(new_document), new_bytes=file.size)
    store.put_file(file.sha256, file.path, file.media_type)


def add_document(
    session: Session,
    store: BlobStore,
    jobs: Any,
    access: WorkspaceAccess,
    file: IncomingFile,
    metadata: DocumentMetadata,
    *,
    request: Request | None = None,
) -> tuple[Document, bool]:
    """A new document with `file` as its first revision, or — when the workspace already holds
    this exact content — the document that has it (`duplicate` True), unchanged."""
    _lock_blob(session, file)  # also serializes two uploads of the same content
    existing = _existing_with_content(session, access, file.sha256)
    if existing is not None:
        return existing, True
    _store_within_plan(session, jobs.settings, store, access, file, new_document=True)
    document = Document(
        id=uuid.uuid4(),
        workspace_id=access.workspace_id,
        title=metadata.title or default_title(file.filename),
        description=metadata.description,
        document_date=metadata.document_date,
        effective_date=metadata.effective_date,
        review_date=metadata.review_date,
        owner=metadata.owner,
        revision_count=0,
        created_by_id=access.principal.user.id if access.principal.user else None,
    )
    session.add(document)
    session.flush()
    revision = _new_revision(session, access, document, file)
    _set_tags(session, access, document, metadata.tags or [])
    session.flush()
    record_event(
        session,
        "document.uploaded",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="document",
        target_id=document.id,
        details={"title": document.title, "filename": revision.filename, "sha256": file.sha256, "size": file.size,
                 "kind": file.kind.value, "revision": revision.number},
    )
    jobs.enqueue_after_commit(session, PROCESS_JOB, str(revision.id))
    return document, False


def add_revision(
    session: Session,
    store: BlobStore,
    jobs: Any,
    access: WorkspaceAccess,
    document_id: uuid.UUID,
    file: IncomingFile,
    *,
    request: Request | None = None,
) -> tuple[Document, bool]:
    """A new immutable revision of a document; the same content as its current revision is not
    a change (`duplicate` True, nothing added)."""
    _lock_blob(session, file)
    document = get_document(session, access, document_id, lock=True)
    current = current_revision(session, document)
    if current is not None and current.sha256 == file.sha256:
        return document, True
    _store_within_plan(session, jobs.settings, store, access, file, new_document=False)
    revision = _new_revision(session, access, document, file)
    session.flush()
    record_event(
        session,
        "document.revision_added",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="document",
        target_id=document.id,
        details={"title": document.title, "filename": revision.filename, "sha256": file.sha256, "size": file.size,
                 "revision": revision.number},
    )
    jobs.enqueue_after_commit(session, PROCESS_JOB, str(revision.id))
    return document, False


def update_document(
    session: Session, access: WorkspaceAccess, document_id: uuid.UUID, changes: DocumentMetadata, *, request: Request | None = None
) -> Document:
    document = get_document(session, access, document_id, lock=True)
    given = changes.model_dump(exclude_unset=True)
    if "title" in given and given["title"] is None:
        raise AppError("A document's title cannot be empty", status_code=422, code="invalid_title")
    changed: dict[str, Any] = {}
    for field, value in given.items():
        if field == "tags":
            before = _tags_of(session, [document.id])[document.id]
            if sorted(value or []) != before:
                _set_tags(session, access, document, value or [])
                changed["tags"] = {"from": before, "to": value or []}
            continue
        before = getattr(document, field)
        if before != value:
            setattr(document, field, value)
            changed[field] = {"from": _plain(before), "to": _plain(value)}
    if changed:
        document.updated_at = utcnow()
        session.flush()
        record_event(
            session,
            "document.updated",
            request=request,
            principal=access.principal,
            workspace_id=access.workspace_id,
            target_type="document",
            target_id=document.id,
            details={"title": document.title, "changes": changed},
        )
    return document


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def delete_document(
    session: Session, jobs: Any, access: WorkspaceAccess, document_id: uuid.UUID, *, request: Request | None = None
) -> None:
    """The document, its revisions and passages go (the audit log keeps the record); files no
    longer referenced by any revision are removed from storage by a background job."""
    document = get_document(session, access, document_id, lock=True)
    hashes = sorted(set(session.scalars(select(Revision.sha256).where(Revision.document_id == document.id))))
    record_event(
        session,
        "document.deleted",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="document",
        target_id=document.id,
        details={"title": document.title, "revisions": document.revision_count},
    )
    session.execute(delete(Document).where(Document.id == document.id))
    review_changed(session, access.workspace_id)  # its links and suggestions went with it
    session.expunge(document)
    for sha256 in hashes:
        jobs.enqueue_after_commit(session, COLLECT_JOB, sha256)


def reprocess(
    session: Session, jobs: Any, access: WorkspaceAccess, document_id: uuid.UUID, *, request: Request | None = None
) -> Document:
    """Queue the current revision's processing again (after a failure, or a newer extractor)."""
    document = get_document(session, access, document_id, lock=True)
    revision = current_revision(session, document)
    if revision is None:
        raise AppError("This document has no revision to process", status_code=409, code="nothing_to_process")
    if revision.status in (RevisionStatus.QUEUED.value, RevisionStatus.PROCESSING.value):
        raise AppError("This document is already being processed", status_code=409, code="already_processing")
    session.execute(delete(Passage).where(Passage.revision_id == revision.id))
    review_changed(session, access.workspace_id)  # the passages' links and suggestions went with them
    revision.status = RevisionStatus.QUEUED.value
    revision.status_detail = None
    revision.status_changed_at = utcnow()
    revision.attempts = 0
    revision.page_count = revision.passage_count = revision.character_count = None
    revision.processed_at = None
    session.flush()
    record_event(
        session,
        "document.reprocess_requested",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="document",
        target_id=document.id,
        details={"title": document.title, "revision": revision.number},
    )
    jobs.enqueue_after_commit(session, PROCESS_JOB, str(revision.id))
    return document


# ---- removing blobs nobody references ----------------------------------------------------------


def collect_blob(session: Session, store: BlobStore, sha256: str) -> bool:
    """Remove a blob (row and file) when no revision references it. True when removed."""
    locked = session.scalar(select(Blob.sha256).where(Blob.sha256 == sha256).with_for_update())
    if locked is None:
        return False
    if session.scalar(select(Revision.id).where(Revision.sha256 == sha256).limit(1)) is not None:
        return False
    session.execute(delete(Blob).where(Blob.sha256 == sha256))
    store.delete(sha256)  # under the row's lock: an upload of the same bytes waits for us
    return True


def unreferenced_blobs(session: Session, *, older_than: timedelta, limit: int = 500) -> list[str]:
    cutoff = datetime.now(UTC) - older_than
    referenced = select(Revision.sha256).where(Revision.sha256 == Blob.sha256).exists()
    return list(
        session.scalars(select(Blob.sha256).where(~referenced, Blob.created_at < cutoff).limit(limit))
    )


def incoming_file(path: Path, filename: str, size: int, sha256: str) -> IncomingFile:
    """A received file once its content proved to be a document we read (else 415)."""
    return IncomingFile(path, filename, size, sha256, check_single_document(path, filename))
