"""Background jobs in the embedded mode: a real Huey queue in an SQLite file, real consumers (threads
in this process, or an `a3e worker` process), no mocks."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from a3e.core.database import Database
from a3e.core.settings import Settings, read_settings
from a3e.jobs import JobQueueUnavailable, JobRuntime, UnknownJob
from a3e.jobs.registry import spec_for
from tests.conftest import settings_env_vars, wait_ready
from tests.test_jobs_fixtures import PERIODIC_ON, events, journal, wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def runtimes(make_settings):
    """Build job runtimes on the test's data directory (one queue file, shared by all of them)."""
    made: list[JobRuntime] = []

    def make(*, lease_seconds: float | None = None, periodic: bool = False, **values) -> JobRuntime:
        # Built-in periodic jobs (housekeeping, evidence upkeep) are off unless a test asks: they
        # would run at their minute, whatever the test is about.
        runtime = JobRuntime(make_settings(**values), lease_seconds=lease_seconds, periodic=periodic)
        made.append(runtime)
        return runtime.open()

    yield make
    for runtime in made:
        runtime.close(grace=5)


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name.startswith("a3e.jobs") and record.levelno >= level]


# ---- settings ---------------------------------------------------------------------------------


def test_redis_url_is_validated_and_its_password_never_echoed(make_settings):
    password = "Distinctive-Redis-Pass-42"
    for bad, expected in (
        ("http://cache:6379", "is not a Redis URL"),
        (f"redis://:{password}@cache:notaport/0", "invalid port"),
        ("redis://cache:6379/zero", "invalid database number"),
        ("redis://", "has no host"),
    ):
        _, problems = read_settings(_env_file=None, redis_url=bad)
        assert [p.variable for p in problems] == ["A3E_REDIS_URL"], (bad, problems)
        assert expected in problems[0].message and password not in problems[0].message
    settings = make_settings(redis_url=f"redis://:{password}@cache:6379/2")
    assert settings.redis_url == f"redis://:{password}@cache:6379/2"
    assert password in settings.secret_values()  # so that the logs mask it
    assert password not in repr(settings)


def test_platform_redis_url_and_the_embedded_default(monkeypatch, make_settings):
    assert make_settings().runs_embedded_jobs is True  # no Redis: jobs run inside the service
    assert make_settings(redis_url="redis://cache:6379").runs_embedded_jobs is False
    assert make_settings(redis_url="redis://cache:6379", jobs_embedded=True).runs_embedded_jobs is True
    monkeypatch.setenv("REDIS_URL", "redis://platform-cache:6380/1")
    monkeypatch.setenv("A3E_JOB_WORKERS", "4")
    settings = Settings(_env_file=None)
    assert settings.redis_url == "redis://platform-cache:6380/1"
    assert settings.job_workers == 4
    monkeypatch.setenv("A3E_JOB_WORKERS", "0")
    assert [p.variable for p in read_settings(_env_file=None)[1]] == ["A3E_JOB_WORKERS"]


# ---- declaring and queueing -----------------------------------------------------------------------


def test_unknown_jobs_and_a_closed_queue_are_clear_errors(make_settings, runtimes):
    closed = JobRuntime(make_settings())
    with pytest.raises(JobQueueUnavailable):
        closed.enqueue("sample.record", "x")
    assert not closed.settings.jobs_queue_file.exists()  # building a runtime touches nothing

    runtime = runtimes()
    with pytest.raises(UnknownJob):
        runtime.enqueue("sample.no_such_job")
    with pytest.raises(UnknownJob):
        runtime.enqueue(print)
    with pytest.raises(ValueError, match="periodic"):
        runtime.enqueue("housekeeping")
    assert spec_for("housekeeping").periodic


# ---- running ----------------------------------------------------------------------------------


def test_a_queued_job_runs_in_the_consumer(runtimes, data_dir, caplog):
    caplog.set_level(logging.INFO, logger="a3e.jobs")
    runtime = runtimes()
    job_id = runtime.enqueue("sample.record", "one")
    runtime.start_consumer(1)
    wait_for(lambda: events(data_dir, "one") == ["ran"])
    assert any(f"job sample.record ({job_id}) done" in m for m in messages(caplog))


