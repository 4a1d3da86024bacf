"""Blob storage: the local directory and an S3-compatible service (moto's server on 127.0.0.1),
content-addressed, idempotent, streamed; an unreachable service answers 503 feature_unavailable
while the rest of the app works; settings and `a3e doctor` report what is wrong."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import Request
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from pydantic import SecretStr

from a3e.app import create_app
from a3e.core.settings import ConfigError, load_settings, read_settings
from a3e.evidence.storage import (
    BlobNotFound,
    BlobStoreDep,
    LocalBlobStore,
    S3BlobStore,
    StorageUnavailable,
    blob_key,
    blob_store_from_settings,
)
from tests.conftest import free_port, wait_ready

MIB = 1024 * 1024


def write_blob(directory: Path, data: bytes) -> tuple[str, Path]:
    path = directory / f"source-{uuid.uuid4().hex}"
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), path


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file() and p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# Keys


def test_keys_are_derived_from_the_sha256_and_nothing_else():
    digest = hashlib.sha256(b"x").hexdigest()
    assert blob_key(digest) == f"sha256/{digest[:2]}/{digest[2:4]}/{digest}"
    for bad in ("../../etc/passwd", digest.upper(), digest[:-1], digest + "0", "", "g" * 64):
        with pytest.raises(ValueError):
            blob_key(bad)


# ---------------------------------------------------------------------------------------------
# Local directory


@pytest.fixture
def local(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def test_local_put_stream_exists_delete(local: LocalBlobStore, tmp_path: Path):
    data = os.urandom(300_000)
    sha, source = write_blob(tmp_path, data)
    assert not local.exists(sha)
    local.put_file(sha, source, "application/pdf")
    assert local.exists(sha)
    assert local.path_for(sha) == tmp_path / "blobs" / "sha256" / sha[:2] / sha[2:4] / sha
    chunks = list(local.open_stream(sha, chunk_size=64 * 1024))
    assert len(chunks) == 5 and max(len(c) for c in chunks) == 64 * 1024  # streamed, not read whole
    assert b"".join(chunks) == data
    copy = tmp_path / "copy"
    local.download_to(sha, copy)
    assert copy.read_bytes() == data
    assert source.exists()  # the caller's file is left alone
    local.delete(sha)
    assert not local.exists(sha)
    local.delete(sha)  # deleting again is a no-op
    assert leftovers(tmp_path / "blobs") == []


def test_local_put_is_idempotent_and_never_rewrites(local: LocalBlobStore, tmp_path: Path):
    sha, source = write_blob(tmp_path, b"same bytes")
    local.put_file(sha, source, "text/plain")
    before = local.path_for(sha).stat()
    local.put_file(sha, source, "text/plain")
    after = local.path_for(sha).stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_local_put_refuses_content_that_does_not_match_and_leaves_nothing(local: LocalBlobStore, tmp_path: Path):
    sha, _ = write_blob(tmp_path, b"what the caller hashed")
    _, other = write_blob(tmp_path, b"what is actually in the file")
    with pytest.raises(ValueError, match="does not match"):
        local.put_file(sha, other, "text/plain")
    assert not local.exists(sha)
    assert leftovers(tmp_path / "blobs") == []


def test_local_put_is_atomic_under_concurrent_writers(local: LocalBlobStore, tmp_path: Path):
    data = os.urandom(2 * MIB)
    sha, source = write_blob(tmp_path, data)
    errors: list[BaseException] = []
    seen_partial: list[int] = []
    done = threading.Event()

    def reader() -> None:
        # Whenever the final name exists, it holds the whole file: never a partial write.
        while not done.is_set():
            try:
                size = local.path_for(sha).stat().st_size
            except FileNotFoundError:
                continue
            if size != len(data):
                seen_partial.append(size)

    def writer() -> None:
        try:
            local.put_file(sha, source, "application/octet-stream")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    watcher = threading.Thread(target=reader)
    watcher.start()
    writers = [threading.Thread(target=writer) for _ in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    watcher.join()
    assert errors == [] and seen_partial == []
    assert hashlib.sha256(local.path_for(sha).read_bytes()).hexdigest() == sha
    assert leftovers(tmp_path / "blobs") == []


def test_local_missing_blob_fails_before_streaming(local: LocalBlobStore, tmp_path: Path):
    sha = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(BlobNotFound) as raised:
        local.open_stream(sha)  # raised at the call, before a StreamingResponse sends headers
    assert raised.value.status_code == 404 and raised.value.code == "blob_not_found"
    with pytest.raises(BlobNotFound):
        local.download_to(sha, tmp_path / "out")


def test_local_health(tmp_path: Path):
    store = LocalBlobStore(tmp_path / "blobs")
    ok, detail = store.health()
    assert ok and "writable" in detail and "free" in detail
    assert store.known_problem() is None
    assert leftovers(tmp_path / "blobs") == []  # the probe file is gone

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the directory should be")
    ok, detail = LocalBlobStore(blocked / "blobs").health()
    assert not ok and "not writable" in detail

    greedy = LocalBlobStore(tmp_path / "blobs", min_free_bytes=1 << 62)
    ok, detail = greedy.health()
    assert not ok and "free" in detail and "needed" in detail
    assert "needed" in (greedy.known_problem() or "")


def test_local_write_failure_is_storage_unavailable(tmp_path: Path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the directory should be")
    store = LocalBlobStore(blocked)
    sha, source = write_blob(tmp_path, b"data")
    with pytest.raises(StorageUnavailable) as raised:
        store.put_file(sha, source, "text/plain")
    assert raised.value.status_code == 503 and raised.value.code == "feature_unavailable"


# ---------------------------------------------------------------------------------------------
# S3 (moto's server, on a free loopback port)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_store(endpoint: str, bucket: str, **options) -> S3BlobStore:
    options.setdefault("addressing_style", "path")
    return S3BlobStore(
        bucket=bucket,
        access_key_id="AKIAEXAMPLEEXAMPLE",
        secret_access_key=SecretStr("example-secret-key-not-real"),
        endpoint_url=endpoint,
        **options,
    )


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    name = f"a3e-test-{uuid.uuid4().hex[:12]}"
    s3_store(moto_endpoint, name)._client().create_bucket(Bucket=name)
    return name


def test_s3_put_stream_exists_delete_under_a_prefix(moto_endpoint: str, bucket: str, tmp_path: Path):
    store = s3_store(moto_endpoint, bucket, prefix="college/production")
    data = os.urandom(200_000)
    sha, source = write_blob(tmp_path, data)
    assert not store.exists(sha)
    store.put_file(sha, source, "application/pdf")
    assert store.exists(sha)
    client = store._client()
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"college/production/{blob_key(sha)}"]
    head = client.head_object(Bucket=bucket, Key=keys[0])
    assert head["ContentType"] == "application/pdf" and head["Metadata"] == {"sha256": sha}
    chunks = list(store.open_stream(sha, chunk_size=64 * 1024))
    assert len(chunks) > 1 and b"".join(chunks) == data
    store.put_file(sha, source, "application/pdf")  # already there: no-op
    assert client.head_object(Bucket=bucket, Key=keys[0])["LastModified"] == head["LastModified"]
    store.delete(sha)
    assert not store.exists(sha)
    store.delete(sha)  # idempotent
    assert store.known_problem() is None


def test_s3_big_file_goes_up_in_parts_and_comes_back_whole(moto_endpoint: str, bucket: str, tmp_path: Path):
    store = s3_store(moto_endpoint, bucket)
    data = os.urandom(9 * MIB)  # above the 8 MiB multipart threshold
    sha, source = write_blob(tmp_path, data)
    store.put_file(sha, source, "application/octet-stream")
    etag = store._client().head_object(Bucket=bucket, Key=store.key_for(sha))["ETag"]
    assert etag.strip('"').endswith("-2")  # a multipart upload of two parts
    digest = hashlib.sha256()
    for chunk in store.open_stream(sha):
        digest.update(chunk)
    assert digest.hexdigest() == sha
    target = tmp_path / "downloaded"
    store.download_to(sha, target)
    assert target.stat().st_size == len(data) and hashlib.sha256(target.read_bytes()).hexdigest() == sha


def test_s3_missing_object(moto_endpoint: str, bucket: str, tmp_path: Path):
    store = s3_store(moto_endpoint, bucket)
    sha = hashlib.sha256(b"never stored").hexdigest()
    assert store.exists(sha) is False
    with pytest.raises(BlobNotFound):
        store.open_stream(sha)
    with pytest.raises(BlobNotFound):
        store.download_to(sha, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert store.known_problem() is None  # a missing object is not an outage


def test_s3_health(moto_endpoint: str, bucket: str):
    ok, detail = s3_store(moto_endpoint, bucket).health()
    assert ok and bucket in detail
    missing = s3_store(moto_endpoint, f"a3e-missing-{uuid.uuid4().hex[:8]}")
    ok, detail = missing.health()
    assert not ok and "does not exist" in detail


def test_s3_unreachable_endpoint_fails_fast_and_says_so(tmp_path: Path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = s3_store(endpoint, "a3e-documents", connect_timeout=1, max_attempts=1)
    started = time.monotonic()
    ok, detail = store.health(timeout=1)
    assert not ok and f"cannot reach {endpoint}" in detail
    sha, source = write_blob(tmp_path, b"data")
    for operation in (lambda: store.put_file(sha, source, "text/plain"), lambda: store.exists(sha), lambda: store.open_stream(sha)):
        with pytest.raises(StorageUnavailable) as raised:
            operation()
        assert raised.value.status_code == 503 and raised.value.code == "feature_unavailable"
    assert time.monotonic() - started < 5
    assert "cannot reach" in (store.known_problem() or "")
    assert "example-secret-key-not-real" not in repr(store) + detail


def test_building_a_store_connects_to_nothing_and_imports_no_boto3(tmp_path: Path):
    probe = f"""
