"""The mapping engine: rank standards for a passage of evidence, with a calibrated confidence.

Pure CPU, no database, no network: build it from `Standard`s once (well under a second for all six
built-in catalogs) and call `rank`, `rank_many` or `suggest` as often as needed; an engine is
immutable and safe to share between threads.

    engine = MappingEngine.build(standards)
    engine.rank("The board approves the budget each year", context="Finance > Budget", top=5)
    engine.suggest(passage_text, context=headings, threshold=0.5)

The model is BM25 over stemmed words and word pairs of each standard's title, text, typical
evidence and place in the tree (weighted fields), with optional pseudo-relevance feedback; a
passage's surrounding headings (`context`) count as extra, down-weighted query words. Results are
sorted by score, ties by standard id, so the same input always gives the same output.

`HybridEngine` (the optional `dense` extra, see `a3e.mapping.dense`) fuses that BM25 ranking with a
ranking by sentence-embedding similarity (reciprocal rank fusion), with the same methods. This
module never imports torch: the encoder is passed in, or loaded on `HybridEngine.build`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from a3e.mapping.bm25 import Bm25Index
from a3e.mapping.calibration import DEFAULT_CALIBRATION, DENSE_CALIBRATION, Calibration, match_features
from a3e.mapping.text import join_nonempty, terms


@dataclass(frozen=True)
class Standard:
    """What is indexed for one standard. `section` is its place in the tree as one string (e.g.
    "GV GOVERN > GV.OC Organizational Context"); `ancestors` the titles of the nodes above it."""

    id: str
    title: str
    text: str
    section: str | None = None
    evidence: str | None = None
    ancestors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Match:
    standard_id: str
    score: float
    confidence: float


@dataclass(frozen=True)
class EngineConfig:
    """The model's parameters. The defaults were chosen once for both crosswalk sets of the
    benchmark (see bench/bench_mapping.py), never per set or per query."""

    k1: float = 1.5
    b: float = 0.75
    # Field weights: how many times a field's words count in a standard's term frequencies.
    title_weight: float = 3.0
    text_weight: float = 1.0
    evidence_weight: float = 0.5  # not measurable on the crosswalks (they have none): a prior
    # The standard's section path and ancestors' titles. 0: on the crosswalks, indexing them only
    # added noise (every standard of a section shares its words); the query's headings do help.
    section_weight: float = 0.0
    # Query side: a passage's headings count this much per word relative to its own text.
    context_weight: float = 1.0
    # Word pairs ("risk assess"), as a share of a single word's weight; 0 turns them off.
    bigram_weight: float = 0.15
    # Query term frequency saturation (BM25's k3); None counts every repetition.
    query_k3: float | None = None
    stemming: bool = True
    # Pseudo-relevance feedback: add the `prf_terms` strongest terms of the `prf_docs` best
    # standards to the query, with `prf_weight` of the query's own weight. 0 docs turns it off.
    prf_docs: int = 0
    prf_terms: int = 10
    prf_weight: float = 0.3
    calibration: Calibration = field(default=DEFAULT_CALIBRATION)


DEFAULT_CONFIG = EngineConfig()


class _Ranking:
    """What both engines offer on top of their `score_many` and `_matches`: ranking one or many
    passages, and the suggestions worth showing a person."""

    standards: tuple[Standard, ...]
    _by_id: dict[str, Standard]

    def __len__(self) -> int:
        return len(self.standards)

    def standard(self, standard_id: str) -> Standard:
        return self._by_id[standard_id]

    def score_many(self, texts: Sequence[str], contexts: Sequence[str | None] | None = None) -> np.ndarray:
        raise NotImplementedError

    def _matches(self, row: np.ndarray, top: int) -> list[Match]:
        raise NotImplementedError

    def rank(self, text: str, *, context: str | None = None, top: int = 10) -> list[Match]:
        """The `top` standards for a passage, best first."""
        return self.rank_many([text], [context], top=top)[0]

    def rank_many(
        self, texts: Sequence[str], contexts: Sequence[str | None] | None = None, top: int = 10
    ) -> list[list[Match]]:
        """`rank` for many passages at once (scored in batches with numpy)."""
        if contexts is not None and len(contexts) != len(texts):
            raise ValueError("contexts must be None or have one entry per text")
        if top < 1:
            raise ValueError("top must be at least 1")
        if not texts:
            return []
        if len(self.standards) == 0:
            return [[] for _ in texts]
        return [self._matches(row, top) for row in self.score_many(texts, contexts)]

    def suggest(
        self, text: str, context: str | None = None, *, threshold: float = 0.5, limit: int = 5
    ) -> list[Match]:
        """The matches worth showing a person: confidence at least `threshold`, at most `limit`."""
        return self.suggest_many([text], [context], threshold=threshold, limit=limit)[0]

    def suggest_many(
        self,
        texts: Sequence[str],
        contexts: Sequence[str | None] | None = None,
        *,
        threshold: float = 0.5,
        limit: int = 5,
    ) -> list[list[Match]]:
        """`suggest` for many passages at once (a whole document)."""
        return [
            [m for m in ranked if m.confidence >= threshold]
            for ranked in self.rank_many(texts, contexts, top=limit)
        ]


class MappingEngine(_Ranking):
    def __init__(self, standards: Sequence[Standard], index: Bm25Index, config: EngineConfig) -> None:
        self.standards: tuple[Standard, ...] = tuple(standards)
        self.config = config
        self._index = index
        self._ids = [s.id for s in self.standards]
        # Ties are broken by id: the rank of each standard's id in sorted order.
        order = sorted(range(len(self._ids)), key=self._ids.__getitem__)
        self._id_rank = np.empty(len(order), dtype=np.int64)
        self._id_rank[order] = np.arange(len(order))
        self._by_id = {s.id: s for s in self.standards}

    @classmethod
    def build(cls, standards: Sequence[Standard], config: EngineConfig = DEFAULT_CONFIG) -> MappingEngine:
        seen: set[str] = set()
        for standard in standards:
            if standard.id in seen:
                raise ValueError(f"standard id {standard.id!r} appears twice; ids must be unique")
            seen.add(standard.id)
        documents = [_document_terms(standard, config) for standard in standards]
        return cls(standards, Bm25Index.build(documents, k1=config.k1, b=config.b), config)

    def score_many(self, texts: Sequence[str], contexts: Sequence[str | None] | None = None) -> np.ndarray:
        """The BM25 score of every standard (columns, in `standards` order) for each passage (rows)."""
        queries = [
            self._index.encode(_query_weights(text, None if contexts is None else contexts[i], self.config))
            for i, text in enumerate(texts)
        ]
        scores = self._index.score(queries)
        if self.config.prf_docs > 0 and len(self.standards) > 0:
            queries = [self._expand(q, row) for q, row in zip(queries, scores)]
            scores = self._index.score(queries)
        return scores

    def _order(self, row: np.ndarray, top: int) -> np.ndarray:
        positive = np.flatnonzero(row > 0)
        if positive.size == 0:
            return positive
        order = positive[np.lexsort((self._id_rank[positive], -row[positive]))]
        return order[:top]

    def _matches(self, row: np.ndarray, top: int) -> list[Match]:
        order = self._order(row, top)
        if order.size == 0:
            return []
        top_scores = row[order]
        confidence = self.config.calibration.confidence(match_features(row, top_scores))
        return [
            Match(self._ids[i], round(float(s), 6), round(float(c), 4))
            for i, s, c in zip(order, top_scores, confidence)
        ]

    def _expand(self, query: tuple[np.ndarray, np.ndarray], row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RM3-style feedback: mix the query with the strongest terms of its best standards."""
        config = self.config
        best = self._order(row, config.prf_docs)
        terms_, weights = query
        if best.size == 0 or terms_.size == 0:
            return query
        mass: dict[int, float] = {}
        for doc in best:
            doc_terms, doc_weights = self._index.document_terms(int(doc))
            total = float(doc_weights.sum()) or 1.0
            for t, w in zip(doc_terms.tolist(), doc_weights.tolist()):
                mass[t] = mass.get(t, 0.0) + w / total
        strongest = sorted(mass.items(), key=lambda kv: (-kv[1], kv[0]))[: config.prf_terms]
        scale = config.prf_weight * float(weights.sum()) / (sum(w for _, w in strongest) or 1.0)
        combined = dict(zip(terms_.tolist(), weights.tolist()))
        for t, w in strongest:
            combined[t] = combined.get(t, 0.0) + scale * w
        ordered = sorted(combined.items())
        return (
            np.fromiter((t for t, _ in ordered), dtype=np.int64, count=len(ordered)),
            np.fromiter((w for _, w in ordered), dtype=np.float64, count=len(ordered)),
        )


