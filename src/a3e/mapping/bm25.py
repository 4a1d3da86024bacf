"""A BM25 index over weighted fields, scored for many queries at once with numpy.

Each standard is one document whose term frequencies are the weighted sum of its fields' counts
(title counted `title_weight` times, and so on: BM25F's simple form, one saturation over all
fields). Document weights w(t, d) = idf(t) · tf·(k1+1) / (tf + k1·(1 − b + b·len/avglen)) are
computed once at build time, so scoring a query is a sparse dot product: Σ_t q(t)·w(t, d).
The postings are kept by term (CSR), and a batch of queries is scored with one `bincount`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Scoring this many queries at once bounds the dense score block (queries × documents) in memory.
BATCH = 256


@dataclass(frozen=True)
class Bm25Index:
    vocabulary: Mapping[str, int]
    idf: np.ndarray  # per term
    term_ptr: np.ndarray  # postings of term t: term_ptr[t]:term_ptr[t + 1]
    post_doc: np.ndarray
    post_weight: np.ndarray
    doc_ptr: np.ndarray  # the same weights by document, for pseudo-relevance feedback
    doc_term: np.ndarray
    doc_weight: np.ndarray
    size: int  # documents

    @classmethod
    def build(cls, documents: Sequence[Mapping[str, float]], *, k1: float, b: float) -> Bm25Index:
        """`documents`: per document, its weighted term frequencies."""
        vocabulary: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        tfs: list[float] = []
        for doc, frequencies in enumerate(documents):
            for term in sorted(frequencies):  # sorted: the same index for the same input
                rows.append(doc)
                cols.append(vocabulary.setdefault(term, len(vocabulary)))
                tfs.append(frequencies[term])
        size = len(documents)
        doc_ids = np.asarray(rows, dtype=np.int64)
        term_ids = np.asarray(cols, dtype=np.int64)
        tf = np.asarray(tfs, dtype=np.float64)
        lengths = np.bincount(doc_ids, weights=tf, minlength=size)
        average = float(lengths.mean()) if size and lengths.mean() > 0 else 1.0
        df = np.bincount(term_ids, minlength=len(vocabulary)).astype(np.float64)
        idf = np.log1p((size - df + 0.5) / (df + 0.5))
        norm = k1 * (1.0 - b + b * lengths[doc_ids] / average)
        weight = idf[term_ids] * tf * (k1 + 1.0) / (tf + norm)

        by_term = np.lexsort((doc_ids, term_ids))
        term_ptr = np.zeros(len(vocabulary) + 1, dtype=np.int64)
        np.cumsum(np.bincount(term_ids, minlength=len(vocabulary)), out=term_ptr[1:])
        doc_ptr = np.zeros(size + 1, dtype=np.int64)
        np.cumsum(np.bincount(doc_ids, minlength=size), out=doc_ptr[1:])  # rows are already by doc
        return cls(
            vocabulary=vocabulary,
            idf=idf,
            term_ptr=term_ptr,
            post_doc=doc_ids[by_term],
            post_weight=weight[by_term],
            doc_ptr=doc_ptr,
            doc_term=term_ids,
            doc_weight=weight,
            size=size,
        )

    def encode(self, weights: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """A query's known terms as (term ids, weights), in a stable order; unknown terms score nothing."""
        known = sorted((self.vocabulary[t], w) for t, w in weights.items() if t in self.vocabulary and w > 0)
        return (
            np.fromiter((t for t, _ in known), dtype=np.int64, count=len(known)),
            np.fromiter((w for _, w in known), dtype=np.float64, count=len(known)),
        )

    def score(self, queries: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Scores (queries × documents) for encoded queries."""
        out = np.zeros((len(queries), self.size), dtype=np.float64)
        for start in range(0, len(queries), BATCH):
            block = queries[start : start + BATCH]
            out[start : start + len(block)] = self._score_block(block)
        return out

    def _score_block(self, block: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        n = len(block)
        if n == 0 or self.size == 0:
            return np.zeros((n, self.size))
        query_of = np.concatenate([np.full(len(terms), i, dtype=np.int64) for i, (terms, _) in enumerate(block)])
        terms = np.concatenate([terms for terms, _ in block])
        qweight = np.concatenate([weights for _, weights in block])
        starts, ends = self.term_ptr[terms], self.term_ptr[terms + 1]
        counts = ends - starts
        total = int(counts.sum())
        if total == 0:
            return np.zeros((n, self.size))
        # Positions of every posting of every query term, without a Python loop over terms.
        offsets = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(total)
        keys = np.repeat(query_of, counts) * self.size + self.post_doc[offsets]
        values = np.repeat(qweight, counts) * self.post_weight[offsets]
        return np.bincount(keys, weights=values, minlength=n * self.size).reshape(n, self.size)

    def document_terms(self, doc: int) -> tuple[np.ndarray, np.ndarray]:
        span = slice(self.doc_ptr[doc], self.doc_ptr[doc + 1])
        return self.doc_term[span], self.doc_weight[span]
