"""The evidence library scaled out: documents stored in S3 (moto's server on loopback), processed
by separate `a3e worker` processes through Redis — and hostile files failing alone, through the
whole stack."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from a3e.app import create_app
from tests.conftest import CHEAP_ARGON2, wait_ready
from tests.documents import make_docx, make_pdf, make_zip_bomb_docx, prose
from tests.test_evidence import docs_path, passages, upload, wait_processed, wait_until
from tests.test_jobs import _worker_env
from tests.test_jobs_redis import redis_server  # noqa: F401  (a fixture)
from tests.test_storage import bucket, moto_endpoint, s3_store  # noqa: F401  (fixtures)


@pytest.fixture
def s3_api(make_settings, database_url, moto_endpoint, bucket):  # noqa: F811
    settings = make_settings(
        database_url=database_url,
        storage="s3",
        s3_bucket=bucket,
        s3_endpoint_url=moto_endpoint,
        s3_access_key_id="AKIAEXAMPLEEXAMPLE",
        s3_secret_access_key="example-secret-key-not-real",
        s3_addressing_style="path",
        **CHEAP_ARGON2,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def test_documents_in_s3_are_stored_processed_downloaded_and_removed(s3_api, tmp_path, moto_endpoint, bucket):  # noqa: F811
    alice = make_person_on(s3_api)
    workspace = create_workspace(s3_api, alice)
    pdf = make_pdf(tmp_path / "self-study.pdf", ["Institutional effectiveness. " + prose(8, seed=4), prose(8, seed=5)])
    document = upload(s3_api, alice, workspace, pdf).json()
    sha256 = document["current_revision"]["sha256"]
    store = s3_store(moto_endpoint, bucket)
    assert store.exists(sha256)  # in the bucket, not on local disk
    assert not (Path(s3_api.app.state.settings.data_dir) / "blobs").exists()

    done = wait_processed(s3_api, alice, workspace, document["id"])
    assert done["status"] == "ready" and done["current_revision"]["page_count"] == 2
    assert passages(s3_api, alice, workspace, document["id"])["items"][0]["text"].startswith("Institutional effectiveness")
    download = s3_api.get(f"{docs_path(workspace)}/{document['id']}/download", headers=alice.headers)
    assert download.status_code == 200 and download.content == pdf.read_bytes()

    assert s3_api.delete(f"{docs_path(workspace)}/{document['id']}", headers=alice.headers).status_code == 204
    wait_until(lambda: not store.exists(sha256))


def make_person_on(api):
    """A registered, logged-in person on this app (the `make_person` fixture is bound to `api`'s)."""
    import uuid

    from tests.conftest import DEFAULT_PASSWORD, Person

    email = f"person-{uuid.uuid4().hex[:8]}@example.edu"
    api.post("/api/v1/auth/register", json={"email": email, "password": DEFAULT_PASSWORD, "name": "Liaison"})
    tokens = api.post("/api/v1/auth/login", json={"email": email, "password": DEFAULT_PASSWORD}).json()
    me = api.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    return Person(me["id"], email, DEFAULT_PASSWORD, tokens["access_token"], tokens["refresh_token"])


def create_workspace(api, person) -> dict:
    response = api.post("/api/v1/workspaces", json={"name": "Example College"}, headers=person.headers)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.slow
def test_a_separate_worker_processes_documents_through_redis(make_settings, database_url, redis_server, tmp_path):  # noqa: F811
    data_dir = tmp_path / "data"
    settings = make_settings(database_url=database_url, redis_url=redis_server.url, data_dir=data_dir, **CHEAP_ARGON2)
    assert settings.runs_embedded_jobs is False  # with Redis, the web process only enqueues
    app = create_app(settings)
    log = tmp_path / "worker.log"
    worker = None
    try:
        with TestClient(app, raise_server_exceptions=False) as api:
            wait_ready(api)
            alice = make_person_on(api)
            workspace = create_workspace(api, alice)
            docx = make_docx(tmp_path / "review.docx", [("h1", "Program Review"), ("p", "Graduates meet the outcomes.")])
            document = upload(api, alice, workspace, docx).json()
            time.sleep(1.0)
            still = api.get(f"{docs_path(workspace)}/{document['id']}", headers=alice.headers).json()
            assert still["status"] == "queued"  # nobody consumes yet

            env = _worker_env(tmp_path, data_dir, A3E_REDIS_URL=redis_server.url, DATABASE_URL=database_url)
            worker = subprocess.Popen(
                [sys.executable, "-m", "a3e", "worker", "--workers", "2", "--no-periodic"],
                env=env, cwd=tmp_path, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
            )
            try:
                done = wait_processed(api, alice, workspace, document["id"], timeout=60)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the worker's log:\n{log.read_text()}") from None
            assert done["status"] == "ready", log.read_text()
            texts = [item["text"] for item in passages(api, alice, workspace, document["id"])["items"]]
            assert any("Graduates meet the outcomes." in text for text in texts)
            assert "evidence.process_revision" in log.read_text()
    finally:
        if worker is not None:
            worker.terminate()
            assert worker.wait(30) == 0, log.read_text()


def test_hostile_files_fail_alone_with_their_reason(api, make_person, make_workspace, tmp_path):
    alice = make_person()
    workspace = make_workspace(alice)
    bomb = make_zip_bomb_docx(tmp_path / "bomb.docx")
    truncated = tmp_path / "broken.pdf"
    truncated.write_bytes(make_pdf(tmp_path / "whole.pdf", [prose(20, seed=9)] * 3).read_bytes()[:1500])
    fine = make_pdf(tmp_path / "fine.pdf", ["Mission statement approved by the board."])
    bomb_doc = upload(api, alice, workspace, bomb)
    assert bomb_doc.status_code == 201, bomb_doc.text  # a real DOCX on the outside: judged when read
    broken_doc = upload(api, alice, workspace, truncated)
    fine_doc = upload(api, alice, workspace, fine)
    bomb_done = wait_processed(api, alice, workspace, bomb_doc.json()["id"])
    assert bomb_done["status"] == "failed"
    assert "decompression bomb" in bomb_done["status_detail"]
    if broken_doc.status_code == 201:  # a cut-off PDF may already be refused by its type check
        broken_done = wait_processed(api, alice, workspace, broken_doc.json()["id"])
        assert broken_done["status"] == "failed" and broken_done["status_detail"]
    else:
        assert broken_doc.status_code == 415
    assert wait_processed(api, alice, workspace, fine_doc.json()["id"])["status"] == "ready"
    assert api.get("/health/ready").status_code == 200  # the service is unharmed
