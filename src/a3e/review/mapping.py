"""Mapping in the background: each processed revision is ranked against every catalog the
workspace selected, and the matches confident enough become pending suggestions.

Re-mapping is idempotent: a suggestion already made for a passage and standard is not made again,
and one that was rejected — for this passage, or for the same text in an earlier revision of the
document — never comes back. Triggers: a revision becomes ready (`evidence.process_revision`), a
catalog is selected (`mapping.map_selection`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import uuid
from typing import Any

from sqlalchemy import select

from a3e.core.models import utcnow
from a3e.jobs import JobContext, job

logger = logging.getLogger("a3e.mapping")

ENGINE_NAME = "bm25-1"
# With A3E_MAPPING_DENSE and the dense extra: BM25 fused with sentence embeddings.
DENSE_ENGINE_NAME = "hybrid-1"
# Suggestions are shown from this calibrated confidence up, at most SUGGEST_LIMIT per passage and
# catalog. On the benchmark (bench/RESULTS.md, reliability table), matches between 0.3 and 0.5
# were right 28–44 % of the time and those from 0.5 up 52–80 %: a reviewer sees fewer than one
# wrong suggestion in two, and the engine's confident top matches are not hidden.
SUGGEST_THRESHOLD = 0.35
SUGGEST_LIMIT = 3
MAP_JOB = "mapping.map_revision"
MAP_SELECTION_JOB = "mapping.map_selection"


def passage_digest(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def dense_available() -> bool:
    """Whether dense mapping can run in this process; when not, the reason is logged once."""
    from a3e.mapping.dense import DenseUnavailable, dense_unavailable, load_encoder

    reason = dense_unavailable()
    if reason is None:
        try:
            load_encoder()
        except (DenseUnavailable, OSError, ValueError) as exc:
            reason = f"the dense model could not be loaded: {exc}"
    if reason is not None:
        logger.warning("A3E_MAPPING_DENSE is set but %s; mapping with BM25 alone", reason)
        return False
    return True


def _build_engine(standards: Any, dense: bool) -> Any:
    from a3e.mapping.engine import HybridEngine, MappingEngine

    return HybridEngine.build(standards) if dense else MappingEngine.build(standards)


@functools.lru_cache(maxsize=32)
def _builtin_engine(code: str, edition: str, dense: bool = False) -> Any:
    from a3e.mapping.catalogs import builtin_standards

    return _build_engine(builtin_standards(code, edition), dense)


_custom_engines: dict[tuple[uuid.UUID, str, bool], Any] = {}


def engine_for(session: Any, selection: Any, *, dense: bool = False) -> Any | None:
    """The engine over one selected catalog (built once per catalog, content and kind)."""
    from a3e.mapping.engine import Standard
    from a3e.standards.models import CustomCatalog, CustomStandard

    if selection.kind == "builtin":
        from a3e.mapping.catalogs import UnknownFramework

        try:
            return _builtin_engine(selection.accreditor_code, selection.edition, dense)
        except UnknownFramework:
            return None  # an edition this release no longer ships
    custom = session.get(CustomCatalog, selection.custom_catalog_id)
    if custom is None:
        return None
    key = (custom.id, custom.content_sha256, dense)
    engine = _custom_engines.get(key)
    if engine is None:
        rows = session.execute(
            select(CustomStandard.code, CustomStandard.title, CustomStandard.text, CustomStandard.parent_code)
            .where(CustomStandard.catalog_id == custom.id)
            .order_by(CustomStandard.position)
        ).all()
        titles = {code: title for code, title, _, _ in rows}
        parents = {code: parent for code, _, _, parent in rows}
        standards = []
        for code, title, text, parent in rows:
            ancestors: list[str] = []
            while parent is not None and parent in titles and len(ancestors) < 32:  # the validator bounds depth
                ancestors.append(titles[parent])
                parent = parents[parent]
            standards.append(Standard(id=code, title=title, text=text or "", ancestors=tuple(reversed(ancestors))))
        engine = _build_engine(standards, dense)
        if len(_custom_engines) > 64:
            _custom_engines.clear()
        _custom_engines[key] = engine
    return engine


def map_revision_now(session: Any, revision_id: uuid.UUID, *, dense: bool = False) -> dict[str, int]:
    """Map one revision against each of its workspace's catalogs; returns suggestions added per catalog.
    `dense` asks for the hybrid engine; without the dense extra it falls back to BM25 (logged)."""
    from a3e.evidence.models import Passage, Revision, RevisionStatus
    from a3e.evidence.service import hold_document
    from a3e.review.models import MappingRun, Suggestion, SuggestionStatus
    from a3e.standards.models import CatalogSelection

    revision = session.get(Revision, revision_id)
    if revision is None or revision.status != RevisionStatus.READY.value:
        return {}
    if not hold_document(session, revision.document_id):  # before any insert under it: see hold_document
        return {}
    passages = session.execute(
        select(Passage.id, Passage.text, Passage.heading).where(Passage.revision_id == revision.id).order_by(Passage.ordinal)
    ).all()
    selections = session.scalars(
        select(CatalogSelection).where(CatalogSelection.workspace_id == revision.workspace_id)
    ).all()
    dense = dense and dense_available()
    engine_name = DENSE_ENGINE_NAME if dense else ENGINE_NAME
    added: dict[str, int] = {}
    for selection in selections:
        run = session.get(MappingRun, (revision.id, selection.id))
        if run is None:
            run = MappingRun(revision_id=revision.id, selection_id=selection.id, workspace_id=revision.workspace_id,
                             status="running", engine=engine_name, suggestions=0)
            session.add(run)
        engine = engine_for(session, selection, dense=dense)
        if engine is None:
            run.status, run.detail, run.updated_at = "failed", "the catalog is no longer available", utcnow()
            continue
        matches = engine.suggest_many(
            [text for _, text, _ in passages], [heading for _, _, heading in passages],
            threshold=SUGGEST_THRESHOLD, limit=SUGGEST_LIMIT,
        ) if passages else []
        existing = set(
            session.execute(
                select(Suggestion.passage_id, Suggestion.standard_code).where(
                    Suggestion.selection_id == selection.id, Suggestion.revision_id == revision.id
                )
            ).all()
        )
        rejected = set(
            session.execute(
                select(Suggestion.standard_code, Suggestion.passage_digest).where(
                    Suggestion.selection_id == selection.id, Suggestion.document_id == revision.document_id,
                    Suggestion.status == SuggestionStatus.REJECTED.value,
                )
            ).all()
        )
        count = 0
        for (passage_id, text, _), ranked in zip(passages, matches):
            digest = passage_digest(text)
            for rank, match in enumerate(ranked, start=1):
                if (passage_id, match.standard_id) in existing or (match.standard_id, digest) in rejected:
                    continue
                session.add(Suggestion(
                    workspace_id=revision.workspace_id, selection_id=selection.id, standard_code=match.standard_id,
                    passage_id=passage_id, document_id=revision.document_id, revision_id=revision.id,
                    passage_digest=digest, confidence=min(1.0, max(0.0, float(match.confidence))), rank=rank,
                    engine=engine_name, status=SuggestionStatus.PENDING.value, created_at=utcnow(),
                ))
                count += 1
        run.status, run.suggestions, run.detail, run.updated_at = "done", run.suggestions + count, None, utcnow()
        added[str(selection.id)] = count
    return added


@job(MAP_JOB, retries=3, retry_delay=5.0)
def map_revision(context: JobContext, revision_id: str) -> dict[str, int]:
    with context.transaction() as session:
        added = map_revision_now(session, uuid.UUID(revision_id), dense=context.settings.mapping_dense)
    if added:
        logger.info("revision %s mapped: %s", revision_id, added)
    return added


@job(MAP_SELECTION_JOB, retries=3, retry_delay=5.0)
def map_selection(context: JobContext, selection_id: str) -> int:
    """A newly selected catalog: map every current, processed revision of the workspace."""
    from a3e.evidence.models import Document, Revision, RevisionStatus
    from a3e.standards.models import CatalogSelection

    with context.transaction() as session:
        selection = session.get(CatalogSelection, uuid.UUID(selection_id))
        if selection is None:
            return 0
        revision_ids = session.scalars(
            select(Revision.id)
            .join(Document, Document.current_revision_id == Revision.id)
            .where(Revision.workspace_id == selection.workspace_id, Revision.status == RevisionStatus.READY.value)
        ).all()
    for revision_id in revision_ids:
        context.runtime.enqueue(map_revision, str(revision_id))
    return len(revision_ids)


def progress(session: Any, workspace_id: uuid.UUID) -> dict[str, Any]:
    """How far mapping has got: current processed revisions × selected catalogs, and runs done."""
    from sqlalchemy import func

    from a3e.evidence.models import Document, Revision, RevisionStatus
    from a3e.review.models import MappingRun, Suggestion, SuggestionStatus
    from a3e.standards.models import CatalogSelection

    catalogs = session.scalar(select(func.count()).select_from(CatalogSelection).where(
        CatalogSelection.workspace_id == workspace_id)) or 0
    ready = select(Revision.id).join(Document, Document.current_revision_id == Revision.id).where(
        Revision.workspace_id == workspace_id, Revision.status == RevisionStatus.READY.value)
    documents = session.scalar(select(func.count()).select_from(ready.subquery())) or 0
    done = session.scalar(select(func.count()).select_from(MappingRun).where(
        MappingRun.workspace_id == workspace_id, MappingRun.status == "done", MappingRun.revision_id.in_(ready))) or 0
    pending = session.scalar(select(func.count()).select_from(Suggestion).where(
        Suggestion.workspace_id == workspace_id, Suggestion.status == SuggestionStatus.PENDING.value)) or 0
    expected = documents * catalogs
    return {
        "documents_ready": documents,
        "catalogs": catalogs,
        "runs_expected": expected,
        "runs_done": done,
        "complete": expected == 0 or done >= expected,
        "pending_suggestions": pending,
        "threshold": SUGGEST_THRESHOLD,
        "engine": ENGINE_NAME,
    }
