"""`a3e probe`: the exception classifier and the CORS judgement as pure functions, then the whole
probe against the real `a3e serve` and small fake servers. All traffic stays on 127.0.0.1."""

from __future__ import annotations

import io
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpcore
import httpx
import pytest

from a3e.ops.probe import (
    BACKEND_DOWN,
    CORS_NOT_ALLOWED,
    HEALTHY,
    INVALID_INPUT,
    NOT_READY,
    Exchange,
    classify_exception,
    evaluate_cors,
    mask_url,
    normalize_base_url,
    print_probe,
    render,
    run_probe,
)
from tests.conftest import a3e_command, free_port

ALLOWED = "http://app.example.test"
OTHER = "http://other.example.test"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request of these tests goes straight to 127.0.0.1, never through a configured proxy."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# ---------------------------------------------------------------------------------------------
# The exception classifier, with constructed exceptions (no network, no DNS).


def raised(*layers: BaseException) -> BaseException:
    """The outermost of `layers`, each raised `from` the next, as httpx chains them."""
    error: BaseException | None = None
    for layer in reversed(layers):
        try:
            if error is None:
                raise layer
            raise layer from error
        except BaseException as caught:  # noqa: BLE001 - building a chain on purpose
            error = caught
    assert error is not None
    return error


def expired_certificate() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate has expired (_ssl.c:1006)"
    )
    error.verify_message = "certificate has expired"
    error.reason = "CERTIFICATE_VERIFY_FAILED"
    return error


@pytest.mark.parametrize(
    ("exception", "kind", "detail_contains"),
    [
        (
            raised(
                httpx.ConnectError("[Errno 111] Connection refused"),
                httpcore.ConnectError("refused"),
                ConnectionRefusedError(111, "Connection refused"),
            ),
            "refused",
            "refused",
        ),
        (
            raised(httpx.ConnectError("[Errno -2] lookup"), socket.gaierror(-2, "Name or service not known")),
            "dns",
            "Name or service not known",
        ),
        (
            raised(httpx.ConnectError("lookup"), socket.gaierror(-3, "Temporary failure in name resolution")),
            "dns",
            "Temporary failure",
        ),
        (
            raised(httpx.ConnectError("tls"), httpcore.ConnectError("tls"), expired_certificate()),
            "tls",
            "certificate not accepted: certificate has expired",
        ),
        # Messages that no text matching would recognise: the wrapped type decides.
        (
            raised(httpx.ConnectError("lookup"), socket.gaierror(-9, "Address family for hostname not supported")),
            "dns",
            "Address family",
        ),
        (raised(httpx.ConnectError("handshake"), ssl.SSLError(1, "sslv3 alert handshake failure")), "tls", "TLS"),
        (raised(httpx.ConnectError("connect"), ConnectionRefusedError(1, "nope")), "refused", "nothing listens"),
        (
            raised(httpx.ConnectError("tls"), ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")),
            "tls",
            "TLS",
        ),
        (raised(httpx.ConnectTimeout("timed out"), httpcore.ConnectTimeout("timed out")), "timeout", "no connection"),
        (raised(httpx.ReadTimeout("timed out"), TimeoutError("timed out")), "timeout", "connected"),
        (httpx.PoolTimeout("pool"), "timeout", ""),
        # Without a chained cause, the message alone decides.
        (httpx.ConnectError("[Errno 111] Connection refused"), "refused", "refused"),
        (httpx.ConnectError("[Errno -2] Name or service not known"), "dns", "does not resolve"),
        (httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), "tls", "TLS"),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), "other", "closed"),
        (raised(httpx.ConnectError("reset"), ConnectionResetError(104, "Connection reset by peer")), "other", "reset"),
    ],
)
def test_classify_exception(exception: BaseException, kind: str, detail_contains: str) -> None:
    failure = classify_exception(exception)
    assert failure.kind == kind, failure
    assert detail_contains in failure.detail


