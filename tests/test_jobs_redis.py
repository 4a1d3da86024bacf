"""Background jobs scaled out: a real Redis (a throwaway server on a free loopback port, no
persistence) and real `a3e worker` processes."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from a3e.core.settings import Settings
from a3e.jobs import JobQueueUnavailable, JobRuntime
from tests.conftest import free_port
from tests.test_jobs import start_worker
from tests.test_jobs_fixtures import PERIODIC_ON, events, journal, wait_for

pytestmark = pytest.mark.slow


@dataclass
class RedisServer:
    port: int
    password: str | None = None
    process: subprocess.Popen | None = None
    directory: Path | None = None

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server not found; scripts/test installs it when run as root"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.directory = Path(tempfile.mkdtemp(prefix="a3e-redis-"))
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--logfile", "",
             *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_runtimes(make_settings):
    made: list[JobRuntime] = []

    def make(url: str, *, periodic: bool = False, **values) -> JobRuntime:
        runtime = JobRuntime(make_settings(redis_url=url, **values), periodic=periodic)
        made.append(runtime)
        return runtime.open()

    yield make
    for runtime in made:
        runtime.close(grace=5)


@pytest.fixture
def workers():
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def test_a_worker_process_runs_jobs_enqueued_by_another_process(redis_server, redis_runtimes, workers, data_dir, tmp_path):
    web = redis_runtimes(redis_server.url)  # the web process: enqueues, does not consume
    assert not web.settings.runs_embedded_jobs
    keys = [f"scaled-{n}" for n in range(20)]
    for key in keys[:10]:
        web.enqueue("sample.record", key)  # queued before any worker exists
    for _ in range(2):  # any number of workers, here two processes
        process, _ = start_worker(tmp_path, data_dir, "--workers", "2", A3E_REDIS_URL=redis_server.url)
        workers.append(process)
    for key in keys[10:]:
        web.enqueue("sample.record", key)
    wait_for(lambda: all(events(data_dir, key) for key in keys), timeout=30)
    time.sleep(0.3)
    assert {key: events(data_dir, key) for key in keys} == {key: ["ran"] for key in keys}  # each exactly once
    runners = {line.split()[2] for key in keys for line in journal(data_dir, key).read_text().splitlines()}
    assert str(os.getpid()) not in runners and runners <= {str(process.pid) for process in workers}


def test_sigterm_lets_the_running_job_finish_and_exits_cleanly(redis_server, redis_runtimes, workers, data_dir, tmp_path):
    web = redis_runtimes(redis_server.url)
    worker, log = start_worker(tmp_path, data_dir, "--workers", "1", A3E_REDIS_URL=redis_server.url)
    workers.append(worker)
    web.enqueue("sample.slow", "draining", seconds=1.0)
    wait_for(lambda: events(data_dir, "draining") == ["started"], timeout=20)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    assert events(data_dir, "draining") == ["started", "finished"]
    output = log.read_text()
    assert "Traceback" not in output
    # The project's log format (text in development), the same as the web process's.
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO +\[\d+\] a3e\.jobs: job consumer \S+ started", output, re.M), output
    assert re.search(r"a3e\.jobs: job consumer \S+ stopped$", output, re.M), output
    assert web.health(max_age=0)["pending"] == 0


def test_a_worker_started_before_redis_waits_for_it_and_says_so(redis_runtimes, workers, data_dir, tmp_path):
    server = RedisServer(free_port())
    worker, log = start_worker(tmp_path, data_dir, "--workers", "1", A3E_REDIS_URL=server.url)
    workers.append(worker)
    try:
        wait_for(lambda: "unreachable" in log.read_text(), timeout=20)
        time.sleep(0.5)
        assert worker.poll() is None  # still there, retrying
        server.start()
        web = redis_runtimes(server.url)
        web.enqueue("sample.record", "after-outage")
        wait_for(lambda: events(data_dir, "after-outage") == ["ran"], timeout=30)
        output = log.read_text()
        assert output.count("unreachable") == 1  # once, not once per poll
        assert "reachable again" in output
        assert "Traceback" not in output
    finally:
        server.stop()


def test_enqueueing_without_redis_is_a_503_error_not_a_crash(redis_runtimes):
    web = redis_runtimes(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(JobQueueUnavailable) as raised:
        web.enqueue("sample.record", "nowhere")
    assert raised.value.status_code == 503 and "unreachable" in raised.value.message


def test_periodic_jobs_run_once_across_consumers_on_redis(redis_server, redis_runtimes, data_dir):
    if datetime.now(UTC).second >= 55:
        time.sleep(61 - datetime.now(UTC).second)
    first = redis_runtimes(redis_server.url, periodic=True)
    second = redis_runtimes(redis_server.url, periodic=True)
    PERIODIC_ON.set()
    try:
        first.start_consumer(1)
        second.start_consumer(1)
        wait_for(lambda: events(data_dir, "periodic"))
        time.sleep(1.5)
    finally:
        PERIODIC_ON.clear()
    assert events(data_dir, "periodic") == ["ran"]


def test_a_silent_consumers_jobs_are_recovered_on_redis(redis_server, redis_runtimes, data_dir, caplog):
    """The recovery path on Redis: a job recorded as running by a consumer that never beats again."""
    caplog.set_level(logging.WARNING, logger="a3e.jobs")
    dead, survivor = redis_runtimes(redis_server.url), redis_runtimes(redis_server.url, job_lease_seconds=1)
    job_id = dead.enqueue("sample.record", "recovered")
    # What a consumer does when it takes a job: off the queue, recorded as running under its id.
    task = dead.huey.dequeue()
    dead.huey.storage.put_data(dead._inflight_key(task.id), dead.huey.serialize_task(task))
    assert dead.health(max_age=0)["pending"] == 0
    survivor.recover_orphans()  # first sight of the dead consumer: not yet
    time.sleep(1.1)
    assert survivor.recover_orphans() == 1
    assert survivor.recover_orphans() == 0  # once only
    survivor.start_consumer(1)
    wait_for(lambda: events(data_dir, "recovered") == ["ran"])
    assert any(job_id in m and "queued again" in m for m in (r.getMessage() for r in caplog.records))


def test_doctor_checks_redis_and_its_password(monkeypatch, tmp_path, workers, data_dir):
    from a3e.ops.doctor import FAIL, OK, run_doctor

    server = RedisServer(free_port(), password="Right-Redis-Password-1").start()
    try:
        monkeypatch.setenv("A3E_DATA_DIR", str(tmp_path / "doctor-data"))
        monkeypatch.setenv("A3E_REDIS_URL", server.url)
        jobs = {check.name: check for check in run_doctor(timeout=2).checks}["jobs"]
        assert jobs.status == OK and "answers" in jobs.message and "a3e worker" in jobs.message
        assert server.password not in jobs.message

        monkeypatch.setenv("A3E_REDIS_URL", f"redis://:Wrong-Password-2@127.0.0.1:{server.port}/0")
        jobs = {check.name: check for check in run_doctor(timeout=2).checks}["jobs"]
        assert jobs.status == FAIL and "refused the password" in jobs.message
        assert "Wrong-Password-2" not in jobs.message

        # And the worker logs in with the password and runs jobs; the password never reaches its log.
        worker, log = start_worker(tmp_path, data_dir, "--workers", "1", A3E_REDIS_URL=server.url)
        workers.append(worker)
        web = JobRuntime(Settings(_env_file=None, redis_url=server.url, data_dir=data_dir))
        try:
            web.open().enqueue("sample.record", "with-password")
            wait_for(lambda: events(data_dir, "with-password") == ["ran"], timeout=20)
        finally:
            web.close()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        assert server.password not in log.read_text()
    finally:
        server.stop()