import sys
events = []
sys.addaudithook(lambda event, args: events.append(event) if event.startswith("socket.") else None)
from a3e.core.settings import Settings
from a3e.evidence.storage import blob_store_from_settings
settings = Settings(_env_file=None, storage="s3", s3_bucket="a3e-documents", s3_access_key_id="AKIAEXAMPLE",
                    s3_secret_access_key="secret-value", s3_endpoint_url="http://127.0.0.1:9")
store = blob_store_from_settings(settings)
print(repr((type(store).__name__, "boto3" in sys.modules, events)))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert eval(result.stdout.strip().splitlines()[-1]) == ("S3BlobStore", False, [])


def test_store_from_settings(make_settings, data_dir: Path):
    local = blob_store_from_settings(make_settings(max_upload_mb=7))
    assert isinstance(local, LocalBlobStore)
    assert local.root == data_dir / "blobs" and local.min_free_bytes == 7 * MIB
    s3 = blob_store_from_settings(
        make_settings(
            storage="s3", s3_bucket="a3e-documents", s3_access_key_id="AKIAEXAMPLE", s3_secret_access_key="s3cr3t-value",
            s3_prefix="/a3e/prod/", s3_region="auto", s3_endpoint_url="https://example.r2.cloudflarestorage.com/",
        )
    )
    assert isinstance(s3, S3BlobStore)
    assert (s3.bucket, s3.prefix, s3.region, s3.endpoint_url) == (
        "a3e-documents", "a3e/prod", "auto", "https://example.r2.cloudflarestorage.com"
    )
    assert "s3cr3t-value" not in repr(s3)