def test_classify_exception_survives_a_cycle_in_the_chain() -> None:
    first, second = httpx.ConnectError("first"), RuntimeError("second")
    first.__cause__, second.__cause__ = second, first
    assert classify_exception(first).kind == "other"


# ---------------------------------------------------------------------------------------------
# The CORS judgement on constructed exchanges.


def preflight_ok(origin: str, **headers: str) -> Exchange:
    base = {
        "access-control-allow-origin": origin,
        "access-control-allow-credentials": "true",
        "access-control-allow-headers": "authorization, content-type",
        "vary": "Origin",
    }
    return Exchange("OPTIONS", "/health", status=204, headers={**base, **headers})


def simple_ok(origin: str, **headers: str) -> Exchange:
    base = {"access-control-allow-origin": origin, "access-control-allow-credentials": "true", "vary": "Origin"}
    return Exchange("GET", "/health", status=200, headers={**base, **headers})


def test_cors_allowed_when_both_answers_name_the_origin() -> None:
    check = evaluate_cors(ALLOWED, preflight_ok(ALLOWED), simple_ok(ALLOWED))
    assert check.status == "ok", check.summary
    assert check.details["allowed"] is True


def test_cors_wildcard_is_a_warning_about_credentials() -> None:
    check = evaluate_cors(ALLOWED, preflight_ok("*"), simple_ok("*"))
    assert check.status == "warn"
    assert "credentials" in check.summary


@pytest.mark.parametrize(
    ("preflight", "simple", "expected"),
    [
        (preflight_ok(ALLOWED + "/"), simple_ok(ALLOWED), "trailing slash"),
        (preflight_ok(f"{ALLOWED}, {ALLOWED}"), simple_ok(ALLOWED), "2 times"),
        (preflight_ok(OTHER), simple_ok(OTHER), f"allowed {OTHER}, not {ALLOWED}"),
        (preflight_ok(ALLOWED), Exchange("GET", "/health", status=200, headers={}), "strips CORS headers"),
        (preflight_ok(ALLOWED, **{"access-control-allow-headers": "content-type"}), simple_ok(ALLOWED), "authorization"),
        (
            Exchange("OPTIONS", "/health", status=301, headers={"location": "https://api.example.test/health"}),
            simple_ok(ALLOWED),
            "do not follow redirects",
        ),
        (
            Exchange("OPTIONS", "/health", status=405, headers={"content-type": "text/plain"}, body=b"Method Not Allowed"),
            Exchange("GET", "/health", status=200, headers={}),
            "not A³E's answer",
        ),
    ],
)
def test_cors_refusals_are_explained(preflight: Exchange, simple: Exchange, expected: str) -> None:
    check = evaluate_cors(ALLOWED, preflight, simple)
    assert check.status == "fail"
    assert expected in check.summary
    assert check.hint


def test_cors_origin_not_listed_names_cors_origins() -> None:
    envelope = {"error": {"code": "cors_origin_not_allowed", "message": "no", "request_id": "rid-1"}}
    preflight = Exchange(
        "OPTIONS", "/health", status=403,
        headers={"content-type": "application/json", "x-request-id": "rid-1"}, body=json.dumps(envelope).encode(),
    )
    check = evaluate_cors(OTHER, preflight, Exchange("GET", "/health", status=200, headers={"x-request-id": "rid-2"}))
    assert check.status == "fail"
    assert "403 with no Access-Control-Allow-Origin: the origin is not in CORS_ORIGINS" in check.summary
    assert check.hint is not None and f"add {OTHER} to CORS_ORIGINS" in check.hint
    assert check.request_id == "rid-1"


# ---------------------------------------------------------------------------------------------
# Inputs.


def test_base_url_is_shown_without_credentials_or_query() -> None:
    url, display, notes = normalize_base_url("https://user:hunter2@api.example.test/base/?token=hunter2")
    assert display == "https://api.example.test/base"
    assert "hunter2" not in display and notes
    assert url.path == "/base"
    assert "hunter2" not in mask_url("https://user:hunter2@api.example.test/?token=hunter2")


