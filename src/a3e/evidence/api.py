"""The evidence library's endpoints: upload (one file, or a ZIP of many), list, read, change,
new revisions, download, passages, reprocess, delete. Everything inside a workspace goes through
`require(...)`; uploads stream to disk under the size limit before anything else happens."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from a3e.core.database import SessionDep
from a3e.core.errors import AppError
from a3e.core.middleware import admitted
from a3e.core.pagination import Page, PageParams, page_params
from a3e.evidence import service
from a3e.evidence.models import RevisionStatus
from a3e.evidence.schemas import (
    BulkUploadOut,
    DocumentDetail,
    DocumentMetadata,
    DocumentOut,
    PassageOut,
    SkippedFile,
    UploadFields,
    UploadOut,
)
from a3e.evidence.storage import BlobStore, BlobStoreDep
from a3e.evidence.uploads import DEFAULT_MAX_FIELDS, ReceivedFile, receive_upload
from a3e.workspaces.permissions import Action
from a3e.workspaces.scoping import WorkspaceAccess, require

router = APIRouter(prefix="/api/v1/workspaces/{workspace_id}", tags=["evidence"])

Paging = Annotated[PageParams, Depends(page_params)]
DocumentId = Annotated[uuid.UUID, Path(description="The document's id")]
RevisionId = Annotated[uuid.UUID, Path(description="The revision's id")]
Reader = Annotated[WorkspaceAccess, require(Action.EVIDENCE_READ)]
Writer = Annotated[WorkspaceAccess, require(Action.EVIDENCE_WRITE)]

BULK_MAX_DOCUMENTS = 1000


def _upload_fields(fields: dict[str, str]) -> UploadFields:
    try:
        return UploadFields.model_validate({name: value for name, value in fields.items() if name != "file"})
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(part) for part in error["loc"]) or "form", "message": error["msg"]}
            for error in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        raise AppError(
            "Invalid document metadata: " + "; ".join(f"{p['field']}: {p['message']}" for p in problems),
            status_code=422,
            code="validation_error",
            details=problems,
        ) from None


def _the_file(files: list[ReceivedFile]) -> ReceivedFile:
    named = [file for file in files if file.field_name == "file"]
    if len(named) != 1:
        raise AppError("Send the document in the multipart field `file`", status_code=422, code="file_required")
    return named[0]


@router.post(
    "/documents",
    status_code=201,
    summary="Upload a document (multipart field `file`, with optional metadata fields)",
    response_model=UploadOut,
    responses={200: {"description": "The same content was already in the workspace: that document"}},
)
async def upload_document(
    request: Request, response: Response, session: SessionDep, access: Writer, store: BlobStoreDep
) -> UploadOut:
    def add(received: ReceivedFile, fields: dict[str, str]) -> tuple[Any, bool]:
        metadata = _upload_fields(fields)
        file = service.incoming_file(received.path, received.filename, received.size, received.sha256)
        return service.add_document(session, store, request.app.state.jobs, access, file, metadata, request=request)

    return await _upload_one(request, response, session, add, max_fields=DEFAULT_MAX_FIELDS)


async def _upload_one(
    request: Request,
    response: Response,
    session: Session,
    add: Callable[[ReceivedFile, dict[str, str]], tuple[Any, bool]],
    *,
    max_fields: int,
) -> UploadOut:
    """Receive one file, then record it: admitted to the database only once the body is in, and
    committed inside that admission (the connection is given back before it ends). 201 for a new
    document or revision, 200 when the content was already there."""
    async with receive_upload(request, max_files=1, max_fields=max_fields) as upload:
        received = _the_file(upload.files)

        def record() -> UploadOut:
            document, duplicate = add(received, upload.fields)
            answer = service.document_out(session, document, duplicate=duplicate)
            session.commit()
            return answer  # type: ignore[return-value]

        async with admitted(request):
            answer = await run_in_threadpool(record)
    if answer.duplicate:
        response.status_code = 200
    return answer


@router.post(
    "/documents/bulk",
    status_code=201,
    summary="Upload a ZIP of documents: each one inside becomes a document (metadata fields apply to all)",
)
async def upload_bulk(
    request: Request, session: SessionDep, access: Writer, store: BlobStoreDep
) -> BulkUploadOut:
    async with receive_upload(request, max_files=1) as upload:
        received = _the_file(upload.files)
        metadata = _upload_fields(upload.fields)
        async with admitted(request):
            return await run_in_threadpool(_add_bulk, request, session, store, access, received, metadata)


def _add_bulk(
    request: Request, session: SessionDep, store: BlobStore, access: WorkspaceAccess, received: ReceivedFile,
    metadata: UploadFields,
) -> BulkUploadOut:
    import hashlib

    from a3e.evidence.extraction import ExtractionFailed, Kind, UnsupportedFile, sniff, unpack_zip

    kind = sniff(received.path, received.filename)
    if kind != Kind.ZIP:
        raise AppError("A bulk upload is a ZIP archive; upload single documents to …/documents", status_code=415,
                       code="zip_required")
    documents: list[UploadOut] = []
    skipped: list[SkippedFile] = []
    with unpack_zip(received.path) as contents:
        skipped.extend(SkippedFile(name=item.name, reason=item.reason) for item in contents.skipped)
        if len(contents.documents) > BULK_MAX_DOCUMENTS:
            raise AppError(
                f"The archive holds {len(contents.documents)} documents; at most {BULK_MAX_DOCUMENTS} per upload",
                status_code=413, code="too_many_documents",
            )
        for member in contents.documents:
            name = member.name.rsplit("/", 1)[-1]
            try:
                file_kind = sniff(member.path, name)
                if file_kind == Kind.ZIP:
                    raise UnsupportedFile("archives inside the archive are not opened")
            except (UnsupportedFile, ExtractionFailed) as exc:
                skipped.append(SkippedFile(name=member.name, reason=exc.reason))
                continue
            with open(member.path, "rb") as handle:
                sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
            file = service.IncomingFile(member.path, name, member.path.stat().st_size, sha256, file_kind)
            per_file = metadata.model_copy(update={"title": metadata.title and f"{metadata.title} — {name}"})
            document, duplicate = service.add_document(
                session, store, request.app.state.jobs, access, file, per_file, request=request
            )
            documents.append(service.document_out(session, document, duplicate=duplicate))  # type: ignore[arg-type]
    session.commit()
    return BulkUploadOut(documents=documents, skipped=skipped)


@router.get("/documents", summary="The workspace's documents, newest first")
def list_documents(
    session: SessionDep,
    access: Reader,
    page: Paging,
    tag: Annotated[str | None, Query(max_length=64, description="Only documents with this tag")] = None,
    status: Annotated[RevisionStatus | None, Query(description="Only documents whose current revision is in this state")] = None,
    title: Annotated[str | None, Query(max_length=200, description="Title contains (case-insensitive)")] = None,
) -> Page[DocumentOut]:
    items, total = service.list_documents(session, access, page, tag=tag, status=status, title=title)
    return Page(items=items, total=total, **page.model_dump())


@router.get("/documents/{document_id}", summary="A document with its metadata, processing state and revisions")
def get_document(document_id: DocumentId, session: SessionDep, access: Reader) -> DocumentDetail:
    return service.document_detail(session, service.get_document(session, access, document_id))


@router.patch("/documents/{document_id}", summary="Change a document's metadata or tags")
def update_document(
    document_id: DocumentId, body: DocumentMetadata, request: Request, session: SessionDep, access: Writer
) -> DocumentOut:
    document = service.update_document(session, access, document_id, body, request=request)
    return service.document_out(session, document)


@router.delete(
    "/documents/{document_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a document with all its revisions and passages (editors and above; audited)",
)
def delete_document(document_id: DocumentId, request: Request, session: SessionDep, access: Writer) -> Response:
    service.delete_document(session, request.app.state.jobs, access, document_id, request=request)
    return Response(status_code=204)


@router.post(
    "/documents/{document_id}/revisions",
    status_code=201,
    summary="Upload a new version of a document (multipart field `file`): a new immutable revision",
    response_model=UploadOut,
    responses={200: {"description": "Identical to the current revision: nothing was added"}},
)
async def upload_revision(
    document_id: DocumentId, request: Request, response: Response, session: SessionDep, access: Writer,
    store: BlobStoreDep,
) -> UploadOut:
    def add(received: ReceivedFile, _fields: dict[str, str]) -> tuple[Any, bool]:
        # The document must exist before the file's type is worth checking (404 before 415).
        service.get_document(session, access, document_id)
        file = service.incoming_file(received.path, received.filename, received.size, received.sha256)
        return service.add_revision(session, store, request.app.state.jobs, access, document_id, file, request=request)

    return await _upload_one(request, response, session, add, max_fields=0)


@router.post("/documents/{document_id}/reprocess", status_code=202, summary="Process the current revision again")
def reprocess_document(document_id: DocumentId, request: Request, session: SessionDep, access: Writer) -> DocumentOut:
    document = service.reprocess(session, request.app.state.jobs, access, document_id, request=request)
    return service.document_out(session, document)


@router.get("/documents/{document_id}/passages", summary="The passages of the current (or a given) revision, in order")
def list_passages(
    document_id: DocumentId,
    session: SessionDep,
    access: Reader,
    page: Paging,
    revision_id: Annotated[uuid.UUID | None, Query(description="A revision of this document; default: the current one")] = None,
) -> Page[PassageOut]:
    document = service.get_document(session, access, document_id)
    passages, total, _revision = service.list_passages(session, access, document, revision_id, page)
    items = [PassageOut.model_validate(passage, from_attributes=True) for passage in passages]
    return Page(items=items, total=total, **page.model_dump())


def _download(store: BlobStore, sha256: str, filename: str, media_type: str) -> StreamingResponse:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
    stream: Iterator[bytes] = store.open_stream(sha256)
    return StreamingResponse(
        stream,
        media_type=media_type,
        headers={"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff",
                 "Content-Security-Policy": "sandbox"},
    )


@router.get(
    "/documents/{document_id}/download",
    summary="Download the current revision's original file",
    response_class=StreamingResponse,
)
def download_document(document_id: DocumentId, session: SessionDep, access: Reader, store: BlobStoreDep) -> StreamingResponse:
    document = service.get_document(session, access, document_id)
    revision = service.current_revision(session, document)
    if revision is None:
        raise AppError("This document has no file yet", status_code=404, code="revision_not_found")
    return _download(store, revision.sha256, revision.filename, revision.media_type)


@router.get(
    "/documents/{document_id}/revisions/{revision_id}/download",
    summary="Download one revision's original file",
    response_class=StreamingResponse,
)
def download_revision(
    document_id: DocumentId, revision_id: RevisionId, session: SessionDep, access: Reader, store: BlobStoreDep
) -> StreamingResponse:
    revision = service.get_revision(session, access, document_id, revision_id)
    return _download(store, revision.sha256, revision.filename, revision.media_type)
