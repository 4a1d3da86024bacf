"""Every error uses one envelope, carries a request id, and carries CORS headers for an allowed
origin — so that a browser shows the real error instead of "CORS error"."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from a3e.app import create_app
from a3e.core.errors import RateLimited

ALLOWED = "https://app.example.edu"
OTHER = "https://evil.example.com"


class Payload(BaseModel):
    name: str
    count: int


@pytest.fixture
def client(make_settings, database_url):
    app = create_app(make_settings(cors_origins=[ALLOWED], max_body_kb=1, database_url=database_url))

    @app.post("/api/v1/test/echo")
    async def echo(payload: Payload) -> dict:
        return payload.model_dump()

    @app.get("/api/v1/test/crash")
    async def crash() -> dict:
        raise RuntimeError("boom with password=hunter2")

    @app.get("/api/v1/test/sync-crash")
    def sync_crash() -> dict:
        raise ValueError("sync boom")

    @app.get("/api/v1/test/limited")
    async def limited() -> dict:
        raise RateLimited("Too many attempts; try again later", retry_after=30)

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


def assert_cors(response, origin: str = ALLOWED) -> None:
    assert response.headers.get("access-control-allow-origin") == origin
    assert response.headers.get("access-control-allow-credentials") == "true"
    assert "Origin" in response.headers.get("vary", "")


def test_404_is_an_envelope_with_cors(client):
    response = client.get("/api/v1/nothing-here", headers={"Origin": ALLOWED})
    error = assert_envelope(response, 404, "not_found")
    assert "/api/v1/nothing-here" in error["message"]
    assert_cors(response)


def test_405_is_an_envelope_with_cors(client):
    response = client.delete("/health/live", headers={"Origin": ALLOWED})
    assert_envelope(response, 405, "method_not_allowed")
    assert_cors(response)


def test_422_names_the_field_without_echoing_input(client):
    response = client.post(
        "/api/v1/test/echo", json={"name": "secret-input-value", "count": "many"}, headers={"Origin": ALLOWED}
    )
    error = assert_envelope(response, 422, "validation_error")
    assert "count" in error["message"]
    assert error["details"][0]["location"] == ["body", "count"]
    assert "secret-input-value" not in response.text and "many" not in response.text
    assert_cors(response)


def test_malformed_json_is_422_not_500(client):
    response = client.post(
        "/api/v1/test/echo", content=b"{not json", headers={"Origin": ALLOWED, "Content-Type": "application/json"}
    )
    assert_envelope(response, 422, "validation_error")
    assert_cors(response)


def test_500_is_an_envelope_with_cors_and_no_internals(client, caplog):
    for path in ("/api/v1/test/crash", "/api/v1/test/sync-crash"):
        response = client.get(path, headers={"Origin": ALLOWED})
        error = assert_envelope(response, 500, "internal_error")
        assert "boom" not in response.text and "Traceback" not in response.text
        assert "request id" in error["message"]
        assert_cors(response)
    # The crash is logged, with its request id, for the operator.
    assert any("Unhandled error" in record.getMessage() for record in caplog.records)


def test_413_on_declared_and_streamed_bodies(client):
    big = b'{"name": "' + b"x" * 4096 + b'", "count": 1}'
    response = client.post(
        "/api/v1/test/echo", content=big, headers={"Origin": ALLOWED, "Content-Type": "application/json"}
    )
    error = assert_envelope(response, 413, "request_too_large")
    assert "1 KB" in error["message"]
    assert_cors(response)

    def chunks():  # no Content-Length: the limit applies while streaming
        for _ in range(8):
            yield b"x" * 512

    response = client.post(
        "/api/v1/test/echo", content=chunks(), headers={"Origin": ALLOWED, "Content-Type": "application/json"}
    )
    assert_envelope(response, 413, "request_too_large")
    assert_cors(response)


def test_429_carries_retry_after(client):
    response = client.get("/api/v1/test/limited", headers={"Origin": ALLOWED})
    assert_envelope(response, 429, "rate_limited")
    assert response.headers["retry-after"] == "30"
    assert_cors(response)
    assert "Retry-After" in response.headers["access-control-expose-headers"]


def test_success_responses_carry_cors_and_expose_the_request_id(client):
    response = client.post("/api/v1/test/echo", json={"name": "a", "count": 1}, headers={"Origin": ALLOWED})
    assert response.status_code == 200
    assert_cors(response)
    assert "X-Request-ID" in response.headers["access-control-expose-headers"]


def test_origin_match_tolerates_case_and_trailing_slash(client):
    response = client.get("/health/live", headers={"Origin": ALLOWED + "/"})
    assert response.headers.get("access-control-allow-origin") == ALLOWED + "/"


def test_preflight_for_allowed_origin(client):
    response = client.options(
        "/api/v1/test/echo",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type, X-Request-ID",
        },
    )
    assert response.status_code == 204
    assert_cors(response)
    allowed_methods = response.headers["access-control-allow-methods"]
    for method in ("GET", "POST", "PATCH", "DELETE"):
        assert method in allowed_methods
    assert set(response.headers["access-control-allow-headers"].split(", ")) == {"authorization", "content-type", "x-request-id"}
    assert int(response.headers["access-control-max-age"]) > 0


def test_preflight_works_on_any_path_even_unrouted(client):
    response = client.options(
        "/api/v1/does-not-exist-yet", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET"}
    )
    assert response.status_code == 204
    assert_cors(response)


def test_preflight_refuses_unknown_method_and_header(client):
    response = client.options("/health", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "TRACE"})
    assert_envelope(response, 400, "cors_preflight_refused")
    response = client.options(
        "/health",
        headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-evil"},
    )
    error = assert_envelope(response, 400, "cors_preflight_refused")
    assert "x-evil" in error["message"]


def test_disallowed_origin_gets_no_cors_headers(client):
    for response in (
        client.get("/health/live", headers={"Origin": OTHER}),
        client.get("/api/v1/nothing", headers={"Origin": OTHER}),
        client.get("/api/v1/test/crash", headers={"Origin": OTHER}),
        client.options("/health", headers={"Origin": OTHER, "Access-Control-Request-Method": "GET"}),
    ):
        assert not [name for name in response.headers if name.lower().startswith("access-control-")]
    preflight = client.options("/health", headers={"Origin": OTHER, "Access-Control-Request-Method": "GET"})
    error = assert_envelope(preflight, 403, "cors_origin_not_allowed")
    assert OTHER in error["message"]


def test_no_origin_is_allowed_unless_listed(make_settings):
    app = create_app(make_settings(cors_origins=[]))
    with TestClient(app) as client:
        response = client.get("/health/live", headers={"Origin": "http://localhost:3000"})
        assert "access-control-allow-origin" not in response.headers


def test_wildcard_in_development_reflects_the_origin(make_settings):
    app = create_app(make_settings(cors_origins=["*"]))
    with TestClient(app) as client:
        response = client.get("/health/live", headers={"Origin": "http://localhost:5173"})
        assert response.headers["access-control-allow-origin"] == "http://localhost:5173"


def test_request_id_is_kept_when_well_formed_and_replaced_otherwise(client):
    kept = client.get("/health/live", headers={"X-Request-ID": "lb-1234.abcd:5"})
    assert kept.headers["x-request-id"] == "lb-1234.abcd:5"
    for bad in ("has spaces in it", "x" * 200, "<script>", ""):
        response = client.get("/nope", headers={"X-Request-ID": bad})
        assert response.headers["x-request-id"] != bad
        assert len(response.headers["x-request-id"]) == 32
        assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


def test_each_request_gets_a_distinct_id(client):
    ids = {client.get("/health/live").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_docs_and_openapi_work(client):
    assert client.get("/docs").status_code == 200
    assert client.head("/health/live").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/health/ready" in schema["paths"]