# ---------------------------------------------------------------------------------------------
# Settings


def test_s3_without_bucket_or_keys_is_a_configuration_problem_listed_with_the_others(monkeypatch):
    monkeypatch.setenv("A3E_STORAGE", "s3")
    monkeypatch.setenv("PORT", "not-a-port")
    _, problems = read_settings(_env_file=None)
    rendered = [str(problem) for problem in problems]
    assert "PORT: must be a whole number" in rendered
    assert any(line.startswith("A3E_S3_BUCKET: is required when A3E_STORAGE=s3") for line in rendered)
    assert any(line.startswith("A3E_S3_ACCESS_KEY_ID: is required") for line in rendered)
    assert any(line.startswith("A3E_S3_SECRET_ACCESS_KEY: is required") for line in rendered)
    with pytest.raises(ConfigError):
        load_settings(_env_file=None)


def test_s3_settings_are_validated_with_clear_messages(monkeypatch):
    monkeypatch.setenv("A3E_STORAGE", "nfs")
    monkeypatch.setenv("A3E_S3_BUCKET", "My_Bucket")
    monkeypatch.setenv("A3E_S3_ENDPOINT_URL", "https://key:hunter2-secret@minio.example.edu")
    monkeypatch.setenv("A3E_S3_PREFIX", "a3e/../other")
    monkeypatch.setenv("A3E_S3_ADDRESSING_STYLE", "sideways")
    _, problems = read_settings(_env_file=None)
    by_variable = {problem.variable: problem.message for problem in problems}
    assert by_variable["A3E_STORAGE"] == "must be 'local' or 's3'"
    assert "is not a bucket name" in by_variable["A3E_S3_BUCKET"]
    assert "must not hold credentials" in by_variable["A3E_S3_ENDPOINT_URL"]
    assert "hunter2" not in " ".join(by_variable.values())
    assert "is not a key prefix" in by_variable["A3E_S3_PREFIX"]
    assert "'auto', 'path' or 'virtual'" in by_variable["A3E_S3_ADDRESSING_STYLE"]


