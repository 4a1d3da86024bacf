"""The streaming upload receiver, behind the real middleware on a real uvicorn server: files land
in temporary files with their exact SHA-256, reading stops at the limit (413 before the body is
consumed), malformed or abusive bodies get 4xx in the envelope, and no temporary file survives a
failure, a disconnect or the end of the request."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Request

from a3e.app import create_app
from a3e.core.middleware import MULTIPART_ALLOWANCE_BYTES
from a3e.evidence.uploads import HEAD_BYTES, receive_upload, sanitize_filename
from tests.conftest import free_port

MIB = 1024 * 1024
BOUNDARY = "a3e-test-boundary-7MA4YWxkTrZu0gW"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


class CountingApp:
    """Counts the request-body bytes the app pulled from the server: what was actually read."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.received = 0

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        async def counting_receive():  # type: ignore[no-untyped-def]
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
            return message

        await self.app(scope, counting_receive, send)


@dataclass
class UploadServer:
    port: int
    tmp_dir: Path
    counter: CountingApp
    seen: list[dict] = field(default_factory=list)

    def url(self, path: str = "/test/upload") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def temp_files(self) -> list[str]:
        return sorted(os.listdir(self.tmp_dir)) if self.tmp_dir.exists() else []


def build_app(make_settings, tmp_dir: Path, seen: list[dict], **settings: Any) -> Any:
    app = create_app(make_settings(**settings))
    limits = {"max_files": 2, "max_fields": 3, "max_field_bytes": 1024, "tmp_dir": tmp_dir}

    def describe(upload) -> dict:  # type: ignore[no-untyped-def]
        record = {
            "files": [
                {
                    "field_name": f.field_name,
                    "filename": f.filename,
                    "content_type": f.content_type,
                    "size": f.size,
                    "sha256": f.sha256,
                    "head_sha256": hashlib.sha256(f.head).hexdigest(),
                    "head_size": len(f.head),
                    "path": str(f.path),
                    "exists_during": f.path.is_file() and f.path.stat().st_size == f.size,
                }
                for f in upload.files
            ],
            "fields": upload.fields,
        }
        seen.append(record)
        return record

    @app.post("/test/upload")
    async def upload(request: Request) -> dict:
        async with receive_upload(request, **limits) as received:
            return describe(received)

    @app.post("/test/upload-optional")
    async def upload_optional(request: Request) -> dict:
        async with receive_upload(request, min_files=0, **limits) as received:
            return describe(received)

    @app.post("/test/upload-then-fail")
    async def upload_then_fail(request: Request) -> dict:
        async with receive_upload(request, **limits) as received:
            describe(received)
            raise RuntimeError("the caller failed after receiving")

    return app


