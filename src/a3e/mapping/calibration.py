"""Confidence: the probability that a ranked standard is one a person would link, from score features.

A raw BM25 score means nothing across queries (it grows with the passage's length and its rare
words), so the confidence is a logistic model (Platt scaling) of features that compare a match
with the rest of its own ranking:

- `relative`: score / best score of this passage (1 for the top match);
- `z`: how far the score stands above the catalog's scores for this passage, in standard deviations;
- `log_rank`: log of the match's rank (1 for the top).

Each is monotone in the score within one ranking, and the coefficients are constrained to the sign
that keeps the confidence monotone too: a higher score never gets a lower confidence.

The shipped coefficients were fitted on the two crosswalk sets of the development benchmark
(pooled, every query's top 10). Refit with `python bench/bench_mapping.py --refit`, which prints
the constants to paste here, and the reliability table measured across the two sets (fitted on
one, measured on the other).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FEATURES = ("relative", "z", "log_rank")
# The sign each coefficient must have for the confidence to grow with the score.
MONOTONE_SIGNS = (1.0, 1.0, -1.0)


@dataclass(frozen=True)
class Calibration:
    intercept: float
    relative: float
    z: float
    log_rank: float

    def confidence(self, features: np.ndarray) -> np.ndarray:
        """`features`: rows of (relative, z, log_rank) → probabilities in [0, 1]."""
        if features.size == 0:
            return np.zeros(0)
        logit = self.intercept + features @ np.array([self.relative, self.z, self.log_rank])
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -40.0, 40.0)))


# Fitted by `python bench/bench_mapping.py --refit` on both crosswalk sets with the default EngineConfig.
DEFAULT_CALIBRATION = Calibration(intercept=-3.3275, relative=0.9774, z=0.4638, log_rank=0.0)
# The same model over HybridEngine's fused scores: `python bench/bench_mapping.py --dense --refit`.
DENSE_CALIBRATION = Calibration(intercept=-3.1542, relative=0.4891, z=0.5349, log_rank=0.0)


def match_features(scores: np.ndarray, top_scores: np.ndarray) -> np.ndarray:
    """Features of the ranked `top_scores` (best first) against all of a passage's `scores`."""
    if top_scores.size == 0:
        return np.zeros((0, len(FEATURES)))
    best = float(top_scores[0])
    spread = float(scores.std())
    relative = top_scores / best if best > 0 else np.zeros_like(top_scores)
    z = (top_scores - float(scores.mean())) / spread if spread > 0 else np.zeros_like(top_scores)
    log_rank = np.log(np.arange(1, top_scores.size + 1, dtype=np.float64))
    return np.column_stack([relative, z, log_rank])


def fit(features: np.ndarray, labels: np.ndarray, *, l2: float = 1e-3, iterations: int = 100) -> Calibration:
    """Logistic regression by Newton's method, then any coefficient of the wrong sign (which would
    make confidence fall as the score rises) is fixed at 0 and the rest refitted."""
    active = list(range(features.shape[1]))
    while True:
        weights = _newton(features[:, active], labels, l2=l2, iterations=iterations)
        wrong = [i for i, w in zip(active, weights[1:]) if w * MONOTONE_SIGNS[i] < 0]
        if not wrong:
            break
        active = [i for i in active if i not in wrong]
    full = [0.0] * features.shape[1]
    for i, w in zip(active, weights[1:]):
        full[i] = float(w)
    return Calibration(float(weights[0]), *full)


def _newton(x: np.ndarray, y: np.ndarray, *, l2: float, iterations: int) -> np.ndarray:
    design = np.column_stack([np.ones(len(x)), x])
    w = np.zeros(design.shape[1])
    penalty = l2 * np.eye(design.shape[1])
    penalty[0, 0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -40, 40)))
        gradient = design.T @ (p - y) + penalty @ w
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return w


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    count: int
    mean_confidence: float
    precision: float


def reliability(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> tuple[list[ReliabilityBin], float]:
    """Equal-width bins of confidence vs observed precision, and the expected calibration error
    (the bins' |precision − confidence| weighted by their share of the suggestions)."""
    conf = np.asarray(confidences, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    table: list[ReliabilityBin] = []
    ece = 0.0
    for i in range(bins):
        low, high = i / bins, (i + 1) / bins
        inside = (conf >= low) & ((conf < high) if i < bins - 1 else (conf <= high))
        count = int(inside.sum())
        if count == 0:
            table.append(ReliabilityBin(low, high, 0, math.nan, math.nan))
            continue
        mean_conf, precision = float(conf[inside].mean()), float(hit[inside].mean())
        table.append(ReliabilityBin(low, high, count, mean_conf, precision))
        ece += count / max(len(conf), 1) * abs(precision - mean_conf)
    return table, ece