def test_a_transient_failure_is_retried_until_it_succeeds(runtimes, data_dir, caplog):
    caplog.set_level(logging.INFO, logger="a3e.jobs")
    runtime = runtimes()
    runtime.start_consumer(2)
    runtime.enqueue("sample.flaky", "flaky", failures=2)
    wait_for(lambda: "done" in events(data_dir, "flaky"))
    time.sleep(0.2)  # nothing else runs after the success
    assert events(data_dir, "flaky") == ["attempt", "attempt", "attempt", "done"]
    retried = [m for m in messages(caplog, logging.WARNING) if "sample.flaky" in m]
    assert len(retried) == 2 and "attempt 1 of 4 failed, retrying" in retried[0]
    assert not [m for m in messages(caplog, logging.ERROR)]


def test_a_retry_waits_its_delay(runtimes, data_dir):
    runtime = runtimes()
    runtime.start_consumer(1)
    runtime.enqueue("sample.flaky_delayed", "delayed")
    wait_for(lambda: len(events(data_dir, "delayed")) == 2)
    first, second = (float(event.split("@")[1]) for event in events(data_dir, "delayed"))
    assert second - first >= 0.9  # retry_delay=1 (the scheduler looks once a second)


def test_exhausted_retries_are_logged_with_the_reason_and_on_failure_runs(runtimes, data_dir, caplog):
    caplog.set_level(logging.INFO, logger="a3e.jobs")
    runtime = runtimes()
    runtime.start_consumer(1)
    job_id = runtime.enqueue("sample.always_transient", "exhausted")
    wait_for(lambda: "on_failure:TransientJobError" in events(data_dir, "exhausted"))
    time.sleep(0.3)
    assert events(data_dir, "exhausted") == ["attempt"] * 3 + ["on_failure:TransientJobError"]
    errors = messages(caplog, logging.ERROR)
    assert errors == [
        f"job sample.always_transient ({job_id}) failed after 3 attempts (retries exhausted): "
        "TransientJobError: the extraction service answers 503"
    ]


def test_a_permanent_failure_is_not_retried(runtimes, data_dir, caplog):
    caplog.set_level(logging.INFO, logger="a3e.jobs")
    runtime = runtimes()
    runtime.start_consumer(1)
    runtime.enqueue("sample.broken", "broken")
    wait_for(lambda: "on_failure:ValueError" in events(data_dir, "broken"))
    time.sleep(0.3)
    assert events(data_dir, "broken") == ["attempt", "on_failure:ValueError"]
    assert any("failed after 1 attempt (not a transient error, not retried): ValueError: the file is not a PDF" in m for m in messages(caplog, logging.ERROR))


def test_jobs_queued_with_no_consumer_survive_a_restart(runtimes, data_dir):
    before = runtimes()
    ids = [before.enqueue("sample.record", "survivor") for _ in range(3)]
    assert before.health()["pending"] == 3
    before.close()  # the service stops (or dies) with jobs still queued

    after = runtimes()  # a new process would see the same file
    assert after.health()["pending"] == 3
    after.start_consumer(2)
    wait_for(lambda: len(events(data_dir, "survivor")) == 3)
    assert len(set(ids)) == 3


def test_two_consumers_on_one_queue_run_each_job_exactly_once(runtimes, data_dir):
    """Several web processes (WEB_CONCURRENCY) each consume the embedded queue: SQLite's exclusive
    transaction makes taking a job atomic, so none is lost and none runs twice."""
    first, second = runtimes(), runtimes()
    keys = [f"job-{n}" for n in range(40)]
    for key in keys:
        first.enqueue("sample.record", key)
    first.start_consumer(2)
    second.start_consumer(2)
    wait_for(lambda: all(events(data_dir, key) for key in keys), timeout=30)
    time.sleep(0.3)
    assert {key: events(data_dir, key) for key in keys} == {key: ["ran"] for key in keys}
    runners = {line.split()[2] for key in keys for line in journal(data_dir, key).read_text().splitlines()}
    assert runners == {str(os.getpid())}