def _document_terms(standard: Standard, config: EngineConfig) -> dict[str, float]:
    bigrams = config.bigram_weight > 0
    frequencies: Counter[str] = Counter()
    fields = (
        (standard.title, config.title_weight),
        (standard.text, config.text_weight),
        (standard.evidence, config.evidence_weight),
        (join_nonempty([standard.section, *standard.ancestors], " . "), config.section_weight),
    )
    for value, weight in fields:
        if value and weight > 0:
            for term in terms(value, bigrams, config.stemming):
                frequencies[term] += weight
    return dict(frequencies)


def _query_weights(text: str, context: str | None, config: EngineConfig) -> Mapping[str, float]:
    bigrams = config.bigram_weight > 0
    counts: Counter[str] = Counter()
    for value, weight in ((text, 1.0), (context, config.context_weight)):
        if value and weight > 0:
            for term in terms(value, bigrams, config.stemming):
                counts[term] += weight * (config.bigram_weight if " " in term else 1.0)
    k3 = config.query_k3
    if k3 is None:
        return counts
    return {t: c * (k3 + 1.0) / (c + k3) for t, c in counts.items()}


# --- dense fusion (the optional `dense` extra) -------------------------------------------------------


class TextEncoder(Protocol):
    """Texts → unit-length vectors, one row per text (`a3e.mapping.dense.Encoder`)."""

    dimension: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class DenseConfig:
    """How the embedding ranking is fused with BM25's. The defaults are the best point of a small
    grid on both crosswalk sets together (bench/bench_mapping.py --dense, which also reports the
    figures with the setting chosen on the other set: cross-validated)."""

    # Reciprocal rank fusion: a standard scores Σ weight / (rrf_k + its rank) over the two
    # rankings; a small k lets the top of each ranking dominate.
    rrf_k: float = 5.0
    lexical_weight: float = 1.0
    dense_weight: float = 1.5
    # Which of the passage's headings ("A > B > C") the embedding sees before the text: "last"
    # (C), "all", or "none". BM25 keeps its own use of the headings (EngineConfig.context_weight).
    query_headings: str = "all"
    calibration: Calibration = field(default=DENSE_CALIBRATION)

    def __post_init__(self) -> None:
        if self.query_headings not in ("last", "all", "none"):
            raise ValueError("query_headings must be 'last', 'all' or 'none'")
        if self.rrf_k <= 0 or self.lexical_weight < 0 or self.dense_weight < 0:
            raise ValueError("rrf_k must be positive and the weights not negative")


