"""The dense extra of the mapping engine (HybridEngine: BM25 fused with sentence embeddings).

The default install has no torch: the first tests always run and prove that nothing imports it and
that `a3e map --dense` says which extra to install. The rest need the extra
(`pip install -e '.[dense]'`) and are skipped with that reason otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from a3e.cli import main
from a3e.mapping.dense import EXTRA_HINT, dense_unavailable
from a3e.mapping.engine import DenseConfig, HybridEngine, MappingEngine, dense_query
from tests.test_mapping_engine import CATALOG  # the small catalog both engines are tested on

ROOT = Path(__file__).resolve().parents[1]

# Shares no word (nor stem) with any standard above: BM25 alone finds nothing.
NO_SHARED_WORD = "Trustees supervise the chief executive."

needs_dense = pytest.mark.skipif(
    dense_unavailable() is not None, reason=f"the dense extra is not installed ({EXTRA_HINT})"
)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, **env},
    )


# --- always: the default install stays light ---------------------------------------------------------


def test_the_engine_and_a3e_map_never_import_torch() -> None:
    code = """
import sys, io
from a3e.cli import main
import a3e.mapping.dense, a3e.mapping.engine, a3e.mapping.cli
assert main(["map", "--framework", "hlc", "--text", "The board approves the budget each year"]) == 0
heavy = sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules)
print("HEAVY", heavy)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_dense_without_the_extra_is_a_usage_error_naming_it(monkeypatch, capsys) -> None:
    # A None entry in sys.modules is how Python spells "not installed" to find_spec and import.
    monkeypatch.setitem(sys.modules, "torch", None)
    assert "torch" in (dense_unavailable() or "")
    status = main(["map", "--framework", "hlc", "--text", "The board approves the budget", "--dense"])
    assert status == 64
    err = capsys.readouterr().err
    assert "--dense" in err and "a3e[dense]" in err
    assert "Traceback" not in err


def test_hybrid_engine_without_the_extra_raises_dense_unavailable(monkeypatch) -> None:
    from a3e.mapping import dense

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    monkeypatch.setattr(dense, "_encoder", None)
    with pytest.raises(dense.DenseUnavailable, match=r"a3e\[dense\]"):
        HybridEngine.build(CATALOG)


def test_dense_config_is_validated_and_headings_are_chosen() -> None:
    with pytest.raises(ValueError):
        DenseConfig(query_headings="first")
    with pytest.raises(ValueError):
        DenseConfig(rrf_k=0)
    assert dense_query("text", "A > B > C", "last") == "C. text"
    assert dense_query("text", "A > B", "all") == "A > B. text"
    assert dense_query("text", "A > B", "none") == "text"
    assert dense_query("text", None, "last") == "text"


# --- with the extra ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hybrid() -> HybridEngine:
    return HybridEngine.build(CATALOG)


@needs_dense
def test_the_model_loads_with_no_network() -> None:
    # Offline hub, and every proxy pointed at a closed local port: any attempt to fetch would fail.
    code = """
from a3e.mapping.dense import load_encoder
encoder = load_encoder()
assert load_encoder() is encoder  # once per process
v = encoder.encode(["The board approves the budget.", "Trustees adopt the annual financial plan.", "Library opening hours."])
import numpy as np
assert v.shape == (3, 384), v.shape
assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
print("SIM", float(v[0] @ v[1]), float(v[0] @ v[2]))
"""
    closed = "http://127.0.0.1:9"
    result = run_python(code, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HTTPS_PROXY=closed, HTTP_PROXY=closed,
                        https_proxy=closed, http_proxy=closed, NO_PROXY="")
    assert result.returncode == 0, result.stderr[-2000:]
    related, unrelated = map(float, result.stdout.split("SIM")[1].split())
    assert related > unrelated + 0.2


