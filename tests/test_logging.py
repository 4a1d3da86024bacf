"""One access-log line per request; JSON in production; secrets never reach the log."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from a3e.app import create_app
from a3e.core.logging import RedactingFilter, configure_logging


class Captured:
    def __init__(self, capsys) -> None:
        self.capsys = capsys
        self.text = ""

    def getvalue(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text


@pytest.fixture
def captured(capsys):
    yield Captured(capsys)
    configure_logging("info", "text")  # leave a sane handler for the next test


def json_lines(stream: Captured) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def test_production_access_log_is_one_json_line_per_request(make_settings, captured, database_url):
    settings = make_settings(
        database_url=database_url,
        environment_name="production",
        allow_sqlite_in_production=True,
        cors_origins=["https://app.example.edu"],
    )
    app = create_app(settings)
    with TestClient(app) as client:
        client.get("/health/live?token=abc123secret", headers={"X-Request-ID": "req-42"})
        client.get("/no/such/path")
    access = [line for line in json_lines(captured) if line["logger"] == "a3e.access"]
    assert [line["path"] for line in access] == ["/health/live", "/no/such/path"]
    first = access[0]
    assert first["request_id"] == "req-42"
    assert first["method"] == "GET" and first["status"] == 200
    assert isinstance(first["duration_ms"], float)
    assert access[1]["status"] == 404
    assert "abc123secret" not in captured.getvalue()  # query strings are never logged


def test_tokens_in_paths_are_masked_in_the_access_log(make_settings, captured):
    app = create_app(make_settings(log_format="json"))

    @app.post("/api/v1/test/invitations/{token}/accept")
    async def accept(token: str) -> dict:
        return {"ok": True}

    with TestClient(app) as client:
        assert client.post("/api/v1/test/invitations/inv-tok-5f2a9c/accept").status_code == 200
    access = [line for line in json_lines(captured) if line["logger"] == "a3e.access"]
    assert access[-1]["path"] == "/api/v1/test/invitations/***/accept"
    assert "inv-tok-5f2a9c" not in captured.getvalue()


def test_secrets_are_masked_in_any_log_line(make_settings, captured):
    settings = make_settings(
        secret_key="distinctive-secret-value-0123456789abcdef",
        stripe_secret_key="sk_live_51HxyzABCdefGHIjklMNOpqr",
        database_url="postgresql://a3e:db-password-987@db.internal:5432/a3e",
    )
    configure_logging("info", "json", settings.secret_values())
    log = logging.getLogger("a3e.test")
    log.info("config %s", settings.secret_key.get_secret_value())
    log.warning("calling stripe with %s", "sk_live_51HxyzABCdefGHIjklMNOpqr")
    log.warning("header Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig")
    log.warning("login attempt password=hunter2hunter2 for user")
    log.warning("db at postgresql+psycopg://a3e:db-password-987@db.internal/a3e")
    try:
        raise ValueError("failed with token=tok_abcdef123456")
    except ValueError:
        log.exception("boom")
    output = captured.getvalue()
    for secret in (
        "distinctive-secret-value-0123456789abcdef",
        "sk_live_51HxyzABCdefGHIjklMNOpqr",
        "eyJhbGciOiJIUzI1NiJ9",
        "hunter2hunter2",
        "db-password-987",
        "tok_abcdef123456",
    ):
        assert secret not in output, secret
    assert output.count("***") >= 6


def test_redaction_keeps_ordinary_text():
    redactor = RedactingFilter(["s3cr3t-value"])
    assert redactor.redact("GET /health/ready 200") == "GET /health/ready 200"
    assert redactor.redact("using s3cr3t-value now") == "using *** now"
