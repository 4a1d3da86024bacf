"""`a3e doctor`: one line per check, ok / warn / fail with the fix; exit 1 when anything fails."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys

import pytest

from a3e.core.features import Feature
from a3e.ops.doctor import FAIL, OK, WARN, print_report, run_doctor
from tests.conftest import free_port, settings_env_vars

STRONG = "q8Vn3kP0zX7mL2rT9bY4wC6hJ1fD5sA0eG3uI8oK"
STRONG_JWT = "Z1y2X3w4V5u6T7s8R9q0P1o2N3m4L5k6J7i8H9g0"


def by_name(report) -> dict[str, object]:
    return {check.name: check for check in report.checks}


@pytest.fixture
def production_env(monkeypatch, database_url):
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("SECRET_KEY", STRONG)
    monkeypatch.setenv("JWT_SECRET_KEY", STRONG_JWT)
    monkeypatch.setenv("CORS_ORIGINS", "https://app.example.edu")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("A3E_ALLOW_SQLITE_IN_PRODUCTION", "true")
    monkeypatch.setenv("PORT", str(free_port()))
    return database_url


def migrate(url: str) -> None:
    from sqlalchemy import create_engine

    from a3e.core import migrations

    engine = create_engine(url)
    migrations.upgrade(engine)
    engine.dispose()


def test_a_healthy_production_environment_passes(production_env):
    migrate(production_env)
    report = run_doctor(timeout=2)
    checks = by_name(report)
    assert report.exit_code == 0, [(c.name, c.status, c.message) for c in report.checks if c.status != OK]
    for name in ("environment", "SECRET_KEY", "JWT_SECRET_KEY", "CORS_ORIGINS", "database", "migrations", "PORT", "A3E_DATA_DIR"):
        assert checks[name].status in (OK, WARN), name
    assert checks["database"].status == OK and checks["migrations"].status == OK


def test_pending_migrations_fail_in_production_with_the_fix(production_env):
    report = run_doctor(timeout=2)
    migrations = by_name(report)["migrations"]
    assert migrations.status == FAIL
    assert "a3e migrate" in migrations.fix
    assert report.exit_code == 1


def test_pending_migrations_are_only_a_warning_when_the_service_migrates_itself(monkeypatch, database_url):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("PORT", str(free_port()))
    report = run_doctor(timeout=2)
    assert by_name(report)["migrations"].status == WARN
    assert report.exit_code == 0


def test_configuration_problems_each_fail_on_their_own_line(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("SECRET_KEY", "your-secret-key-here")
    monkeypatch.setenv("CORS_ORIGINS", "*")
    monkeypatch.setenv("PORT", "eighty")
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    report = run_doctor(timeout=1)
    checks = by_name(report)
    assert checks["SECRET_KEY"].status == FAIL and "placeholder" in checks["SECRET_KEY"].message
    assert checks["JWT_SECRET_KEY"].status == FAIL and "required" in checks["JWT_SECRET_KEY"].message
    assert checks["CORS_ORIGINS"].status == FAIL and "'*'" in checks["CORS_ORIGINS"].message
    assert checks["PORT"].status == FAIL
    assert checks["config LOG_LEVEL"].status == FAIL
    assert checks["DATABASE_URL"].status == FAIL
    assert report.exit_code == 1
    out = io.StringIO()
    print_report(report, stream=out)
    assert "your-secret-key-here" not in out.getvalue()
    assert out.getvalue().strip().splitlines()[-1].startswith("some checks FAIL")


def test_unreachable_database_fails_with_the_reason(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://a3e:pw-not-shown@127.0.0.1:{free_port()}/a3e")
    report = run_doctor(timeout=1)
    checks = by_name(report)
    assert checks["database"].status == FAIL
    assert "refused" in checks["database"].message.lower()
    assert checks["migrations"].status == FAIL
    assert "pw-not-shown" not in json.dumps([c.__dict__ for c in report.checks])


def test_port_in_use_is_a_warning(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        monkeypatch.setenv("A3E_HOST", "127.0.0.1")
        monkeypatch.setenv("PORT", str(sock.getsockname()[1]))
        check = by_name(run_doctor(timeout=1))["PORT"]
    assert check.status == WARN and "in use" in check.message


@pytest.mark.parametrize(
    ("environment", "secret", "webhook", "expected"),
    [
        ("development", "pk_test_" + "a" * 24, None, {"STRIPE_SECRET_KEY": FAIL}),
        ("development", "sk_live_" + "a" * 24, "whsec_" + "b" * 32, {"STRIPE_SECRET_KEY": WARN, "STRIPE_WEBHOOK_SECRET": OK}),
        ("production", "sk_test_" + "a" * 24, "whsec_" + "b" * 32, {"STRIPE_SECRET_KEY": WARN}),
        ("production", "sk_live_" + "a" * 24, "whsec_" + "b" * 32, {"STRIPE_SECRET_KEY": OK, "STRIPE_WEBHOOK_SECRET": OK}),
        ("development", "sk_test_" + "a" * 24, "not-a-webhook-secret", {"STRIPE_WEBHOOK_SECRET": FAIL}),
        ("development", "sk_test_short", None, {"STRIPE_SECRET_KEY": FAIL, "STRIPE_WEBHOOK_SECRET": WARN}),
        ("development", None, None, {"stripe": OK}),
    ],
)
def test_stripe_key_shape_and_mode(monkeypatch, environment, secret, webhook, expected):
    monkeypatch.setenv("ENVIRONMENT", environment)
    if environment == "production":
        monkeypatch.setenv("SECRET_KEY", STRONG)
        monkeypatch.setenv("JWT_SECRET_KEY", STRONG_JWT)
        monkeypatch.setenv("A3E_ALLOW_SQLITE_IN_PRODUCTION", "true")
    if secret:
        monkeypatch.setenv("STRIPE_SECRET_KEY", secret)
    if webhook:
        monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", webhook)
    report = run_doctor(timeout=1)
    checks = by_name(report)
    for name, status in expected.items():
        assert checks[name].status == status, (name, checks[name])
    rendered = json.dumps([c.__dict__ for c in report.checks])
    for value in (secret, webhook):
        if value:
            assert value not in rendered


def test_features_importable_and_configured(monkeypatch):
    features = [
        Feature(name="widgets", title="Widgets", routers="tests.fake_features.widgets:router"),
        Feature(name="broken", title="Broken", routers="tests.fake_features.broken:router"),
        Feature(name="paid", title="Paid", routers="tests.fake_features.widgets:router", required_settings=("stripe_secret_key",)),
    ]
    monkeypatch.setenv("A3E_DISABLED_FEATURES", "nonsense")
    checks = by_name(run_doctor(timeout=1, features=features))
    assert checks["feature widgets"].status == OK
    assert checks["feature broken"].status == FAIL and "a3e_module_that_does_not_exist" in checks["feature broken"].message
    assert checks["feature paid"].status == WARN and "STRIPE_SECRET_KEY" in checks["feature paid"].message
    assert checks["A3E_DISABLED_FEATURES"].status == WARN


def test_the_command_prints_json_and_sets_the_exit_status(tmp_path):
    base = {k: v for k, v in __import__("os").environ.items() if k not in settings_env_vars()}
    ok = subprocess.run(
        [sys.executable, "-m", "a3e", "doctor", "--json"],
        env={**base, "A3E_DATA_DIR": str(tmp_path / "d"), "PORT": str(free_port())},
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    payload = json.loads(ok.stdout)
    assert payload["ok"] is True and payload["counts"]["fail"] == 0
    failing = subprocess.run(
        [sys.executable, "-m", "a3e", "doctor"],
        env={**base, "ENVIRONMENT": "production", "A3E_DATA_DIR": str(tmp_path / "d"), "PORT": str(free_port())},
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert failing.returncode == 1
    assert "[FAIL] SECRET_KEY" in failing.stdout
    assert "Traceback" not in failing.stdout + failing.stderr


def test_email_check(monkeypatch):
    from aiosmtpd.controller import Controller

    class Accept:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            return "250 OK"

    monkeypatch.setenv("SMTP_SECURITY", "none")
    controller = Controller(Accept(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("SMTP_PORT", str(controller.port))
        check = by_name(run_doctor(timeout=2))["email"]
        assert check.status == OK and "answers" in check.message
    finally:
        controller.stop()
    check = by_name(run_doctor(timeout=1))["email"]  # nothing listens there now
    assert check.status == FAIL and "cannot reach" in check.message
    monkeypatch.setenv("SMTP_SECURITY", "starttls")
    monkeypatch.delenv("SMTP_HOST")
    assert by_name(run_doctor(timeout=1))["email"].status == OK  # development outbox


def test_production_without_smtp_warns(production_env):
    check = by_name(run_doctor(timeout=1))["email"]
    assert check.status == WARN and "SMTP_HOST" in check.message