def test_a_periodic_job_runs_once_per_minute_however_many_consumers(runtimes, data_dir, caplog):
    caplog.set_level(logging.DEBUG, logger="a3e.jobs")
    if datetime.now(UTC).second >= 55:  # both schedulers must look within the same minute
        time.sleep(61 - datetime.now(UTC).second)
    first, second = runtimes(periodic=True), runtimes(periodic=True)
    PERIODIC_ON.set()
    try:
        first.start_consumer(1)
        second.start_consumer(1)
        wait_for(lambda: events(data_dir, "periodic"))
        time.sleep(1.5)  # both schedulers have looked by now
    finally:
        PERIODIC_ON.clear()
    assert events(data_dir, "periodic") == ["ran"]
    # Routine upkeep says "done" only at DEBUG: once a minute at INFO would bury the log.
    done = [record for record in caplog.records if "sample.every_minute" in record.getMessage() and " done in " in record.getMessage()]
    assert done and all(record.levelno == logging.DEBUG for record in done)


def test_stopping_lets_a_running_job_finish(runtimes, data_dir):
    runtime = runtimes()
    runtime.start_consumer(1)
    runtime.enqueue("sample.slow", "finish", seconds=0.5)
    wait_for(lambda: events(data_dir, "finish") == ["started"])
    runtime.stop(grace=10)
    assert events(data_dir, "finish") == ["started", "finished"]
    assert runtime.health()["pending"] == 0


def test_a_job_not_finished_within_the_grace_period_is_queued_again(runtimes, data_dir, caplog):
    caplog.set_level(logging.INFO, logger="a3e.jobs")
    runtime = runtimes()
    runtime.start_consumer(1)
    runtime.enqueue("sample.slow", "unfinished", seconds=1.5)
    wait_for(lambda: events(data_dir, "unfinished") == ["started"])
    runtime.stop(grace=0.1)
    assert runtime.health(max_age=0)["pending"] == 1
    assert any("queued again: it was stopped before they finished" in m for m in messages(caplog, logging.WARNING))

    successor = runtimes()
    successor.start_consumer(1)
    wait_for(lambda: events(data_dir, "unfinished").count("finished") >= 1, timeout=10)


def _worker_env(tmp_path: Path, data_dir: Path, **variables: str) -> dict[str, str]:
    ours = {name.upper() for name in settings_env_vars()}
    env = {name: value for name, value in os.environ.items() if name.upper() not in ours}
    env.update(
        A3E_DATA_DIR=str(data_dir),
        SECRET_KEY=secrets.token_urlsafe(40),
        JWT_SECRET_KEY=secrets.token_urlsafe(40),
        PYTHONPATH=str(ROOT),
        **variables,
    )
    return env