def test_aws_key_names_are_accepted_and_the_secret_is_masked(monkeypatch):
    monkeypatch.setenv("A3E_STORAGE", "S3")
    monkeypatch.setenv("A3E_S3_BUCKET", "a3e-documents")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-example-secret")
    monkeypatch.setenv("A3E_S3_ADDRESSING_STYLE", "Path")
    settings, problems = read_settings(_env_file=None)
    assert problems == []
    assert (settings.storage, settings.s3_access_key_id, settings.s3_addressing_style) == ("s3", "AKIAEXAMPLEEXAMPLE", "path")
    assert "wJalrXUtnFEMI-example-secret" not in repr(settings)
    assert "wJalrXUtnFEMI-example-secret" in settings.secret_values()  # masked in every log line


# ---------------------------------------------------------------------------------------------
# The feature: 503 when storage cannot be used, everything else keeps working


def storage_app(make_settings, **settings):
    app = create_app(make_settings(**settings))
    sha = hashlib.sha256(b"hello").hexdigest()

    @app.get("/test/blobs/{sha256}/exists")
    def blob_exists(sha256: str, store: BlobStoreDep) -> dict:
        return {"exists": store.exists(sha256)}

    @app.post("/test/blobs")
    async def put_blob(request: Request, store: BlobStoreDep) -> dict:
        import anyio

        data = await request.body()
        digest = hashlib.sha256(data).hexdigest()
        path = request.app.state.settings.data_dir / f"incoming-{digest}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        await anyio.to_thread.run_sync(store.put_file, digest, path, "text/plain")
        return {"sha256": digest}

    @app.get("/test/blobs/{sha256}")
    def get_blob(sha256: str, store: BlobStoreDep) -> StreamingResponse:
        return StreamingResponse(store.open_stream(sha256), media_type="application/octet-stream")

    return app, sha