@pytest.mark.parametrize(
    ("url", "origins", "timeout"),
    [("ftp://127.0.0.1", [], 1.0), ("http://127.0.0.1:9", ["app.example.test"], 1.0), ("http://127.0.0.1:9", ["*"], 1.0),
     ("http://127.0.0.1:9", [], 0)],
)
def test_invalid_input_is_refused_before_any_request(url: str, origins: list[str], timeout: float) -> None:
    result = run_probe(url, origins=origins, timeout=timeout)
    assert result.verdict == INVALID_INPUT
    assert result.exit_code == 64
    assert result.checks == []


# ---------------------------------------------------------------------------------------------
# Fake servers on 127.0.0.1.


Reply = tuple[int, dict[str, str], bytes]


class _Handler(BaseHTTPRequestHandler):
    server: _FakeServer

    def _answer(self) -> None:
        self.server.seen.append((self.command, self.path))
        status, headers, body = self.server.replies.get(self.path, self.server.default)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_OPTIONS = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


class _FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    replies: dict[str, Reply]
    default: Reply
    seen: list[tuple[str, str]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def fake_server(default: Reply, replies: dict[str, Reply] | None = None) -> Iterator[_FakeServer]:
    server = _FakeServer(("127.0.0.1", 0), _Handler)
    server.default, server.replies, server.seen = default, replies or {}, []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


BAD_GATEWAY_HTML = (
    502,
    {"Content-Type": "text/html; charset=utf-8"},
    b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>",
)


def test_proxy_502_with_html_means_backend_down() -> None:
    with fake_server(BAD_GATEWAY_HTML) as proxy:
        result = run_probe(proxy.url, origins=[ALLOWED], timeout=3)
    assert result.verdict == BACKEND_DOWN
    assert result.exit_code == 2
    health = result.check("health")
    assert health is not None and health.status == "fail"
    assert "502" in health.summary and "502 Bad Gateway" in health.summary
    assert "down behind a proxy" in health.summary
    assert "deploy logs" in (result.hint or "")
    assert health.details["kind"] == "other"
    cors = result.check("cors", ALLOWED)
    assert cors is not None and cors.status == "skip"  # not blamed on CORS
    assert ("OPTIONS", "/health") not in proxy.seen
    assert render(result).splitlines()[-1] == "verdict: backend down"


def test_proxy_503_with_platform_text_means_backend_down() -> None:
    reply = (503, {"Content-Type": "text/plain"}, b"Application failed to respond")
    with fake_server(reply) as proxy:
        result = run_probe(proxy.url, timeout=3)
    assert result.verdict == BACKEND_DOWN
    assert "Application failed to respond" in result.check("health").summary  # type: ignore[union-attr]


def test_something_that_is_not_a3e_is_not_healthy() -> None:
    page = (200, {"Content-Type": "text/html"}, b"<html><title>My front end</title></html>")
    with fake_server(page) as server:
        result = run_probe(server.url, timeout=3)
    assert result.verdict == BACKEND_DOWN
    assert "not A³E's health JSON" in result.check("health").summary  # type: ignore[union-attr]


def test_redirect_is_reported_not_followed() -> None:
    with fake_server((404, {}, b"")) as target:
        location = f"{target.url}/elsewhere/health"
        secret_location = location + "?state=hunter2"
        with fake_server((301, {"Location": secret_location}, b"")) as server:
            result = run_probe(server.url, origins=[ALLOWED], timeout=3)
        assert target.seen == []  # never followed
    assert result.verdict == BACKEND_DOWN
    health = result.check("health")
    assert health is not None and location in health.summary and "301" in health.summary
    assert f"probe {target.url}/elsewhere instead" in (health.hint or "")
    assert "hunter2" not in render(result) and "hunter2" not in json.dumps(result.as_dict())


def test_docs_failure_is_only_a_warning() -> None:
    health = {
        "status": "ok", "ready": True, "version": "9.9.9", "environment": "production", "uptime_seconds": 1.0,
        "checks": {"database": {"status": "ok", "detail": "fine"}, "migrations": {"status": "ok", "detail": "fine"}},
        "features": {},
    }
    replies = {"/health": (200, {"Content-Type": "application/json", "X-Request-ID": "rid-42"}, json.dumps(health).encode())}
    with fake_server((404, {"Content-Type": "text/plain"}, b"not found"), replies) as server:
        result = run_probe(server.url, timeout=3)
    assert result.verdict == HEALTHY and result.exit_code == 0
    assert result.check("docs").status == "warn"  # type: ignore[union-attr]
    assert result.check("health").request_id == "rid-42"  # type: ignore[union-attr]
    assert "[request id rid-42]" in render(result)


def test_tls_to_a_plain_http_server_is_a_tls_failure() -> None:
    with fake_server((200, {}, b"")) as server:
        result = run_probe(server.url.replace("http://", "https://"), timeout=3)
    assert result.verdict == BACKEND_DOWN
    connection = result.check("connection")
    assert connection is not None and connection.details["kind"] == "tls"
    assert "http://" in (connection.hint or "")


def test_a_server_that_never_answers_times_out_within_the_bound() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes the connection; nobody ever answers
        started = time.monotonic()
        result = run_probe(f"http://127.0.0.1:{listener.getsockname()[1]}", origins=[ALLOWED], timeout=0.5)
        elapsed = time.monotonic() - started
    assert result.verdict == BACKEND_DOWN
    connection = result.check("connection")
    assert connection is not None and connection.details["kind"] == "timeout"
    assert "hung or overloaded" in (connection.hint or "")
    assert elapsed < 5


def test_nothing_listening_means_backend_down() -> None:
    port = free_port()
    result = run_probe(f"http://127.0.0.1:{port}", origins=[ALLOWED], timeout=2)
    assert result.verdict == BACKEND_DOWN
    assert result.exit_code == 2
    connection = result.check("connection")
    assert connection is not None and connection.status == "fail"
    assert connection.details["kind"] == "refused"
    assert f"127.0.0.1:{port}" in (connection.hint or "")
    assert "a3e doctor" in (connection.hint or "")
    assert [check.status for check in result.checks if check.name != "connection"] == ["skip", "skip", "skip"]


# ---------------------------------------------------------------------------------------------
# The real server.


def wait_until_ready(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} not ready after {timeout}s")


@pytest.fixture
def ready_server(run_server):
    server = run_server({"CORS_ORIGINS": ALLOWED})
    wait_until_ready(server.url)
    return server


@pytest.mark.slow
def test_healthy_with_an_allowed_origin(ready_server) -> None:
    result = run_probe(ready_server.url, origins=[ALLOWED + "/"], timeout=5)  # trailing slash normalised
    assert result.verdict == HEALTHY, render(result)
    assert result.exit_code == 0
    assert result.origins == [ALLOWED]
    assert [(check.name, check.status) for check in result.checks] == [
        ("connection", "ok"), ("health", "ok"), ("docs", "ok"), ("cors", "ok"),
    ]
    health = result.check("health")
    assert health is not None and health.request_id and health.details["body"]["ready"] is True
    cors = result.check("cors", ALLOWED)
    assert cors is not None
    assert cors.details["preflight"]["headers"]["access-control-allow-origin"] == ALLOWED
    assert cors.details["simple"]["headers"]["access-control-allow-origin"] == ALLOWED
    assert render(result).splitlines()[-1] == "verdict: healthy"


@pytest.mark.slow
def test_origin_not_in_cors_origins(ready_server) -> None:
    result = run_probe(ready_server.url, origins=[OTHER], timeout=5)
    assert result.verdict == CORS_NOT_ALLOWED
    assert result.exit_code == 4
    assert result.failed_origins == [OTHER]
    text = render(result)
    assert "preflight answered 403 with no Access-Control-Allow-Origin: the origin is not in CORS_ORIGINS" in text
    assert f"add {OTHER} to CORS_ORIGINS" in text
    assert text.splitlines()[-1] == "verdict: cors not allowed"


@pytest.mark.slow
def test_several_origins_name_only_the_refused_one(ready_server) -> None:
    third = "https://third.example.test"
    result = run_probe(ready_server.url, origins=[ALLOWED, OTHER, third], timeout=5)
    assert result.verdict == CORS_NOT_ALLOWED
    assert result.failed_origins == [OTHER, third]
    assert result.check("cors", ALLOWED).status == "ok"  # type: ignore[union-attr]
    assert result.check("cors", OTHER).status == "fail"  # type: ignore[union-attr]
    assert OTHER in result.reason and third in result.reason and ALLOWED not in result.reason
    assert f"add {OTHER} and {third} to CORS_ORIGINS" in (result.hint or "")


@pytest.mark.slow
def test_not_ready_when_the_schema_was_never_migrated(run_server) -> None:
    server = run_server({"CORS_ORIGINS": ALLOWED, "A3E_AUTO_MIGRATE": "false"})
    result = run_probe(server.url, origins=[ALLOWED, OTHER], timeout=5)
    assert result.verdict == NOT_READY, render(result)
    assert result.exit_code == 3
    assert "migrations" in result.reason
    assert "a3e migrate" in (result.hint or "")
    health = result.check("health")
    assert health is not None and health.details["status_code"] == 503
    # CORS is still checked and reported, but "not ready" comes first.
    assert result.check("cors", ALLOWED).status == "ok"  # type: ignore[union-attr]
    assert result.failed_origins == [OTHER]
    assert render(result).splitlines()[-1] == "verdict: not ready"


@pytest.mark.slow
def test_cli_text_output_and_exit_code(ready_server) -> None:
    completed = subprocess.run(
        [*a3e_command("probe", ready_server.url, "--origin", ALLOWED, "--origin", OTHER, "--timeout", "5")],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 4, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[-1] == "verdict: cors not allowed"
    assert any(line.split()[:2] == ["ok", "cors"] and ALLOWED in line for line in lines)
    assert any(line.split()[:2] == ["fail", "cors"] and OTHER in line for line in lines)


@pytest.mark.slow
def test_cli_json_output(ready_server) -> None:
    completed = subprocess.run(
        [*a3e_command("probe", ready_server.url, "--origin", ALLOWED, "--json")],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads(completed.stdout)  # one JSON object and nothing else
    assert report["verdict"] == HEALTHY and report["exit_code"] == 0
    assert report["url"] == ready_server.url
    assert report["origins"] == [ALLOWED] and report["failed_origins"] == []
    names = [check["name"] for check in report["checks"]]
    assert names == ["connection", "health", "docs", "cors"]
    for check in report["checks"]:
        assert {"name", "status", "summary", "hint", "request_id", "details"} <= check.keys()
    health = report["checks"][1]
    assert health["details"]["body"]["checks"]["migrations"]["status"] == "ok"
    assert report["checks"][3]["origin"] == ALLOWED


def test_cli_on_a_stopped_server_exits_2() -> None:
    completed = subprocess.run(
        a3e_command("probe", f"http://127.0.0.1:{free_port()}", "--timeout", "2"),
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "refused" in completed.stdout
    assert completed.stdout.splitlines()[-1] == "verdict: backend down"


def test_print_probe_json_is_one_object() -> None:
    result = run_probe("http://127.0.0.1:9", origins=["not an origin"], timeout=1)
    out = io.StringIO()
    print_probe(result, as_json=True, file=out)
    report = json.loads(out.getvalue())
    assert report["verdict"] == INVALID_INPUT and report["exit_code"] == 64
    assert "--origin" in report["reason"]


def test_module_runs_without_a_server_import() -> None:
    """`a3e probe` must not need the server's heavy modules (uvicorn, the app)."""
    code = "import sys, a3e.ops.probe; print('a3e.app' in sys.modules, 'uvicorn' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.stdout.split() == ["False", "False"], completed.stderr
