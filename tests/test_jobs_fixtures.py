"""Jobs for the job-queue tests, declared like any domain's jobs. The tests import this module, and
so does the `a3e worker` they start (`--import tests.test_jobs_fixtures`): both know every job.

Each job writes what it did to files under the data directory it is given, one line per event, so
that a test in another process can see exactly how many times each step ran."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime
from pathlib import Path

from a3e.jobs import JobContext, TransientJobError, job

# The periodic sample job runs only while a test switches it on (it is declared for every app).
PERIODIC_ON = threading.Event()


def journal(directory: Path | str, key: str) -> Path:
    return Path(directory) / "journal" / key


def note(context: JobContext, key: str, event: str) -> None:
    path = journal(context.settings.data_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write(2) per line in append mode: lines from parallel consumers never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{event} {context.attempt} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def events(directory: Path | str, key: str) -> list[str]:
    path = journal(directory, key)
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@job("sample.record", retries=0)
def record(context: JobContext, key: str) -> None:
    note(context, key, "ran")


@job("sample.flaky", retries=3, retry_delay=0)
def flaky(context: JobContext, key: str, failures: int) -> None:
    note(context, key, "attempt")
    if context.attempt <= failures:
        raise TransientJobError(f"attempt {context.attempt}: storage briefly unavailable")
    note(context, key, "done")


@job("sample.flaky_delayed", retries=1, retry_delay=1, retry_backoff=1)
def flaky_delayed(context: JobContext, key: str) -> None:
    note(context, key, f"attempt@{time.time():.3f}")
    if context.attempt == 1:
        raise ConnectionError("connection reset by peer")


def _mark_failed(context: JobContext, exc: BaseException, key: str) -> None:
    note(context, key, f"on_failure:{exc.__class__.__name__}")


@job("sample.always_transient", retries=2, retry_delay=0, on_failure=_mark_failed)
def always_transient(context: JobContext, key: str) -> None:
    note(context, key, "attempt")
    raise TransientJobError("the extraction service answers 503")


@job("sample.broken", retries=3, retry_delay=0, on_failure=_mark_failed)
def broken(context: JobContext, key: str) -> None:
    note(context, key, "attempt")
    raise ValueError("the file is not a PDF")


@job("sample.slow", retries=0)
def slow(context: JobContext, key: str, seconds: float) -> None:
    note(context, key, "started")
    time.sleep(seconds)
    note(context, key, "finished")


def _while_switched_on(timestamp: datetime) -> bool:
    return PERIODIC_ON.is_set()


@job("sample.every_minute", schedule=_while_switched_on, retries=0)
def every_minute(context: JobContext) -> None:
    note(context, "periodic", "ran")
