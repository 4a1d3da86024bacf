"""Reading the crosswalk evaluation format and scoring rankings against its labels.

Catalog: a JSON list of {"id", "title", "text", "section"?}. Queries: JSON lines of
{"qid", "text", "section"?, "relevant"?: [ids]}. Metrics, over the queries that have `relevant`:
R@k = |relevant ∩ top k| / |relevant| (averaged), Hit@k = share with a relevant id in the top k,
MRR = mean of 1 / rank of the first relevant id (0 when none is ranked).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from a3e.mapping.engine import Standard


class EvaluationInputError(ValueError):
    """An input file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class Query:
    qid: str
    text: str
    section: str | None = None
    relevant: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Metrics:
    queries: int
    recall_at_1: float
    recall_at_5: float
    recall_at_10: float
    mrr: float
    hit_at_5: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "queries": self.queries,
            "R@1": self.recall_at_1,
            "R@5": self.recall_at_5,
            "R@10": self.recall_at_10,
            "MRR": self.mrr,
            "Hit@5": self.hit_at_5,
        }


def _text_field(value: object, where: str, name: str, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise EvaluationInputError(f"{where}: {name!r} must be {'non-empty ' if required else ''}text")
    return value


def load_catalog(path: Path) -> list[Standard]:
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvaluationInputError(f"{path}: cannot read the catalog: {exc.strerror or exc}") from None
    try:
        items = json.loads(raw)
    except ValueError as exc:
        raise EvaluationInputError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(items, list) or not items:
        raise EvaluationInputError(f"{path}: a catalog must be a non-empty JSON list of items")
    standards: list[Standard] = []
    seen: set[str] = set()
    for number, item in enumerate(items, start=1):
        where = f"{path}: item {number}"
        if not isinstance(item, dict):
            raise EvaluationInputError(f"{where}: must be an object with id, title, text")
        standard_id = item.get("id")
        if not isinstance(standard_id, str) or not standard_id:
            raise EvaluationInputError(f"{where}: 'id' must be non-empty text")
        if standard_id in seen:
            raise EvaluationInputError(f"{where}: id {standard_id!r} appears twice")
        seen.add(standard_id)
        standards.append(
            Standard(
                id=standard_id,
                title=_text_field(item.get("title"), where, "title", required=False) or "",
                text=_text_field(item.get("text"), where, "text", required=False) or "",
                section=_text_field(item.get("section"), where, "section", required=False),
            )
        )
    return standards


def load_queries(path: Path) -> list[Query]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvaluationInputError(f"{path}: cannot read the queries: {exc.strerror or exc}") from None
    queries: list[Query] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise EvaluationInputError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(item, dict):
            raise EvaluationInputError(f"{where}: must be a JSON object with qid and text")
        qid = item.get("qid")
        if not isinstance(qid, (str, int)) or isinstance(qid, bool) or str(qid) == "":
            raise EvaluationInputError(f"{where}: 'qid' must be text or a number")
        text = _text_field(item.get("text"), where, "text", required=True)
        relevant = item.get("relevant")
        if relevant is not None and (
            not isinstance(relevant, list) or not all(isinstance(r, str) for r in relevant)
        ):
            raise EvaluationInputError(f"{where}: 'relevant' must be a list of ids")
        queries.append(
            Query(
                qid=str(qid),
                text=text or "",
                section=_text_field(item.get("section"), where, "section", required=False),
                relevant=None if relevant is None else tuple(relevant),
            )
        )
    if not queries:
        raise EvaluationInputError(f"{path}: no queries")
    return queries


def metrics(rankings: Sequence[Sequence[str]], relevant: Sequence[Sequence[str]]) -> Metrics:
    """Metrics of `rankings` (ids best first) against `relevant` (one list per ranking; queries
    with no relevant ids are left out)."""
    r1 = r5 = r10 = rr = h5 = 0.0
    n = 0
    for ranked, wanted in zip(rankings, relevant):
        gold = set(wanted)
        if not gold:
            continue
        n += 1
        r1 += len(gold.intersection(ranked[:1])) / len(gold)
        r5 += len(gold.intersection(ranked[:5])) / len(gold)
        r10 += len(gold.intersection(ranked[:10])) / len(gold)
        h5 += 1.0 if gold.intersection(ranked[:5]) else 0.0
        rr += next((1.0 / i for i, sid in enumerate(ranked, start=1) if sid in gold), 0.0)
    if n == 0:
        return Metrics(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    return Metrics(n, r1 / n, r5 / n, r10 / n, rr / n, h5 / n)
