"""What-if for the `review` section only: A³E's real app (create_app from the same environment as
`a3e serve`) with the computed matrix reused between requests, to measure what that suggestion
would buy before anyone touches src/. Nothing in src/ is changed.

    python bench/whatif_review_app.py --port N [--workers 2]

`a3e.review.matrix.build_matrix` and `lint` (which the routes call through the module) are wrapped:
the first call for a (workspace, catalog, as_of, thresholds) computes as before; later calls return
the kept result after one indexed single-row SELECT in the request's session — the price of
checking a per-workspace review version that every write would bump (here the workspace row's
`updated_at` stands in for it: the benchmark writes nothing during the load, so the kept answer
stays right, and bench_review verifies it). Every other step of the request — authentication,
scoping, filtering, paging, serialization, the access log — is the real one.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import A3E_UVICORN_OPTIONS, HOST  # noqa: E402


def _reuse_matrix() -> None:
    from sqlalchemy import select

    from a3e.review import matrix as service
    from a3e.workspaces.models import Workspace

    build, lint = service.build_matrix, service.lint
    kept: dict[tuple, tuple] = {}
    guard = threading.Lock()

    def version(session, workspace_id):  # noqa: ANN001, ANN202
        return session.scalar(select(Workspace.updated_at).where(Workspace.id == workspace_id))

    def build_matrix(session, access, catalog_id, *, as_of, low_confidence=service.DEFAULT_LOW_CONFIDENCE,  # noqa: ANN001, ANN202
                     stale_years=service.DEFAULT_STALE_YEARS):
        key = (access.workspace_id, catalog_id, as_of, low_confidence, stale_years)
        current = version(session, access.workspace_id)
        with guard:
            found = kept.get(key)
        if found is not None and found[0] == current:
            return found[1]
        matrix = build(session, access, catalog_id, as_of=as_of, low_confidence=low_confidence,
                       stale_years=stale_years)
        with guard:
            kept[key] = (current, matrix, {})
        return matrix

    def lint_kept(session, access, matrix):  # noqa: ANN001, ANN202
        with guard:
            entry = next((value for value in kept.values() if value[1] is matrix), None)
        if entry is None:
            return lint(session, access, matrix)
        problems = entry[2].get("lint")
        if problems is None:
            problems = lint(session, access, matrix)
            entry[2]["lint"] = problems
        return problems

    service.build_matrix = build_matrix
    service.lint = lint_kept


def build():
    from a3e.app import create_app
    from a3e.core.settings import load_settings

    _reuse_matrix()
    loaded = load_settings()
    return create_app(loaded.settings, warnings=loaded.warnings)


def factory():
    """For uvicorn's workers (`--workers 2`)."""
    return build()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    from a3e.core.logging import configure_logging
    from a3e.core.settings import load_settings

    settings = load_settings().settings
    configure_logging(settings.log_level, settings.effective_log_format, settings.secret_values())
    if args.workers == 1:
        uvicorn.run(build(), host=HOST, port=args.port, **A3E_UVICORN_OPTIONS)
    else:
        os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent))
        uvicorn.run("whatif_review_app:factory", factory=True, workers=args.workers, host=HOST, port=args.port,
                    **A3E_UVICORN_OPTIONS)


if __name__ == "__main__":
    main()
