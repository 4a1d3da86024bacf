"""Declaring jobs: a registry filled at import time, bound to a queue only when one is built.

A job is a plain function whose first argument is the `JobContext`:

    @job(retries=3, retry_delay=10)
    def extract_revision(ctx: JobContext, revision_id: str) -> None:
        with ctx.transaction() as session:
            ...

    @job(schedule=crontab(minute="*/15"))
    def refresh_something(ctx: JobContext) -> None: ...

Declaring one does no I/O and builds no queue: the queue (an embedded SQLite file or Redis) is made
from Settings when the service or `a3e worker` starts, and binds every job declared by then. The
modules that declare jobs are listed in `JOB_MODULES`, which both the web process and every worker
import, so that each knows every job by name (a worker that does not know a job cannot run it).

Jobs must be idempotent: a job is retried after a transient failure and queued again when the
consumer running it dies, so it may run more than once (never twice at the same time by the
queue's own doing).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from a3e.core.database import Database
    from a3e.core.settings import Settings

# Every module that declares jobs. Add a domain's `jobs` module here (e.g. "a3e.evidence.jobs").
JOB_MODULES: tuple[str, ...] = (
    "a3e.jobs.housekeeping", "a3e.email.jobs", "a3e.evidence.jobs", "a3e.review.mapping", "a3e.billing.jobs",
    "a3e.webhooks.jobs",
)

_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


class TransientJobError(Exception):
    """Raised by a job to ask for another attempt later (a dependency is briefly unavailable)."""


class UnknownJob(LookupError):
    """No job is declared under that name (or the function was not declared with @job)."""


def _default_transient() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeoutError

    return (TransientJobError, OperationalError, PoolTimeoutError, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class JobSpec:
    name: str
    func: Callable[..., Any]
    retries: int
    retry_delay: float
    retry_backoff: float
    transient: tuple[type[BaseException], ...]
    on_failure: Callable[..., Any] | None
    schedule: Callable[[datetime], bool] | None

    @property
    def attempts(self) -> int:
        return 1 + self.retries

    @property
    def periodic(self) -> bool:
        return self.schedule is not None

    def is_transient(self, exc: BaseException) -> bool:
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, self.transient):
            return True
        # A connection the pool had to throw away (the server restarted): worth another attempt.
        return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


_JOBS: dict[str, JobSpec] = {}


def job(
    name: str | None = None,
    *,
    retries: int = 3,
    retry_delay: float = 5.0,
    retry_backoff: float = 2.0,
    transient: Iterable[type[BaseException]] | None = None,
    on_failure: Callable[..., Any] | None = None,
    schedule: Callable[[datetime], bool] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a job. The function is returned unchanged (call it directly in tests).

    - `name`: stable across releases, since queued jobs are found by it; default: module-qualified
      function name without the `a3e.` prefix (`jobs.housekeeping.housekeeping` → give one).
    - `retries`, `retry_delay` (seconds), `retry_backoff` (factor applied to the delay after each
      retry): for transient failures only — exceptions in `transient` (default: database
      unavailable, connection errors, timeouts, `TransientJobError`). Any other exception fails the
      job at once: another attempt would fail the same way.
    - `on_failure(ctx, exc, *args, **kwargs)`: called once when the job finally fails (retries
      exhausted or a permanent error), e.g. to mark a document as failed. It runs in the consumer.
    - `schedule`: run periodically, e.g. `crontab(minute="*/15")`; once per matching minute across
      every consumer of the queue.
    """

    def declare(func: Callable[..., Any]) -> Callable[..., Any]:
        job_name = name or f"{func.__module__.removeprefix('a3e.')}.{func.__name__}"
        if not _NAME.match(job_name):
            raise ValueError(f"job name {job_name!r}: use lower-case words separated by dots")
        if retries < 0 or retry_delay < 0 or retry_backoff < 0:
            raise ValueError(f"job {job_name}: retries, retry_delay and retry_backoff cannot be negative")
        existing = _JOBS.get(job_name)
        if existing is not None and existing.func is not func and _qualified(existing.func) != _qualified(func):
            raise ValueError(f"two jobs are named {job_name!r}: {_qualified(existing.func)} and {_qualified(func)}")
        _JOBS[job_name] = JobSpec(
            name=job_name,
            func=func,
            retries=retries,
            retry_delay=float(retry_delay),
            retry_backoff=float(retry_backoff),
            transient=tuple(transient) if transient is not None else _default_transient(),
            on_failure=on_failure,
            schedule=schedule,
        )
        func.__a3e_job__ = job_name  # type: ignore[attr-defined]
        return func

    return declare


def _qualified(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{getattr(func, '__qualname__', func.__name__)}"


def crontab(
    minute: str = "*", hour: str = "*", day: str = "*", month: str = "*", day_of_week: str = "*"
) -> Callable[[datetime], bool]:
    """A schedule in cron's terms (UTC; day_of_week 0 = Sunday): `crontab(minute="0", hour="3")`."""
    from huey import crontab as huey_crontab

    return huey_crontab(minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week)


def spec_for(job_or_name: str | Callable[..., Any]) -> JobSpec:
    name = job_or_name if isinstance(job_or_name, str) else getattr(job_or_name, "__a3e_job__", None)
    spec = _JOBS.get(name) if name else None
    if spec is None:
        raise UnknownJob(f"no job is declared as {job_or_name!r}; declare it with @job and list its module in JOB_MODULES")
    return spec


def declared_jobs() -> dict[str, JobSpec]:
    return dict(_JOBS)


def load_job_modules(extra: Iterable[str] = ()) -> dict[str, JobSpec]:
    """Import every module that declares jobs (the built-in list, then `extra`); return the jobs."""
    for module in (*JOB_MODULES, *extra):
        importlib.import_module(module)
    return declared_jobs()


@dataclass
class JobContext:
    """What a running job gets: the settings, the database, and which attempt this is."""

    settings: Settings
    database: Database
    job: str
    job_id: str
    attempt: int = 1
    attempts: int = 1
    # The queue running the job, so that a job can queue others (`context.runtime.enqueue(...)`).
    runtime: Any = None

    @property
    def last_attempt(self) -> bool:
        return self.attempt >= self.attempts

    def schema_ready(self) -> bool:
        """Whether the database is at the code's latest migration. Routine upkeep checks first and
        waits for the deploy's `a3e migrate` instead of failing against an older schema."""
        import logging

        from a3e.core import migrations

        try:
            with self.database.engine.connect() as connection:
                ready = migrations.status(connection).ok
        except Exception as exc:  # the database is down: the job comes round again
            logging.getLogger("a3e.jobs").warning("job %s skipped: cannot reach the database (%s)", self.job, exc)
            return False
        if not ready:
            logging.getLogger("a3e.jobs").warning("job %s skipped: the database is not at the latest migration", self.job)
        return ready

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session committed when the block ends without error, rolled back otherwise."""
        with self.database.session() as session, session.begin():
            yield session