@pytest.fixture
def upload_server(make_settings, tmp_path: Path) -> Iterator[Any]:
    import uvicorn

    started: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**settings: Any) -> UploadServer:
        seen: list[dict] = []
        tmp_dir = tmp_path / f"upload-tmp-{len(started)}"
        counter = CountingApp(build_app(make_settings, tmp_dir, seen, **settings))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(counter, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        started.append((server, thread))
        deadline = time.monotonic() + 15
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
            time.sleep(0.01)
        return UploadServer(port, tmp_dir, counter, seen)

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(15)


def part(name: str, content: bytes, filename: str | None = None, content_type: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    headers = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if content_type:
        headers += f"Content-Type: {content_type}\r\n"
    return headers.encode() + b"\r\n" + content + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def in_slices(data: bytes, size: int) -> Iterator[bytes]:
    """Odd-sized pieces, so that boundaries and headers straddle the chunks the server reads."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["request_id"]
    return error


def wait_for(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# ---------------------------------------------------------------------------------------------
# Receiving


def test_a_multi_megabyte_upload_streams_to_a_temp_file_with_its_exact_sha256(upload_server):
    server = upload_server(max_upload_mb=8)
    data = os.urandom(5 * MIB + 12345)
    payload = body(
        part("title", "Faculty handbook — 2026".encode()),
        part("file", data, filename="handbook.PDF", content_type="Application/PDF; charset=binary"),
        part("section", b"6.1"),
    )
    response = httpx.post(
        server.url(), content=in_slices(payload, 7919), headers={"content-type": MULTIPART}, timeout=30
    )
    assert response.status_code == 200, response.text
    received = response.json()
    assert received["fields"] == {"title": "Faculty handbook — 2026", "section": "6.1"}
    [file] = received["files"]
    assert file["field_name"] == "file" and file["filename"] == "handbook.PDF"
    assert file["content_type"] == "application/pdf"
    assert file["size"] == len(data)
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    assert file["head_size"] == HEAD_BYTES and file["head_sha256"] == hashlib.sha256(data[:HEAD_BYTES]).hexdigest()
    assert file["exists_during"] is True
    assert not Path(file["path"]).exists()  # deleted when the block ended
    assert server.temp_files() == []


def test_two_files_and_a_small_one_keep_their_own_hashes_and_heads(upload_server):
    server = upload_server()
    small, other = b"%PDF-1.7 tiny", os.urandom(100_000)
    response = httpx.post(
        server.url(),
        files=[("file", ("a.pdf", small, "application/pdf")), ("appendix", ("b.bin", other, "application/octet-stream"))],
    )
    assert response.status_code == 200, response.text
    first, second = response.json()["files"]
    assert (first["size"], first["sha256"], first["head_size"]) == (len(small), hashlib.sha256(small).hexdigest(), len(small))
    assert (second["field_name"], second["sha256"]) == ("appendix", hashlib.sha256(other).hexdigest())
    assert server.temp_files() == []


def test_filenames_are_sanitized_to_a_safe_basename(upload_server):
    server = upload_server()
    payload = body(part("file", b"x", filename="../../etc/passwd"), part("appendix", b"y", filename="C:\\Users\\dean\\report.docx"))
    response = httpx.post(server.url(), content=payload, headers={"content-type": MULTIPART})
    assert [f["filename"] for f in response.json()["files"]] == ["passwd", "report.docx"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("/var/tmp/../report.pdf", "report.pdf"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("..", "upload"),
        ("", "upload"),
        (".htaccess", "htaccess"),
        ("evil\u202etxt.exe", "eviltxt.exe"),  # a right-to-left override would disguise the extension
        ("line\r\nbreak\x00.pdf", "linebreak.pdf"),
        ("trailing. . ", "trailing"),
        ("Cafe\u0301.pdf", "Café.pdf"),
    ],
)
def test_sanitize_filename(raw: str, expected: str):
    assert sanitize_filename(raw) == expected


def test_long_filenames_keep_their_extension_within_255_bytes():
    name = sanitize_filename("é" * 300 + ".pdf")
    assert name.endswith(".pdf") and len(name.encode()) <= 255
    assert name.encode().decode() == name  # never cut inside a character


def test_an_empty_file_input_is_not_a_file_but_an_empty_file_is(upload_server):
    server = upload_server()
    payload = body(part("file", b"", filename=""), part("note", b"no file chosen"))
    response = httpx.post(server.url("/test/upload-optional"), content=payload, headers={"content-type": MULTIPART})
    assert response.status_code == 200, response.text
    assert response.json() == {"files": [], "fields": {"note": "no file chosen"}}
    payload = body(part("file", b"", filename="upload"))
    response = httpx.post(server.url("/test/upload-optional"), content=payload, headers={"content-type": MULTIPART})
    [empty] = response.json()["files"]
    assert (empty["filename"], empty["size"], empty["sha256"]) == ("upload", 0, hashlib.sha256(b"").hexdigest())
    assert server.temp_files() == []


def test_temp_files_are_deleted_when_the_caller_fails(upload_server):
    server = upload_server()
    response = httpx.post(server.url("/test/upload-then-fail"), files={"file": ("a.txt", b"hello", "text/plain")})
    assert_error(response, 500, "internal_error")
    [record] = server.seen
    assert record["files"][0]["exists_during"] is True
    assert not Path(record["files"][0]["path"]).exists()
    assert server.temp_files() == []


# ---------------------------------------------------------------------------------------------
# Limits


def test_a_file_of_exactly_the_limit_passes_the_request_guard(upload_server):
    server = upload_server(max_upload_mb=1)
    data = os.urandom(MIB)
    response = httpx.post(
        server.url(), files={"file": ("exact.bin", data, "application/octet-stream")}, data={"title": "t" * 1000}
    )
    assert response.status_code == 200, response.text
    assert response.json()["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()

    over = httpx.post(server.url(), files={"file": ("over.bin", data + b"!", "application/octet-stream")})
    error = assert_error(over, 413, "request_too_large")
    assert error["message"] == "The upload is larger than the limit of 1 MB"
    assert error["details"] == {"limit_bytes": MIB}
    assert server.temp_files() == []


def test_413_is_answered_before_the_body_is_consumed(upload_server):
    server = upload_server(max_upload_mb=1)
    produced = 0
    total = 64 * MIB

    def endless_upload() -> Iterator[bytes]:
        nonlocal produced
        yield part("file", b"", filename="huge.bin")[: -2]  # headers of a file part, then its data
        chunk = os.urandom(64 * 1024)
        while produced < total:
            produced += len(chunk)
            yield chunk

    # A generator body goes out chunked, with no Content-Length for the guard to refuse up front.
    response = httpx.post(server.url(), content=endless_upload(), headers={"content-type": MULTIPART}, timeout=30)
    error = assert_error(response, 413, "request_too_large")
    assert error["message"] == "The upload is larger than the limit of 1 MB"
    assert response.headers["connection"] == "close"
    # The server read barely past the limit; the client had pushed only what the socket buffers held.
    assert server.counter.received < MIB + 512 * 1024, server.counter.received
    assert produced < total // 2, produced
    assert wait_for(lambda: server.temp_files() == [])


def test_a_declared_length_beyond_the_upload_limit_is_refused_without_reading(upload_server):
    server = upload_server(max_upload_mb=1)
    declared = MIB + MULTIPART_ALLOWANCE_BYTES + 1
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            f"POST /test/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {MULTIPART}\r\n"
            f"Content-Length: {declared}\r\n\r\n".encode()
        )
        answer = sock.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 413")
    assert '"code":"request_too_large"' in answer and "limit of 1 MB" in answer
    assert server.counter.received == 0


def test_too_many_files(upload_server):
    server = upload_server()
    files = [("file", (f"{n}.txt", b"x" * 10, "text/plain")) for n in range(3)]
    error = assert_error(httpx.post(server.url(), files=files), 400, "too_many_parts")
    assert error["details"] == {"max_files": 2}
    assert server.temp_files() == []


def test_too_many_fields(upload_server):
    server = upload_server()
    response = httpx.post(
        server.url(), files={"file": ("a.txt", b"x", "text/plain")}, data={f"f{n}": "v" for n in range(4)}
    )
    error = assert_error(response, 400, "too_many_parts")
    assert error["details"] == {"max_fields": 3}
    assert server.temp_files() == []


def test_an_oversized_text_field(upload_server):
    server = upload_server()
    response = httpx.post(server.url(), files={"file": ("a.txt", b"x", "text/plain")}, data={"description": "d" * 1025})
    error = assert_error(response, 413, "request_too_large")
    assert error["details"] == {"field": "description", "limit_bytes": 1024}
    assert "description" in error["message"]
    assert server.temp_files() == []


def test_oversized_part_headers(upload_server):
    server = upload_server()
    payload = body(part("file", b"x", filename="a" * 9000 + ".txt"))
    assert_error(httpx.post(server.url(), content=payload, headers={"content-type": MULTIPART}), 400, "malformed_multipart")


# ---------------------------------------------------------------------------------------------
# Missing or malformed


def test_missing_file_part_is_a_validation_error(upload_server):
    server = upload_server()
    response = httpx.post(server.url(), content=body(part("title", b"only text")), headers={"content-type": MULTIPART})
    error = assert_error(response, 422, "validation_error")
    assert "no file part" in error["message"]


@pytest.mark.parametrize(
    ("content_type", "content", "status", "code"),
    [
        ("application/json", b'{"file": "nope"}', 415, "unsupported_media_type"),
        (None, b"raw bytes", 415, "unsupported_media_type"),
        ("multipart/form-data", body(part("file", b"x", filename="a.txt")), 400, "malformed_multipart"),
        (MULTIPART, b"", 400, "malformed_multipart"),
        (MULTIPART, b"this is not multipart at all", 400, "malformed_multipart"),
        (MULTIPART, part("file", b"no closing boundary", filename="a.txt"), 400, "malformed_multipart"),
        (MULTIPART, f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nno name\r\n--{BOUNDARY}--\r\n".encode(), 400, "malformed_multipart"),
        (MULTIPART, body(part("title", "caf\xe9".encode("latin-1")), part("file", b"x", filename="a.txt")), 422, "validation_error"),
    ],
    ids=["json", "no-content-type", "no-boundary", "empty", "garbage", "truncated", "part-without-name", "field-not-utf8"],
)
def test_malformed_uploads_are_4xx_in_the_envelope(upload_server, content_type, content, status, code):
    server = upload_server()
    headers = {"content-type": content_type} if content_type else {}
    assert_error(httpx.post(server.url(), content=content, headers=headers), status, code)
    assert server.temp_files() == []


def test_a_client_that_disconnects_mid_upload_leaves_no_temp_file(upload_server):
    server = upload_server(max_upload_mb=8)
    declared = 4 * MIB
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            f"POST /test/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {MULTIPART}\r\n"
            f"Content-Length: {declared}\r\n\r\n".encode()
        )
        sock.sendall(part("file", b"", filename="partial.bin")[:-2] + os.urandom(1 * MIB))
        assert wait_for(lambda: len(server.temp_files()) == 1), "the upload never reached a temp file"
    # The connection is closed with three quarters of the body unsent.
    assert wait_for(lambda: server.temp_files() == []), server.temp_files()
    assert server.seen == []


def stream_until_answered(port: int, path: str, content_type: str, first: bytes) -> tuple[str, int, bool]:
    """Send a chunked body that never ends until the server answers; then report the status line,
    the bytes sent, and whether the server closed the connection instead of draining the rest."""
    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    sent, answer = 0, b""
    filler = chunk(b"x" * 65536)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode() + chunk(first)
        )
        sock.settimeout(0.05)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                received = sock.recv(65536)
            except TimeoutError:
                received = None
            except ConnectionResetError:
                return answer.split(b"\r\n", 1)[0].decode(), sent, True
            if received == b"":
                return answer.split(b"\r\n", 1)[0].decode(), sent, True
            if received:
                answer += received
            try:
                sock.sendall(filler)
                sent += 65536
            except (BrokenPipeError, ConnectionResetError):
                return answer.split(b"\r\n", 1)[0].decode(), sent, True
            except TimeoutError:
                pass
    return answer.split(b"\r\n", 1)[0].decode(), sent, False


def test_an_early_refusal_closes_the_connection_instead_of_draining_the_body(upload_server):
    server = upload_server(max_upload_mb=1, max_body_kb=64)
    # A third file part, whose data never ends: refused as soon as its headers arrive.
    three_files = part("file", b"x", filename="a.txt") + part("f2", b"x", filename="b.txt") + part("f3", b"", filename="c.txt")[:-2]
    status, sent, closed = stream_until_answered(server.port, "/test/upload", MULTIPART, three_files)
    assert status == "HTTP/1.1 400 Bad Request" and closed and sent < 16 * MIB
    # The request guard's own 413 on an ordinary body does the same.
    status, sent, closed = stream_until_answered(server.port, "/test/upload", "application/json", b"[")
    assert status.startswith("HTTP/1.1 415") and closed
    status, sent, closed = stream_until_answered(server.port, "/api/v1/auth/login", "application/json", b'{"email": "')
    assert status == "HTTP/1.1 413 Request Entity Too Large" and closed and sent < 16 * MIB
    assert server.temp_files() == []