def test_local_storage_is_enabled_by_default_and_serves_blobs(make_settings):
    app, _ = storage_app(make_settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        stored = client.post("/test/blobs", content=b"evidence bytes")
        assert stored.status_code == 200, stored.text
        sha = stored.json()["sha256"]
        assert client.get(f"/test/blobs/{sha}").content == b"evidence bytes"
        assert client.get(f"/test/blobs/{sha}/exists").json() == {"exists": True}
        missing = client.get(f"/test/blobs/{hashlib.sha256(b'other').hexdigest()}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "blob_not_found"
        health = client.get("/health").json()
        assert health["features"]["storage"] == {"status": "enabled", "title": "Document storage"}


def test_unreachable_s3_answers_503_and_the_rest_of_the_app_works(make_settings):
    app, sha = storage_app(
        make_settings,
        storage="s3",
        s3_bucket="a3e-documents",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_access_key_id="AKIAEXAMPLE",
        s3_secret_access_key="never-shown-secret",
        s3_connect_timeout=1,
        s3_max_attempts=1,
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)  # started without contacting the service
        assert client.get("/health").json()["features"]["storage"]["status"] == "enabled"
        started = time.monotonic()
        response = client.get(f"/test/blobs/{sha}/exists")
        assert time.monotonic() - started < 5
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "feature_unavailable"
        assert error["details"] == {"feature": "storage", "status": "failed"}
        assert "cannot reach" in error["message"] and "never-shown-secret" not in response.text
        assert response.headers["retry-after"]
        health = client.get("/health")
        assert health.status_code == 200  # storage never decides readiness
        assert health.json()["status"] == "degraded"
        assert health.json()["features"]["storage"]["status"] == "failed"
        assert "cannot reach" in health.json()["features"]["storage"]["reason"]
        assert "last failure at" in health.json()["features"]["storage"]["reason"]
        assert client.get("/health/ready").status_code == 200
        assert client.get("/api/v1/accreditors").status_code == 200


def test_disabled_storage_answers_503_with_the_reason(make_settings):
    app, sha = storage_app(make_settings, disabled_features=["storage"])
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        response = client.get(f"/test/blobs/{sha}/exists")
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "feature_unavailable"
        assert error["details"] == {"feature": "storage", "status": "disabled"}
        assert "A3E_DISABLED_FEATURES" in error["message"]
        assert client.get("/health").json()["features"]["storage"]["status"] == "disabled"


# ---------------------------------------------------------------------------------------------
# a3e doctor


def test_doctor_reports_local_storage(monkeypatch, tmp_path: Path):
    from a3e.ops.doctor import OK, run_doctor

    monkeypatch.setenv("A3E_DATA_DIR", str(tmp_path / "data"))
    check = {c.name: c for c in run_doctor(timeout=2).checks}["storage"]
    assert check.status == OK and "local directory" in check.message and "writable" in check.message


def test_doctor_reports_s3_reachable_and_unreachable(monkeypatch, moto_endpoint: str, bucket: str, tmp_path: Path):
    from a3e.ops.doctor import FAIL, OK, run_doctor

    monkeypatch.setenv("A3E_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("A3E_STORAGE", "s3")
    monkeypatch.setenv("A3E_S3_BUCKET", bucket)
    monkeypatch.setenv("A3E_S3_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("A3E_S3_ADDRESSING_STYLE", "path")
    monkeypatch.setenv("A3E_S3_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("A3E_S3_SECRET_ACCESS_KEY", "doctor-secret-value")
    check = {c.name: c for c in run_doctor(timeout=2).checks}["storage"]
    assert check.status == OK and f"bucket {bucket} answers" in check.message

    unreachable = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("A3E_S3_ENDPOINT_URL", unreachable)
    started = time.monotonic()
    report = run_doctor(timeout=1)
    assert time.monotonic() - started < 10
    check = {c.name: c for c in report.checks}["storage"]
    assert check.status == FAIL and f"cannot reach {unreachable}" in check.message and "503" in (check.fix or "")
    assert report.exit_code == 1
    assert all("doctor-secret-value" not in f"{c.message} {c.fix}" for c in report.checks)

    monkeypatch.delenv("A3E_S3_BUCKET")
    check = {c.name: c for c in run_doctor(timeout=1).checks}["storage"]
    assert check.status == FAIL and "configuration" in check.message
