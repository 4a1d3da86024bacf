"""Computed matrices, reused while the workspace's review version stands.

Computing a matrix reads every link, suggestion and status of a catalog (about 100 ms for 1,000
documents × 500 standards on PostgreSQL); the matrix, its export and the gaps ask for the same
one again and again while nobody changes anything. Each process keeps the few it computed last,
keyed by workspace, catalog, date and thresholds, and labelled with the workspace's review version
read *before* computing (`access.workspace.review_version`, selected with the caller's access).
Every committed change the matrix depends on bumps that version (a3e.review.versions), so a kept
matrix is used only while it is at least as new as what the caller's request saw; replicas need
no coordination.

When many requests miss at once (just after a change), one computes and the others wait for it.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fastapi import Request

from a3e.review.matrix import Matrix, counts

MAX_KEPT = 16  # a 500-standard matrix with its gaps is a few hundred kB


@dataclass
class Computed:
    version: int
    matrix: Matrix
    counts: dict[str, Any]
    # What requests derived from it (its lint), computed once: see `MatrixCache.extra`.
    extras: dict[str, Any] = field(default_factory=dict)


Key = tuple[uuid.UUID, uuid.UUID, date, float, int]


class MatrixCache:
    def __init__(self, max_kept: int = MAX_KEPT) -> None:
        self.max_kept = max_kept
        self._kept: OrderedDict[Key, Computed] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[Key, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def _fresh(self, key: Key, version: int) -> Computed | None:
        with self._lock:
            found = self._kept.get(key)
            if found is not None and found.version >= version:
                self._kept.move_to_end(key)
                self.hits += 1
                return found
            return None

    def get(self, key: Key, version: int, build: Callable[[], Matrix]) -> Computed:
        """The kept matrix for `key` if it is at least as new as `version`, else `build()`'s."""
        found = self._fresh(key, version)
        if found is not None:
            return found
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one request computes; the others wait for it, then find it kept
            found = self._fresh(key, version)
            if found is not None:
                return found
            try:
                matrix = build()
            except BaseException:
                with self._lock:
                    self._building.pop(key, None)
                raise
            computed = Computed(version, matrix, counts(matrix.rows))
            with self._lock:
                self._building.pop(key, None)
                self.misses += 1
                current = self._kept.get(key)
                if current is None or current.version <= version:
                    self._kept[key] = computed
                    self._kept.move_to_end(key)
                    while len(self._kept) > self.max_kept:
                        self._kept.popitem(last=False)
            return computed

    def extra(self, computed: Computed, name: str, build: Callable[[], Any]) -> Any:
        """Something derived from a kept matrix (its lint), computed once per kept matrix."""
        with self._lock:
            if name in computed.extras:
                return computed.extras[name]
        value = build()
        with self._lock:
            return computed.extras.setdefault(name, value)


def matrix_cache(request: Request) -> MatrixCache:
    """The process's cache (one per app, made by create_app)."""
    return request.app.state.matrix_cache