@needs_dense
def test_hybrid_finds_a_standard_that_shares_no_word(hybrid: HybridEngine) -> None:
    assert MappingEngine.build(CATALOG).rank(NO_SHARED_WORD) == []
    matches = hybrid.rank(NO_SHARED_WORD, top=4)
    assert [m.standard_id for m in matches][0] == "GOV"
    assert len(matches) == 4


@needs_dense
def test_hybrid_ranking_is_deterministic_sorted_and_confident_in_range(hybrid: HybridEngine) -> None:
    texts = ["Audited financial statements and the annual budget", "Faculty hold earned doctoral degrees", NO_SHARED_WORD]
    first = hybrid.rank_many(texts, ["Finance > Budget", None, "Governance"], top=4)
    again = hybrid.rank_many(texts, ["Finance > Budget", None, "Governance"], top=4)
    assert first == again
    assert first[0][0].standard_id == "FIN" and first[1][0].standard_id == "FAC"
    for ranked in first:
        scores = [m.score for m in ranked]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= m.confidence <= 1.0 for m in ranked)
        confidences = [m.confidence for m in ranked]
        assert confidences == sorted(confidences, reverse=True)  # monotone in the score


@needs_dense
def test_hybrid_suggestions_respect_threshold_and_limit(hybrid: HybridEngine) -> None:
    text = "Audited financial statements and the annual budget"
    ranked = hybrid.rank(text, top=4)
    threshold = (ranked[0].confidence + ranked[1].confidence) / 2
    assert [m.standard_id for m in hybrid.suggest(text, threshold=threshold)] == ["FIN"]
    assert len(hybrid.suggest(text, threshold=0.0, limit=2)) == 2
    assert hybrid.suggest_many([text, ""], threshold=1.01) == [[], []]
    with pytest.raises(ValueError):
        hybrid.rank_many([text], [None, None])
    with pytest.raises(ValueError):
        hybrid.rank(text, top=0)


@needs_dense
def test_a3e_map_dense_evaluates_a_labelled_set(tmp_path: Path, capsys) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps([{"id": s.id, "title": s.title, "text": s.text} for s in CATALOG]))
    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join(json.dumps(q) for q in [
        {"qid": "1", "text": NO_SHARED_WORD, "relevant": ["GOV"]},
        {"qid": "2", "text": "Books and reading rooms for students", "relevant": ["LIB"]},
    ]))
    assert main(["map", "--catalog", str(catalog), "--queries", str(queries), "--json"]) == 0
    lexical = json.loads(capsys.readouterr().out)
    assert main(["map", "--catalog", str(catalog), "--queries", str(queries), "--json", "--dense"]) == 0
    dense = json.loads(capsys.readouterr().out)
    assert dense["engine"] == "hybrid" and lexical["engine"] == "bm25"
    assert dense["metrics"]["MRR"] == 1.0
    assert lexical["metrics"]["MRR"] < 1.0  # BM25 cannot rank the query that shares no word


@needs_dense
def test_dense_scores_are_consistent_with_the_ranking(hybrid: HybridEngine) -> None:
    text = "Library collections support information literacy"
    row = hybrid.score_many([text])[0]
    ranked = hybrid.rank(text, top=4)
    by_id = dict(zip((s.id for s in hybrid.standards), row))
    assert [m.score for m in ranked] == [round(float(by_id[m.standard_id]), 6) for m in ranked]
    assert np.all(row > 0)


# --- the service's jobs (A3E_MAPPING_DENSE) ----------------------------------------------------------


def test_the_setting_is_validated(make_settings) -> None:
    from a3e.core.settings import Settings

    assert make_settings().mapping_dense is False
    assert make_settings(mapping_dense="true").mapping_dense is True
    with pytest.raises(ValueError, match="mapping_dense|A3E_MAPPING_DENSE"):
        Settings(_env_file=None, A3E_MAPPING_DENSE="sometimes")


