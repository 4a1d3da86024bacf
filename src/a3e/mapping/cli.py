"""`a3e map`: rank a catalog for labelled queries (R@k, MRR, Hit@5, queries per second), write the
rankings, or show the top standards for one passage. The same engine the service uses.
"""

from __future__ import annotations

import json
import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from a3e.mapping.evaluate import EvaluationInputError, Query, load_catalog, load_queries, metrics

if TYPE_CHECKING:
    from a3e.mapping.engine import HybridEngine, Standard

EXIT_USAGE = 64


class UsageError(Exception):
    pass


def run_map(args: Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        return _run(args, out)
    except UsageError as exc:
        print(f"a3e map: error: {exc}", file=err)
        return EXIT_USAGE


def _run(args: Namespace, out: TextIO) -> int:
    from a3e.mapping.catalogs import UnknownFramework, builtin_standards
    from a3e.mapping.engine import MappingEngine

    if args.top < 1:
        raise UsageError("--top must be at least 1")
    started = time.perf_counter()
    try:
        if args.catalog is not None:
            standards = load_catalog(Path(args.catalog))
            titles = {s.id: s.title for s in standards}
        else:
            standards = builtin_standards(args.framework, args.edition)
            titles = {s.id: s.title for s in standards}
        queries = load_queries(Path(args.queries)) if args.queries is not None else None
    except (EvaluationInputError, UnknownFramework) as exc:
        raise UsageError(str(exc).strip("'\"")) from None
    if getattr(args, "dense", False):
        engine = _dense_engine(standards)
    else:
        engine = MappingEngine.build(standards)
    build_seconds = time.perf_counter() - started

    if queries is None:
        return _show_passage(engine, titles, args, out)
    return _evaluate(engine, queries, args, out, build_seconds)


def _dense_engine(standards: list[Standard]) -> HybridEngine:
    """The hybrid engine (BM25 + embeddings), or a usage error naming the extra when it is missing."""
    from a3e.mapping.dense import DenseUnavailable, dense_unavailable

    reason = dense_unavailable()  # checked before anything imports torch
    if reason is not None:
        raise UsageError(f"--dense: {reason}")
    from a3e.mapping.engine import HybridEngine

    try:
        return HybridEngine.build(standards)
    except DenseUnavailable as exc:
        raise UsageError(f"--dense: {exc}") from None


def _show_passage(engine, titles: dict[str, str], args: Namespace, out: TextIO) -> int:
    if not args.text.strip():
        raise UsageError("--text is empty")
    matches = engine.rank(args.text, context=args.headings, top=args.top)
    if not matches:
        print("no standard shares a word with this text", file=out)
        return 0
    width = max(len(m.standard_id) for m in matches)
    print(f"{'standard':<{width}}  confidence  title", file=out)
    for m in matches:
        print(f"{m.standard_id:<{width}}  {m.confidence:>10.2f}  {titles.get(m.standard_id, '')}", file=out)
    return 0


def _evaluate(engine, queries: list[Query], args: Namespace, out: TextIO, build_seconds: float) -> int:
    contexts = None if args.no_context else [q.section for q in queries]
    started = time.perf_counter()
    # Metrics are measured on the whole ranking (as the benchmark defines them); --top bounds the output.
    rankings = engine.rank_many([q.text for q in queries], contexts, top=max(len(engine), 1))
    seconds = time.perf_counter() - started
    qps = len(queries) / seconds if seconds > 0 else float("inf")

    lines = (
        json.dumps(
            {"qid": q.qid, "ranked": [m.standard_id for m in ranked[: args.top]], "scores": [m.score for m in ranked[: args.top]]},
            ensure_ascii=False,
        )
        for q, ranked in zip(queries, rankings)
    )
    labelled = [(q, r) for q, r in zip(queries, rankings) if q.relevant]
    if args.output is not None:
        try:
            with open(args.output, "w", encoding="utf-8") as handle:
                for line in lines:
                    handle.write(line + "\n")
        except OSError as exc:
            raise UsageError(f"{args.output}: cannot write the rankings: {exc.strerror or exc}") from None
    elif not labelled:
        for line in lines:  # nothing to measure: the rankings are the answer
            print(line, file=out)
        print(f"{len(queries)} queries ranked in {seconds:.3f} s ({qps:.0f} queries/s); no labels, so no metrics", file=sys.stderr)
        return 0

    report: dict[str, object] = {
        "engine": "hybrid" if getattr(args, "dense", False) else "bm25",
        "queries": len(queries),
        "standards": len(engine),
        "build_seconds": round(build_seconds, 4),
        "rank_seconds": round(seconds, 4),
        "queries_per_second": round(qps, 1),
    }
    if labelled:
        m = metrics([[x.standard_id for x in r] for _, r in labelled], [q.relevant or () for q, _ in labelled])
        report["metrics"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.as_dict().items()}
    if args.json:
        print(json.dumps(report), file=out)
        return 0
    print(f"{len(queries)} queries against {len(engine)} standards; "
          f"context: {'none' if args.no_context else 'each query’s section'}", file=out)
    if labelled:
        scored = report["metrics"]
        assert isinstance(scored, dict)
        unlabelled = len(queries) - len(labelled)
        note = f" ({unlabelled} without labels left out)" if unlabelled else ""
        print(f"labelled queries: {len(labelled)}{note}", file=out)
        for key in ("R@1", "R@5", "R@10", "MRR", "Hit@5"):
            print(f"{key:<6} {scored[key]:.3f}", file=out)
    else:
        print("no labels (relevant), so no metrics", file=out)
    print(f"index built in {build_seconds * 1000:.0f} ms; {qps:.0f} queries/s", file=out)
    if args.output is not None:
        print(f"rankings written to {args.output}", file=out)
    return 0