DEFAULT_DENSE_CONFIG = DenseConfig()


def standard_passage(standard: Standard) -> str:
    """What the embedding of a standard is computed from: its title and text."""
    return join_nonempty([standard.title, standard.text], ". ")


def dense_query(text: str, context: str | None, headings: str) -> str:
    if not context or headings == "none":
        return text
    heading = context if headings == "all" else context.split(" > ")[-1]
    return f"{heading.strip()}. {text}" if heading.strip() else text


class HybridEngine(_Ranking):
    """BM25 fused with dense embeddings: the same interface as `MappingEngine`.

    Every standard gets a fused score (the embedding ranks them all), so unlike BM25 alone a
    passage that shares no word with a standard can still rank it; the calibrated confidence and
    the suggestion threshold decide what is shown. Encoding passages is the expensive part (tens of
    passages a second on two cores): run it in a job worker, never in a web request.
    """

    def __init__(
        self, lexical: MappingEngine, vectors: np.ndarray, encoder: TextEncoder, config: DenseConfig
    ) -> None:
        self.lexical = lexical
        self.standards = lexical.standards
        self.config = config
        self._vectors = vectors
        self._encoder = encoder
        self._ids = lexical._ids
        self._id_rank = lexical._id_rank
        self._by_id = lexical._by_id

    @classmethod
    def build(
        cls,
        standards: Sequence[Standard],
        config: EngineConfig = DEFAULT_CONFIG,
        dense: DenseConfig = DEFAULT_DENSE_CONFIG,
        *,
        encoder: TextEncoder | None = None,
    ) -> HybridEngine:
        """Index the standards for both models. Without `encoder`, the process's shared encoder is
        loaded (`a3e.mapping.dense.load_encoder`; DenseUnavailable when the extra is missing)."""
        if encoder is None:
            from a3e.mapping.dense import load_encoder

            encoder = load_encoder()
        lexical = MappingEngine.build(standards, config)
        vectors = encoder.encode([standard_passage(s) for s in lexical.standards])
        return cls(lexical, vectors, encoder, dense)

    def score_many(self, texts: Sequence[str], contexts: Sequence[str | None] | None = None) -> np.ndarray:
        """The fused score of every standard (columns) for each passage (rows)."""
        config = self.config
        lexical = self.lexical.score_many(texts, contexts)
        queries = [
            dense_query(text, None if contexts is None else contexts[i], config.query_headings)
            for i, text in enumerate(texts)
        ]
        similarity = self._encoder.encode(queries).astype(np.float64) @ self._vectors.T.astype(np.float64)
        fused = config.dense_weight / (config.rrf_k + self._ranks(similarity))
        # A standard BM25 gave nothing (no shared term) gets no lexical vote, not a low-rank one.
        fused += np.where(lexical > 0, config.lexical_weight / (config.rrf_k + self._ranks(lexical)), 0.0)
        return fused

    def _ranks(self, scores: np.ndarray) -> np.ndarray:
        """1-based rank of each standard in each row (score descending, ties by id)."""
        order = np.lexsort((np.broadcast_to(self._id_rank, scores.shape), -scores), axis=-1)
        ranks = np.empty(scores.shape, dtype=np.float64)
        np.put_along_axis(ranks, order, np.arange(1, scores.shape[1] + 1, dtype=np.float64)[None, :].repeat(len(scores), 0), axis=1)
        return ranks

    def _matches(self, row: np.ndarray, top: int) -> list[Match]:
        order = np.lexsort((self._id_rank, -row))[:top]
        top_scores = row[order]
        confidence = self.config.calibration.confidence(match_features(row, top_scores))
        return [
            Match(self._ids[i], round(float(s), 6), round(float(c), 4))
            for i, s, c in zip(order, top_scores, confidence)
        ]
