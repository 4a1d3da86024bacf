"""Configuration as an operator meets it: the real `a3e` process, its exit status and its output."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, settings_env_vars

pytestmark = pytest.mark.slow

EXIT_CONFIG = 78
# A configuration error is answered at once; this bound only keeps a hung process from hanging the suite.
QUICK = 20


def controlled_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """This machine's environment without any variable Settings reads, plus exactly `variables`."""
    ours = {name.upper() for name in settings_env_vars()}
    env = {name: value for name, value in os.environ.items() if name.upper() not in ours}
    env["A3E_DATA_DIR"] = str(tmp_path / "data")
    env.update(variables)
    return env


def a3e(tmp_path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "a3e", *args],
        env=controlled_env(tmp_path, **variables),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=QUICK,
    )


def serve(tmp_path: Path, *extra: str, port: str | None = None, **variables: str) -> subprocess.CompletedProcess[str]:
    # With PORT under test, no --port: a valid --port stands in for $PORT.
    port_option = [] if port is None and "PORT" in variables else ["--port", port or str(free_port())]
    return a3e(tmp_path, "serve", "--host", "127.0.0.1", *port_option, *extra, **variables)


def problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("  - ")]


def assert_clean_config_failure(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("A3E cannot start:"), result.stderr


def test_every_bad_variable_is_reported_at_once_and_the_process_exits_78(tmp_path):
    secret = "Short-Distinctive-7"
    db_password = "Distinctive-Db-Password-9"
    started = time.monotonic()
    result = serve(
        tmp_path,
        ENVIRONMENT="production",
        SECRET_KEY=secret,
        JWT_SECRET_KEY="your-secret-key-here",
        CORS_ORIGINS="https://app.example.edu,*",
        DATABASE_URL=f"postgresql://a3e:{db_password}@db.internal:notaport/a3e",
        PORT="abc",
        LOG_LEVEL="loud",
    )
    assert time.monotonic() - started < QUICK
    assert_clean_config_failure(result)
    lines = problem_lines(result.stderr)
    expected = ["PORT", "LOG_LEVEL", "DATABASE_URL", "SECRET_KEY", "JWT_SECRET_KEY", "CORS_ORIGINS"]
    assert len(lines) == len(expected), result.stderr
    for variable in expected:
        assert sum(line.startswith(f"  - {variable}: ") for line in lines) == 1, (variable, result.stderr)
    assert "A3E cannot start: 6 configuration problems." in result.stderr
    for value in (secret, "your-secret-key-here", db_password):
        assert value not in result.stderr and value not in result.stdout


def test_unknown_environment_exits_78(tmp_path):
    result = serve(tmp_path, ENVIRONMENT="staging")
    assert_clean_config_failure(result)
    assert any(line.startswith("  - ENVIRONMENT: 'staging' is not a known environment") for line in problem_lines(result.stderr))


@pytest.mark.parametrize("port", ["notaport", "0", "70000"])
def test_bad_port_option_exits_78(tmp_path, port):
    result = serve(tmp_path, port=port)
    assert_clean_config_failure(result)
    assert problem_lines(result.stderr) == [f"  - --port: '{port}' is not a port; use a number from 1 to 65535"]


def test_bad_port_option_is_reported_with_the_bad_variables(tmp_path):
    result = serve(tmp_path, port="notaport", ENVIRONMENT="production", LOG_LEVEL="loud")
    assert_clean_config_failure(result)
    variables = [line.removeprefix("  - ").split(":", 1)[0] for line in problem_lines(result.stderr)]
    assert variables[0] == "--port"
    assert {"LOG_LEVEL", "SECRET_KEY", "JWT_SECRET_KEY", "DATABASE_URL"} <= set(variables)


@pytest.mark.parametrize("value", ["abc", "0", "70000"])
def test_bad_port_variable_exits_78(tmp_path, value):
    result = a3e(tmp_path, "serve", "--host", "127.0.0.1", PORT=value)
    assert_clean_config_failure(result)
    [line] = problem_lines(result.stderr)
    assert line.startswith("  - PORT: ")


def test_malformed_sqlite_url_exits_78_not_with_a_traceback(tmp_path):
    # Regression: this passed validation and then crashed in create_engine with a traceback, exit 1.
    result = serve(tmp_path, DATABASE_URL="sqlite://data/a3e.db")
    assert_clean_config_failure(result)
    [line] = problem_lines(result.stderr)
    assert line.startswith("  - DATABASE_URL: ")


def test_production_with_the_database_down_still_serves_liveness(tmp_path):
    """A reachable-or-not database is not configuration: the process stays up and reports not ready."""
    closed_port = free_port()  # bound and released: nothing listens there
    db_password = "Distinctive-Db-Password-9"
    port = free_port()
    log_path = tmp_path / "server.log"
    env = controlled_env(
        tmp_path,
        ENVIRONMENT="production",
        SECRET_KEY=secrets.token_urlsafe(48),
        JWT_SECRET_KEY=secrets.token_urlsafe(48),
        CORS_ORIGINS="https://app.example.edu",
        DATABASE_URL=f"postgresql://a3e:{db_password}@127.0.0.1:{closed_port}/x",
        A3E_DB_CONNECT_TIMEOUT="2",
    )
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "a3e", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + QUICK
        live = None
        while time.monotonic() < deadline:
            assert process.poll() is None, f"exited with {process.returncode}:\n{log_path.read_text()}"
            try:
                live = httpx.get(f"{base}/health/live", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert live is not None and live.status_code == 200, log_path.read_text()

        ready = httpx.get(f"{base}/health/ready", timeout=10)
        assert ready.status_code == 503
        assert "database" in ready.json()["error"]["details"]["checks"]
        assert "database" in ready.json()["error"]["message"]

        health = httpx.get(f"{base}/health", timeout=10).json()
        assert health["environment"] == "production"
        assert health["checks"]["database"]["status"] == "fail"

        time.sleep(1)
        assert process.poll() is None, "the process must keep running while the database is down"
        assert httpx.get(f"{base}/health/live", timeout=2).status_code == 200
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
    output = log_path.read_text(errors="replace")
    assert "Traceback" not in output
    assert db_password not in output + ready.text + str(health)


def test_migrate_check_reports_pending_then_current(tmp_path):
    database = tmp_path / "fresh" / "a3e.db"
    url = f"sqlite:///{database}"

    pending = a3e(tmp_path, "migrate", "--check", DATABASE_URL=url)
    assert pending.returncode != 0, pending.stdout + pending.stderr
    assert "pending" in pending.stdout
    assert "Traceback" not in pending.stderr

    migrated = a3e(tmp_path, "migrate", DATABASE_URL=url)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert database.is_file()

    current = a3e(tmp_path, "migrate", "--check", DATABASE_URL=url)
    assert current.returncode == 0, current.stdout + current.stderr
    assert "latest migration" in current.stdout

    again = a3e(tmp_path, "migrate", DATABASE_URL=url)
    assert again.returncode == 0
    assert "already at the latest migration" in again.stdout


def test_migrate_with_bad_configuration_exits_78(tmp_path):
    result = a3e(tmp_path, "migrate", "--check", DATABASE_URL="mysql://a3e:pw@db/a3e")
    assert_clean_config_failure(result)
    [line] = problem_lines(result.stderr)
    assert line.startswith("  - DATABASE_URL: ")