def start_worker(
    tmp_path: Path, data_dir: Path, *args: str, import_fixtures: bool = True, **variables: str
) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"worker-{uuid.uuid4().hex[:6]}.log"
    imports = ["--import", "tests.test_jobs_fixtures"] if import_fixtures else []
    if "--periodic" in args:  # the built-in periodic jobs are off unless a test asks
        args = tuple(arg for arg in args if arg != "--periodic")
    else:
        args = ("--no-periodic", *args)
    process = subprocess.Popen(
        [sys.executable, "-m", "a3e", "worker", *imports, *args],
        env=_worker_env(tmp_path, data_dir, **variables),
        cwd=tmp_path,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    return process, log


@pytest.mark.slow
def test_a_consumer_that_dies_mid_job_has_the_job_run_again(runtimes, data_dir, tmp_path, caplog):
    """Kill -9 an `a3e worker` while it runs a job: a consumer that sees its heartbeat stop for the
    lease queues the job again, and it runs to the end."""
    caplog.set_level(logging.INFO, logger="a3e.jobs")
    runtime = runtimes(lease_seconds=1)
    worker, log = start_worker(tmp_path, data_dir, "--workers", "1", A3E_JOB_LEASE_SECONDS="1")
    try:
        runtime.enqueue("sample.slow", "orphan", seconds=30)
        wait_for(lambda: events(data_dir, "orphan") == ["started"], timeout=20)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    # The queued-again message is the original one: it starts (and sleeps) again; that is enough.
    runtime.start_consumer(1)
    wait_for(lambda: events(data_dir, "orphan") == ["started", "started"], timeout=15)
    assert any("sample.slow" in m and "queued again: its consumer" in m for m in messages(caplog, logging.WARNING))
    runtime.stop(grace=0)


@pytest.mark.slow
def test_a_separate_local_worker_runs_the_embedded_queue_and_stops_on_sigterm(runtimes, data_dir, tmp_path):
    runtime = runtimes()  # the web process's side: enqueue only
    runtime.enqueue("sample.record", "local")
    worker, log = start_worker(tmp_path, data_dir, A3E_JOBS_EMBEDDED="false")
    try:
        wait_for(lambda: events(data_dir, "local") == ["ran"], timeout=20)
        runtime.enqueue("sample.slow", "local-slow", seconds=1)
        wait_for(lambda: events(data_dir, "local-slow") == ["started"], timeout=10)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    output = log.read_text()
    assert events(data_dir, "local-slow") == ["started", "finished"]  # finished before exiting
    assert "Traceback" not in output
    assert "job consumer" in output and "stopped" in output


@pytest.mark.slow
def test_a_job_unknown_to_a_worker_is_put_back_not_lost(runtimes, data_dir, tmp_path):
    """A rolling deploy: the new release queues a job the old workers do not know yet."""
    runtime = runtimes()
    runtime.enqueue("sample.record", "from-the-future")
    worker, log = start_worker(tmp_path, data_dir, "--workers", "1", import_fixtures=False)
    try:
        wait_for(lambda: "unknown to this process" in log.read_text(), timeout=20)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    health = runtime.health(max_age=0)
    assert (health["pending"], health["scheduled"]) == (0, 1)  # waiting for a consumer that knows it
    assert events(data_dir, "from-the-future") == []
    assert "sample.record" in log.read_text() and "Traceback" not in log.read_text()


# ---- after commit ---------------------------------------------------------------------------


def test_enqueue_after_commit_sends_only_when_the_transaction_commits(runtimes, database_url):
    from sqlalchemy.exc import IntegrityError

    runtime = runtimes(database_url=database_url)
    database = Database(runtime.settings)

    def pending() -> int:
        return runtime.health(max_age=0)["pending"]

    try:
        with database.session() as session:
            session.execute(text("CREATE TABLE jobs_probe (id INTEGER PRIMARY KEY)"))
            session.commit()

        with database.session() as session:
            runtime.enqueue_after_commit(session, "sample.record", "rolled-back")
            session.execute(text("INSERT INTO jobs_probe (id) VALUES (1)"))
            assert pending() == 0  # not before the commit
            session.rollback()
            session.commit()  # a later commit of another transaction does not resurrect it
        assert pending() == 0

        # A request that fails: the error propagates, the session is closed without a commit.
        with pytest.raises(IntegrityError), database.session() as session:
            session.execute(text("INSERT INTO jobs_probe (id) VALUES (2)"))
            session.flush()
            runtime.enqueue_after_commit(session, "sample.record", "failed-request")
            session.execute(text("INSERT INTO jobs_probe (id) VALUES (2)"))
            session.commit()
        assert pending() == 0

        with database.session() as session:
            runtime.enqueue_after_commit(session, "sample.record", "committed")
            runtime.enqueue_after_commit(session, "sample.record", "committed-too")
            assert pending() == 0
            session.commit()  # nothing else was written: still a commit to wait for
        assert pending() == 2

        with pytest.raises(UnknownJob), database.session() as session:
            runtime.enqueue_after_commit(session, "sample.nope")
        assert pending() == 2
    finally:
        database.dispose()


# ---- through the app ---------------------------------------------------------------------------


def test_housekeeping_through_the_app_deletes_only_what_no_longer_means_anything(api, make_person):
    from a3e.audit.models import AuditEvent
    from a3e.auth.models import LoginAttempt, OneTimeToken, RefreshToken

    alice = make_person()
    app = api.app
    now = datetime.now(UTC)
    database: Database = app.state.database
    user_id = uuid.UUID(alice.id)
    with database.session() as session:
        def refresh(expires_at: datetime, **extra) -> uuid.UUID:
            row = RefreshToken(
                user_id=user_id, family_id=uuid.uuid4(), token_hash=secrets.token_hex(32), expires_at=expires_at, **extra
            )
            session.add(row)
            session.flush()
            return row.id

        expired = refresh(now - timedelta(days=3))
        rotated_expired = refresh(now - timedelta(days=2), rotated_at=now - timedelta(days=20))
        just_expired = refresh(now - timedelta(hours=1))  # within the grace: still says "expired"
        rotated_live = refresh(now + timedelta(days=5), rotated_at=now - timedelta(days=1))  # theft detection
        def one_time(expires_at: datetime, used_at: datetime | None = None) -> uuid.UUID:
            row = OneTimeToken(
                user_id=user_id, purpose="password_reset", token_hash=secrets.token_hex(32), expires_at=expires_at, used_at=used_at
            )
            session.add(row)
            session.flush()
            return row.id

        expired_reset = one_time(now - timedelta(days=2))
        used_expired_reset = one_time(now - timedelta(days=3), now - timedelta(days=4))
        live_reset = one_time(now + timedelta(hours=1))
        window = app.state.settings.login_window_seconds
        session.add(LoginAttempt(account="old@example.edu", client_ip="203.0.113.9", state="failed", attempted_at=now - timedelta(seconds=window + 60)))
        session.add(LoginAttempt(account="recent@example.edu", client_ip="203.0.113.9", state="failed", attempted_at=now - timedelta(seconds=30)))
        session.commit()
        audit_before = session.scalar(select(func.count()).select_from(AuditEvent))
        refresh_before = set(session.scalars(select(RefreshToken.id)))
        one_time_before = set(session.scalars(select(OneTimeToken.id)))

    app.state.jobs.run_periodic_now("housekeeping")

    def cleaned() -> bool:
        with database.session() as session:
            return session.get(RefreshToken, expired) is None

    wait_for(cleaned)
    with database.session() as session:
        remaining = set(session.scalars(select(RefreshToken.id)))
        assert remaining == refresh_before - {expired, rotated_expired}
        assert {just_expired, rotated_live} <= remaining
        assert set(session.scalars(select(OneTimeToken.id))) == one_time_before - {expired_reset, used_expired_reset}
        assert live_reset in one_time_before
        assert list(session.scalars(select(LoginAttempt.account))) == ["recent@example.edu"]
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == audit_before

    health = api.get("/health").json()
    assert health["checks"]["jobs"]["status"] == "ok"
    assert health["checks"]["jobs"]["mode"] == "embedded"
    assert health["checks"]["jobs"]["consumer"] == {"running": True, "workers": 2}
    # Alice can still refresh: her live token was not touched.
    assert api.post("/api/v1/auth/refresh", json={"refresh_token": alice.refresh_token}).status_code == 200


def test_an_unreachable_redis_degrades_health_but_not_readiness(make_settings, caplog):
    from fastapi.testclient import TestClient

    from a3e.app import create_app
    from tests.conftest import free_port

    caplog.set_level(logging.INFO, logger="a3e.jobs")
    app = create_app(make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        assert client.get("/health/ready").status_code == 200
        # The queue opens in the background once the database was checked ("starting" until then).
        wait_for(lambda: client.get("/health").json()["checks"]["jobs"]["status"] != "starting")
        body = client.get("/health").json()
        assert body["status"] == "degraded"
        assert body["checks"]["jobs"]["status"] == "unavailable"
        assert body["checks"]["jobs"]["consumer"]["running"] is False  # with Redis, workers run jobs
        assert "unreachable" in body["checks"]["jobs"]["detail"]
        with pytest.raises(JobQueueUnavailable) as raised:
            app.state.jobs.enqueue("sample.record", "nowhere")
        assert raised.value.status_code == 503


# ---- doctor ---------------------------------------------------------------------------------------


def test_doctor_reports_the_job_queue(monkeypatch, tmp_path):
    from a3e.ops.doctor import FAIL, OK, WARN, run_doctor
    from tests.conftest import free_port

    monkeypatch.setenv("A3E_DATA_DIR", str(tmp_path / "doctor-data"))

    def jobs_check():
        checks = [check for check in run_doctor(timeout=1).checks if check.name == "jobs" or "REDIS" in check.name]
        assert len(checks) == 1, checks  # one line, not one per variable and one for the check
        return checks[0]

    embedded = jobs_check()
    assert embedded.status == OK and "embedded" in embedded.message and "jobs.sqlite3" in embedded.message

    # A production deployment on PostgreSQL is a deployment with replicas and throwaway disks.
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://a3e@127.0.0.1:{free_port()}/a3e")
    local_only = jobs_check()
    assert local_only.status == WARN and "persistent volume" in local_only.fix and "A3E_REDIS_URL" in local_only.fix
    monkeypatch.delenv("ENVIRONMENT")
    monkeypatch.delenv("DATABASE_URL")

    monkeypatch.setenv("A3E_JOBS_EMBEDDED", "false")
    idle = jobs_check()
    assert idle.status == WARN and "a3e worker" in idle.fix

    password = "Doctor-Redis-Secret-77"
    monkeypatch.setenv("A3E_REDIS_URL", f"redis://:{password}@127.0.0.1:{free_port()}/0")
    down = jobs_check()
    assert down.status == FAIL and "unreachable" in down.message
    assert password not in down.message and ":***@" in down.message

    monkeypatch.setenv("A3E_REDIS_URL", "memcached://cache:11211")
    wrong = jobs_check()
    assert wrong.status == FAIL and "is not a Redis URL" in wrong.message


def test_worker_configuration_problems_exit_78_without_a_traceback(tmp_path):
    env = _worker_env(tmp_path, tmp_path / "data", A3E_REDIS_URL="redis://cache:port/0", A3E_JOB_WORKERS="none")
    result = subprocess.run(
        [sys.executable, "-m", "a3e", "worker", "--workers", "0"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert [line.split(":")[0] for line in problems] == ["  - --workers", "  - A3E_REDIS_URL", "  - A3E_JOB_WORKERS"], result.stderr


def test_the_embedded_queue_loads_neither_redis_nor_psycopg(tmp_path):
    """Huey imports both whenever installed: 15 MB per web process that the embedded mode never
    uses. They stay out — and a Redis runtime later in the same process still works."""
    script = f"""
import sys
from a3e.core.settings import Settings
from a3e.jobs.service import JobRuntime
runtime = JobRuntime(Settings(_env_file=None, data_dir={str(tmp_path)!r}, secret_key="s"*40, jwt_secret_key="j"*40))
runtime.open()
assert "redis" not in sys.modules and "psycopg" not in sys.modules, sorted(m for m in ("redis", "psycopg") if m in sys.modules)
import psycopg  # still importable by whoever needs it (SQLAlchemy, for PostgreSQL)
redis_runtime = JobRuntime(Settings(_env_file=None, data_dir={str(tmp_path)!r}, secret_key="s"*40, jwt_secret_key="j"*40,
                                    redis_url="redis://127.0.0.1:1/0"))
redis_runtime.open()
import huey.storage
assert huey.storage.RedisStorage.redis_client is not None
runtime.close(); redis_runtime.close()
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k.upper() not in {n.upper() for n in settings_env_vars()}}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert result.stdout.strip().endswith("ok"), result.stderr
