"""Background jobs of the evidence library: extracting a revision into passages, removing blobs
nobody references, and resuming processing that stalled.

Every job is idempotent: a revision already processed is left alone, passages are written in one
transaction together with the revision's new state, and a blob is removed only while no revision
references it.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from a3e.core.models import utcnow
from a3e.jobs import JobContext, crontab, job
from a3e.webhooks import events as webhook_events
from a3e.webhooks.publish import publish

logger = logging.getLogger("a3e.evidence")

# A revision is tried this many times (the job's own retries included) before it is failed for good.
MAX_PROCESSING_ATTEMPTS = 5
# Queued for longer than this without starting (the queue lost it, or it was down when the upload
# was committed): queued again. Processing for longer than this: its worker died; queued again.
STALLED_QUEUED = timedelta(minutes=10)
STALLED_PROCESSING = timedelta(minutes=15)
# Blobs unreferenced for this long are removed by the sweep (deletions also remove them at once).
UNREFERENCED_GRACE = timedelta(hours=1)

def _store(context: JobContext) -> Any:
    """The runtime's blob store, built once (an S3 client is worth reusing)."""
    from a3e.evidence.storage import blob_store_from_settings

    if context.runtime is None:
        return blob_store_from_settings(context.settings)
    return context.runtime.resource("evidence.blob_store", lambda: blob_store_from_settings(context.settings))


def _mark_failed(context: JobContext, exc: BaseException, revision_id: str, *_: Any, **__: Any) -> None:
    """The job's on_failure: retries exhausted, or an error no retry would mend."""
    reason = getattr(exc, "reason", None) or f"processing failed: {exc.__class__.__name__}: {str(exc)[:300]}"
    _finish_failed(context, revision_id, reason)


def _finish_failed(context: JobContext, revision_id: str, reason: str) -> None:
    """The revision is failed with `reason`, unless another run has made it ready meanwhile."""
    from a3e.evidence.models import Revision, RevisionStatus

    with context.transaction() as session:
        revision = session.get(Revision, uuid.UUID(revision_id))
        if revision is not None and revision.status != RevisionStatus.READY.value:
            revision.status = RevisionStatus.FAILED.value
            revision.status_detail = reason
            revision.status_changed_at = utcnow()
            publish(session, revision.workspace_id, "document.failed",
                    lambda: webhook_events.document_failed(session, revision), runtime=context.runtime)
    logger.warning("revision %s failed: %s", revision_id, reason)


@job("evidence.process_revision", retries=3, retry_delay=5.0, on_failure=_mark_failed)
def process_revision(context: JobContext, revision_id: str) -> str:
    """Extract a revision's text into passages. Returns the revision's final status."""
    from a3e.evidence.extraction import ExtractionFailed, UnsupportedFile, extract_isolated, split_passages
    from a3e.evidence.models import Passage, Revision, RevisionStatus
    from a3e.evidence.service import hold_document
    from a3e.evidence.storage import LocalBlobStore

    with context.transaction() as session:
        revision = session.get(Revision, uuid.UUID(revision_id))
        if revision is None:
            return "gone"  # deleted meanwhile
        if revision.status in (RevisionStatus.READY.value, RevisionStatus.FAILED.value):
            return revision.status
        revision.status = RevisionStatus.PROCESSING.value
        revision.status_changed_at = utcnow()
        revision.attempts += 1
        sha256, kind, document_id = revision.sha256, revision.kind, revision.document_id

    store = _store(context)
    try:
        if isinstance(store, LocalBlobStore):  # read in place: no copy, no scratch directory
            extracted = extract_isolated(store.path_for(sha256), kind)
        else:
            with tempfile.TemporaryDirectory(prefix="a3e-revision-") as scratch:
                path = Path(scratch) / f"content.{kind}"
                store.download_to(sha256, path)
                extracted = extract_isolated(path, kind)
        drafts = split_passages(extracted)
    except (ExtractionFailed, UnsupportedFile) as exc:
        _finish_failed(context, revision_id, exc.reason)
        return RevisionStatus.FAILED.value

    with context.transaction() as session:
        if not hold_document(session, document_id):  # the document first: see hold_document
            return "gone"
        revision = session.scalar(select(Revision).where(Revision.id == uuid.UUID(revision_id)).with_for_update())
        if revision is None:
            return "gone"
        if revision.status == RevisionStatus.READY.value:
            return revision.status  # another run got there first
        rows = [
            {
                "revision_id": revision.id,
                "document_id": revision.document_id,
                "workspace_id": revision.workspace_id,
                "ordinal": draft.ordinal,
                "text": draft.text,
                "page": draft.page,
                "char_start": draft.char_start,
                "char_end": draft.char_end,
                "heading": draft.heading or None,
                "location": (draft.location or None) and draft.location[:200],
            }
            for draft in drafts
        ]
        if rows:
            session.execute(insert(Passage), rows)
        revision.status = RevisionStatus.READY.value
        revision.status_detail = extracted.message
        revision.status_changed_at = revision.processed_at = utcnow()
        revision.page_count = extracted.page_count
        revision.passage_count = len(rows)
        revision.character_count = len(extracted.text)
        publish(session, revision.workspace_id, "document.processed",
                lambda: webhook_events.document_processed(session, revision), runtime=context.runtime)
    if context.runtime is not None and rows:
        context.runtime.enqueue("mapping.map_revision", revision_id)  # against every selected catalog
    return RevisionStatus.READY.value