def test_jobs_fall_back_to_bm25_with_a_logged_reason_when_the_extra_is_missing(monkeypatch, caplog) -> None:
    from a3e.review import mapping

    monkeypatch.setitem(sys.modules, "torch", None)
    mapping.dense_available.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="a3e.mapping"):
            assert mapping.dense_available() is False
        assert any("A3E_MAPPING_DENSE" in r.getMessage() and "a3e[dense]" in r.getMessage() for r in caplog.records)
    finally:
        mapping.dense_available.cache_clear()


@pytest.fixture
def api(make_settings, tmp_path: Path):
    """The service with A3E_MAPPING_DENSE=true, on SQLite (the engine, not the database, is under test)."""
    from fastapi.testclient import TestClient

    from a3e.app import create_app
    from tests.conftest import CHEAP_ARGON2, wait_ready

    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'dense.sqlite3'}", mapping_dense=True, **CHEAP_ARGON2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def _engines_used(client) -> set[str]:
    from sqlalchemy import select

    from a3e.review.models import Suggestion

    with client.app.state.database.session() as session:
        return set(session.scalars(select(Suggestion.engine).distinct()).all())


def _map_a_handbook(client, make_person, make_workspace, tmp_path) -> list[dict]:
    from tests.documents import make_pdf
    from tests.test_evidence import upload, wait_processed
    from tests.test_mapping_flow import FACULTY, wait_mapped
    from tests.test_review_links import base
    from tests.test_standard_statuses import select_catalog

    liaison = make_person()
    college = make_workspace(liaison)
    select_catalog(client, liaison, college, "SACSCOC")
    document = upload(client, liaison, college, make_pdf(tmp_path / "handbook.pdf", [FACULTY])).json()
    wait_processed(client, liaison, college, document["id"])
    wait_mapped(client, liaison, college, timeout=120.0)
    return client.get(f"{base(college)}/suggestions", headers=liaison.headers).json()["items"]


def test_a_dense_job_without_the_extra_still_maps_with_bm25(monkeypatch, api, make_person, make_workspace, tmp_path) -> None:
    from a3e.review import mapping

    monkeypatch.setitem(sys.modules, "torch", None)
    mapping.dense_available.cache_clear()
    try:
        items = _map_a_handbook(api, make_person, make_workspace, tmp_path)
        assert "6.2.a" in {item["standard"] for item in items}
        assert _engines_used(api) == {mapping.ENGINE_NAME}
    finally:
        mapping.dense_available.cache_clear()


@needs_dense
def test_a_dense_job_maps_with_the_hybrid_engine(api, make_person, make_workspace, tmp_path) -> None:
    from a3e.review import mapping

    mapping.dense_available.cache_clear()
    items = _map_a_handbook(api, make_person, make_workspace, tmp_path)
    assert "6.2.a" in {item["standard"] for item in items}
    assert all(mapping.SUGGEST_THRESHOLD <= item["confidence"] <= 1 for item in items)
    assert _engines_used(api) == {mapping.DENSE_ENGINE_NAME}


def test_doctor_says_which_engine_maps_and_warns_where_the_dense_model_would_load(monkeypatch, tmp_path):
    """The dense extra belongs with `a3e worker`: the operator's checklist says so, and says when
    the setting asks for an extra that is not installed."""
    from a3e.mapping.dense import dense_unavailable
    from a3e.ops.doctor import OK, WARN, run_doctor

    monkeypatch.setenv("A3E_DATA_DIR", str(tmp_path / "doctor-data"))

    def mapping_check():
        return next(check for check in run_doctor(timeout=1).checks if check.name == "mapping")

    default = mapping_check()
    assert default.status == OK and "BM25" in default.message
    monkeypatch.setenv("A3E_MAPPING_DENSE", "true")
    dense = mapping_check()
    assert dense.status == WARN
    if dense_unavailable():
        assert "not installed" in dense.message and "BM25" in dense.message
    else:  # embedded jobs (no Redis): the model would load inside the web process
        assert "web process" in dense.message and "a3e worker" in dense.fix