@job("evidence.collect_blob", retries=5, retry_delay=10.0)
def collect_blob(context: JobContext, sha256: str) -> bool:
    from a3e.evidence.service import collect_blob as collect

    with context.transaction() as session:
        return collect(session, _store(context), sha256)


@job("evidence.resume_stalled", schedule=crontab(minute="*/5"), retries=0)
def resume_stalled(context: JobContext) -> dict[str, int]:
    """Queue again what stalled (so that no document stays queued or processing for ever), fail
    what was tried too often, and remove blobs left unreferenced."""
    from a3e.evidence.models import Revision, RevisionStatus
    from a3e.evidence.service import collect_blob as collect
    from a3e.evidence.service import unreferenced_blobs

    if not context.schema_ready():
        return {"requeued": 0, "failed": 0, "blobs_removed": 0}
    now = utcnow()
    requeue: list[str] = []
    failed = 0
    with context.transaction() as session:
        stalled = session.scalars(
            select(Revision).where(
                ((Revision.status == RevisionStatus.QUEUED.value) & (Revision.status_changed_at < now - STALLED_QUEUED))
                | (
                    (Revision.status == RevisionStatus.PROCESSING.value)
                    & (Revision.status_changed_at < now - STALLED_PROCESSING)
                )
            ).limit(1000)
        ).all()
        for revision in stalled:
            if revision.attempts >= MAX_PROCESSING_ATTEMPTS:
                revision.status = RevisionStatus.FAILED.value
                revision.status_detail = f"processing did not finish after {revision.attempts} attempts"
                publish(session, revision.workspace_id, "document.failed",
                        lambda: webhook_events.document_failed(session, revision), runtime=context.runtime)
                failed += 1
            else:
                revision.status = RevisionStatus.QUEUED.value
                requeue.append(str(revision.id))
            revision.status_changed_at = now
    runtime = context.runtime
    for revision_id in requeue:
        runtime.enqueue(process_revision, revision_id)
    removed = 0
    store = _store(context)
    with context.transaction() as session:
        candidates = unreferenced_blobs(session, older_than=UNREFERENCED_GRACE)
    for sha256 in candidates:
        with context.transaction() as session:
            removed += int(collect(session, store, sha256))
    if requeue or failed or removed:
        logger.info(
            "evidence: %d stalled revisions queued again, %d failed after too many attempts, %d blobs removed",
            len(requeue), failed, removed,
        )
    return {"requeued": len(requeue), "failed": failed, "blobs_removed": removed}
