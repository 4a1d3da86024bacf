"""The job queue at run time: Huey, on an embedded SQLite file or on Redis.

`JobRuntime(settings)` does no I/O; `open()` builds the Huey instance (the queue file is created, no
connection to Redis is made yet) and binds every declared job; `start_consumer()` runs jobs on
threads in this process (the embedded mode and `a3e worker` alike); `stop()` lets running jobs
finish within a grace period.

What Huey does not do for us, and this module adds:

- Broker outages are logged once when they start and once when they end (Huey logs a traceback
  per poll), and consumers keep retrying with backoff: they never die while the broker is away.
- Periodic jobs run once per scheduled minute however many consumers share the queue: each
  consumer's scheduler claims the minute first (an atomic put-if-empty in the queue's store).
- Jobs survive the death of the consumer running them. Huey takes a job off the queue before it
  runs it, so a consumer killed mid-job would lose it: each running job is recorded in the queue's
  store under the consumer's id, every consumer refreshes a heartbeat, and any consumer that sees
  another's heartbeat stand still for `A3E_JOB_LEASE_SECONDS` (by its own clock, so clock skew
  between machines does not matter) queues that consumer's jobs again. A consumer stopping
  gracefully queues again, at once, the jobs it could not finish within its grace period.
- Retries only for transient failures, with a delay and backoff; the final failure is logged with
  its reason and the job's `on_failure` runs (see `registry.job`).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from a3e.core.errors import AppError
from a3e.core.settings import Settings, mask_database_url
from a3e.jobs.registry import JobContext, JobSpec, load_job_modules, spec_for

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from a3e.core.database import Database

logger = logging.getLogger("a3e.jobs")

QUEUE_NAME = "a3e"
STOP_GRACE_SECONDS = 10.0
MAX_POLL_SECONDS = 1.0  # the longest an idle embedded consumer waits before looking at the queue again
_INFLIGHT = "a3e.inflight|"
_ALIVE = "a3e.alive|"
_PERIODIC = "a3e.periodic|"
_PERIODIC_CLAIMS_KEPT_SECONDS = 3600
UNKNOWN_JOB_RETRY_SECONDS = 30


class JobQueueUnavailable(AppError):
    status_code = 503
    code = "job_queue_unavailable"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{exc.__class__.__name__}: {text}"[:300] if text else exc.__class__.__name__


class _BrokerState:
    """Logs a broker outage once when it starts and once when it ends, however many threads see it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._lock = threading.Lock()
        self.error: str | None = None
        self.since: float | None = None

    def failed(self, exc: BaseException) -> None:
        reason = _describe(exc)
        with self._lock:
            first = self.error is None
            self.error = reason
            if first:
                self.since = time.monotonic()
        if first:
            logger.warning("job queue %s unreachable (%s); retrying with backoff", self.label, reason)

    def succeeded(self) -> None:
        if self.error is None:
            return
        with self._lock:
            if self.error is None:
                return
            down = time.monotonic() - (self.since or time.monotonic())
            self.error = self.since = None
        logger.info("job queue %s reachable again after %.0fs", self.label, down)


def _give_huey_redis() -> None:
    """Huey was imported without redis-py (an embedded queue came first in this process): hand it
    the module's names now, as its own import would have."""
    import huey.storage as storage

    if storage.Redis is None:
        from redis import ConnectionPool, Redis
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        storage.ConnectionPool, storage.Redis = ConnectionPool, Redis
        storage.ConnectionError, storage.TimeoutError = RedisConnectionError, RedisTimeoutError
        storage.RedisStorage.redis_client = Redis  # bound when the class was defined


# How long enqueueing waits for a queue that is being opened at start-up.
OPEN_WAIT_SECONDS = 10.0


def _broker_errors() -> tuple[type[BaseException], ...]:
    import sqlite3

    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, OSError, sqlite3.OperationalError]
    if sys.modules.get("redis") is not None:  # loaded only in the Redis mode (see import_huey)
        import redis.exceptions

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError]
    return tuple(errors)


def import_huey(*, with_redis: bool) -> None:
    """Import Huey. Its storage module imports redis-py and psycopg whenever they are installed,
    for storage classes the embedded mode never uses: measured 16 MB of memory and about 90 ms of
    start-up in every web process. Without Redis they are hidden during that one import; they load
    normally later if anything needs them (psycopg, for a PostgreSQL database)."""
    if "huey.storage" in sys.modules:
        if with_redis:
            _give_huey_redis()
        return
    hidden = [name for name in ("psycopg", *(() if with_redis else ("redis",))) if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    try:
        import huey.storage  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]


@functools.cache
def _huey_class() -> type:
    """Huey, with broker outages handled quietly and periodic jobs claimed once per minute."""
    from huey import Huey

    class A3EHuey(Huey):  # type: ignore[misc]
        broker: _BrokerState
        stop_event: threading.Event
        claim_periodic: Callable[[Any, datetime], bool]

        def dequeue(self) -> Any:
            try:
                data = self.storage.dequeue()
            except self.broker_errors as exc:
                self.broker.failed(exc)
                self._backoff()
                return None
            self.broker.succeeded()
            self._delay = 0.25
            if data is None:
                return None
            try:
                return self.deserialize_task(data)
            except Exception as exc:
                # A job this process does not know (during a rolling deploy, a newer release's):
                # put it back for a consumer that does, rather than lose it.
                eta = self._get_timestamp() + timedelta(seconds=UNKNOWN_JOB_RETRY_SECONDS)
                try:
                    self.storage.add_to_schedule(data, eta)
                except self.broker_errors as put_back_error:
                    self.broker.failed(put_back_error)
                    logger.error("a queued job unknown to this process is lost (%s)", _describe(exc))
                    return None
                logger.warning(
                    "a queued job is unknown to this process (%s); put back for another consumer in %ds. "
                    "Every process must run the same release and import the same job modules (JOB_MODULES)",
                    _describe(exc), UNKNOWN_JOB_RETRY_SECONDS,
                )
                return None

        def _backoff(self) -> None:
            delay = getattr(self, "_delay", 0.25)
            self.stop_event.wait(delay)
            self._delay = min(delay * 2, 10.0)

        def read_schedule(self, timestamp: Any = None) -> list[Any]:
            try:
                return super().read_schedule(timestamp)
            except self.broker_errors as exc:
                self.broker.failed(exc)
                return []

        def read_periodic(self, timestamp: Any) -> list[Any]:
            if timestamp is None:
                timestamp = self._get_timestamp()
            due = super().read_periodic(timestamp)
            try:
                return [task for task in due if self.claim_periodic(task, timestamp)]
            except self.broker_errors as exc:
                self.broker.failed(exc)
                return []

    A3EHuey.broker_errors = _broker_errors()
    return A3EHuey


class JobRuntime:
    """One process's handle on the queue: enqueue jobs, and optionally consume them."""

    def __init__(
        self,
        settings: Settings,
        *,
        database: Database | None = None,
        lease_seconds: float | None = None,
        extra_modules: tuple[str, ...] = (),
        periodic: bool = True,
    ) -> None:
        self.settings = settings
        # False: periodic jobs are not scheduled (they still run on demand with run_periodic_now).
        self.periodic = periodic
        self.mode = "redis" if settings.redis_url else "embedded"
        self.label = mask_database_url(settings.redis_url) if settings.redis_url else str(settings.jobs_queue_file)
        self.lease_seconds = lease_seconds if lease_seconds is not None else settings.job_lease_seconds
        self.extra_modules = extra_modules
        self.consumer_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.broker = _BrokerState(self.label)
        self._database = database
        self._owns_database = database is None
        self._database_lock = threading.Lock()
        self._huey: Any = None
        self._jobs: dict[str, JobSpec] = {}
        self._wrappers: dict[str, Any] = {}
        self._consumer: Any = None
        self._workers = 0
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._heartbeats: dict[str, tuple[bytes | None, float]] = {}
        self._open_error: str | None = None
        # Set while the queue is being opened in the background (see opening_in_background).
        self._opening: threading.Event | None = None
        self._health_cache: tuple[float, dict[str, Any]] | None = None
        self.recovered = 0
        self._resources: dict[str, Any] = {}
        self._resources_lock = threading.Lock()

    def resource(self, name: str, build: Callable[[], Any]) -> Any:
        """A long-lived helper the jobs of this runtime share (an S3 client, say), built once."""
        with self._resources_lock:
            if name not in self._resources:
                self._resources[name] = build()
            return self._resources[name]

    # ---- building ------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._huey is not None

    @property
    def consuming(self) -> bool:
        return self._consumer is not None

    @property
    def huey(self) -> Any:
        if self._huey is None:
            raise JobQueueUnavailable(f"the job queue is not open{f' ({self._open_error})' if self._open_error else ''}")
        return self._huey

    def opening_in_background(self) -> None:
        """The queue will be opened by another thread soon: enqueueing meanwhile waits for it
        (a few seconds at most) instead of failing."""
        if self._huey is None:
            self._opening = threading.Event()

    def _wait_until_open(self) -> None:
        opening = self._opening
        if self._huey is None and opening is not None:
            opening.wait(OPEN_WAIT_SECONDS)

    def open(self) -> JobRuntime:
        """Build the Huey instance and bind every declared job. Raises on an unusable queue file;
        an unreachable Redis is not an error here (nothing connects until the first use)."""
        try:
            return self._open()
        finally:
            if self._opening is not None:
                self._opening.set()

    def _open(self) -> JobRuntime:
        if self._huey is not None:
            return self
        import_huey(with_redis=bool(self.settings.redis_url))
        self._jobs = load_job_modules(self.extra_modules)
        # Every table's model, so that the ORM can resolve foreign keys in a worker process that
        # never imported the other domains.
        from a3e.core.database import load_all_models

        load_all_models()
        huey_class = _huey_class()
        try:
            if self.settings.redis_url:
                from huey.storage import RedisStorage

                huey = huey_class(
                    QUEUE_NAME,
                    results=False,
                    utc=True,
                    storage_class=RedisStorage,
                    url=self.settings.redis_url,
                    # Blocking reads wake a worker as soon as a job arrives; the timeouts keep an
                    # unreachable or silent Redis from hanging a thread.
                    blocking=True,
                    read_timeout=1,
                )
                pool = huey.storage.pool
                pool.connection_kwargs.update(socket_connect_timeout=3, socket_timeout=5, health_check_interval=30)
            else:
                from huey.storage import SqliteStorage

                path = self.settings.jobs_queue_file
                path.parent.mkdir(parents=True, exist_ok=True)
                huey = huey_class(
                    QUEUE_NAME, results=False, utc=True, storage_class=SqliteStorage, filename=str(path), timeout=10
                )
        except Exception as exc:
            self._open_error = _describe(exc)
            raise
        huey.broker = self.broker
        huey.stop_event = self._stop
        huey.claim_periodic = self._claim_periodic
        for spec in self._jobs.values():
            self._wrappers[spec.name] = self._bind(huey, spec)
        self._huey = huey
        self._open_error = None
        return self

    def _bind(self, huey: Any, spec: JobSpec) -> Any:
        runtime = self

        def run(*args: Any, task: Any, **kwargs: Any) -> Any:
            return runtime._run(spec, task, args, kwargs)

        # Huey finds a queued job by "<module>.<name>": keep it independent of where the function lives.
        run.__module__ = "a3e.jobs"
        run.__name__ = run.__qualname__ = spec.name
        options = dict(
            retries=spec.retries, retry_delay=spec.retry_delay, retry_backoff=spec.retry_backoff,
            context=True, name=spec.name,
        )
        if spec.schedule is not None and self.periodic:
            return huey.periodic_task(spec.schedule, **options)(run)
        return huey.task(**options)(run)

    def close(self, grace: float = STOP_GRACE_SECONDS) -> None:
        self.stop(grace)
        huey, self._huey = self._huey, None
        if huey is not None:
            storage = huey.storage
            storage.close()  # the SQLite connection (a no-op for Redis)
            if hasattr(storage, "pool"):
                storage.pool.disconnect()
        if self._owns_database and self._database is not None:
            self._database.dispose()
            self._database = None

    @property
    def database(self) -> Database:
        """The jobs' own engine and pool: jobs never take the connections the API admits requests by."""
        if self._database is None:
            with self._database_lock:
                if self._database is None:
                    from a3e.core.database import Database

                    self._database = Database(self.settings)
        return self._database

    # ---- enqueueing ----------------------------------------------------------------------

    def enqueue(self, job: str | Callable[..., Any], *args: Any, delay: float | None = None, **kwargs: Any) -> str:
        """Queue a job now; returns its id. Raises UnknownJob for an undeclared job, and
        JobQueueUnavailable (503) when the queue cannot be reached."""
        spec = spec_for(job)
        self._wait_until_open()
        wrapper = self._wrappers.get(spec.name) if self._huey is not None else None
        if wrapper is None:
            _ = self.huey  # raises JobQueueUnavailable when not open
            raise JobQueueUnavailable(f"job {spec.name} was declared after the queue was opened")
        if spec.periodic:
            raise ValueError(f"job {spec.name} is periodic; run it with run_periodic_now()")
        task = wrapper.s(*args, **kwargs) if delay is None else wrapper.s(*args, delay=delay, **kwargs)
        self._put(task)
        return task.id

    def run_periodic_now(self, job: str | Callable[..., Any]) -> str:
        """Queue one run of a periodic job at once (operators, tests)."""
        spec = spec_for(job)
        self._wait_until_open()
        _ = self.huey  # raises JobQueueUnavailable when not open
        task = self._wrappers[spec.name].s()
        self._put(task)
        return task.id

    def _put(self, task: Any) -> None:
        try:
            self.huey.enqueue(task)
        except _broker_errors() as exc:
            self.broker.failed(exc)
            raise JobQueueUnavailable(f"the job queue is unreachable ({_describe(exc)}); try again shortly") from None
        self.broker.succeeded()

    def enqueue_after_commit(self, session: Session, job: str | Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue the job when `session`'s transaction commits; never when it rolls back."""
        spec_for(job)  # an unknown job is the caller's error, raised now
        _after_commit(session).append((self, job, args, kwargs))

    # ---- running a job -------------------------------------------------------------------

    def _inflight_key(self, task_id: str) -> str:
        return f"{_INFLIGHT}{self.consumer_id}|{task_id}"

    def _run(self, spec: JobSpec, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        huey = self._huey
        attempt = spec.retries - int(task.retries or 0) + 1
        record = self._inflight_key(task.id)
        try:
            huey.storage.put_data(record, huey.serialize_task(task))
        except Exception as exc:  # the job still runs; it is only unprotected against our death
            logger.warning("job %s (%s): could not record it as running (%s)", spec.name, task.id, _describe(exc))
        context = JobContext(self.settings, self.database, spec.name, task.id, attempt, spec.attempts, runtime=self)
        started = time.perf_counter()
        try:
            result = spec.func(context, *args, **kwargs)
        except Exception as exc:
            transient = spec.is_transient(exc)
            if transient and task.retries:
                from huey.exceptions import RetryTask

                delay = task.retry_delay
                logger.warning(
                    "job %s (%s) attempt %d of %d failed, retrying%s: %s",
                    spec.name, task.id, attempt, spec.attempts, f" in {delay:g}s" if delay else "", _describe(exc),
                )
                # Huey adds one retry back for RetryTask before it spends one: take it first, and
                # the retry is counted once. (A plain exception would also be logged as an error.)
                task.retries -= 1
                raise RetryTask(str(exc)) from exc
            task.retries = 0  # Huey retries while any remain: a permanent failure must not be retried
            why = "retries exhausted" if transient else "not a transient error, not retried"
            logger.error(
                "job %s (%s) failed after %d attempt%s (%s): %s",
                spec.name, task.id, attempt, "" if attempt == 1 else "s", why, _describe(exc),
            )
            if spec.on_failure is not None:
                try:
                    spec.on_failure(context, exc, *args, **kwargs)
                except Exception:
                    logger.exception("job %s (%s): its on_failure handler failed", spec.name, task.id)
            raise
        else:
            # Periodic upkeep runs every few minutes and reports what it did itself: its routine
            # "done" would only bury the log.
            logger.log(logging.DEBUG if spec.periodic else logging.INFO, "job %s (%s) done in %.2fs",
                       spec.name, task.id, time.perf_counter() - started)
            return result
        finally:
            try:
                huey.storage.delete_data(record)
            except Exception as exc:
                logger.warning("job %s (%s): could not clear its running record (%s)", spec.name, task.id, _describe(exc))

    # ---- periodic jobs: once per minute across every consumer ------------------------------

    def _claim_periodic(self, task: Any, timestamp: datetime) -> bool:
        key = f"{_PERIODIC}{task.name}|{timestamp:%Y%m%d%H%M}"
        return bool(self._huey.storage.put_if_empty(key, b"%d" % int(time.time())))

    # ---- consuming -----------------------------------------------------------------------

    def start_consumer(self, workers: int | None = None, *, handle_signals: bool = False, grace: float = STOP_GRACE_SECONDS) -> None:
        """Run jobs on `workers` threads (and the scheduler thread) until stop().

        `handle_signals` (for `a3e worker`, in the main thread): SIGTERM and SIGINT finish the
        running jobs, within `grace` seconds, and stop. The web process leaves signals to uvicorn."""
        from huey.consumer import Consumer

        huey = self.open().huey
        self._workers = workers or self.settings.job_workers
        # Huey narrates every job at INFO; our own lines say what matters (done, retried, failed).
        if logging.getLogger("huey").level == logging.NOTSET:
            logging.getLogger("huey").setLevel(logging.WARNING)

        class _Consumer(Consumer):  # type: ignore[misc]
            def _set_signal_handlers(self) -> None:
                if handle_signals:
                    super()._set_signal_handlers()

        self._stop.clear()
        self._beat()
        self._consumer = _Consumer(
            huey,
            workers=self._workers,
            periodic=True,
            initial_delay=0.05,
            backoff=1.3,
            max_delay=MAX_POLL_SECONDS,
            scheduler_interval=1,
            worker_type="thread",
            check_worker_health=True,
            health_check_interval=10,
            shutdown_timeout=grace,
            graceful_signal="TERM",
        )
        huey.stop_event = self._consumer.stop_flag  # a worker backing off from an outage wakes at stop
        self._consumer.start()
        self._supervisor = threading.Thread(target=self._supervise, name="a3e-jobs-supervisor", daemon=True)
        self._supervisor.start()
        logger.info(
            "job consumer %s started: %d worker thread%s on %s (%s)",
            self.consumer_id, self._workers, "" if self._workers == 1 else "s", self.label, self.mode,
        )

    def run_consumer(self, workers: int | None = None, *, grace: float = STOP_GRACE_SECONDS) -> None:
        """`a3e worker`: consume in the foreground until SIGTERM/SIGINT, then stop gracefully."""
        import signal

        self.start_consumer(workers, handle_signals=True, grace=grace)
        consumer = self._consumer
        # Both ask for a graceful stop (Huey's default makes SIGINT abandon running jobs).
        consumer._signal_actions[signal.SIGINT] = (False, True)
        health_check_ts = time.monotonic()
        from huey.consumer import ConsumerStopped

        while True:
            try:
                health_check_ts = consumer.loop(health_check_ts)
            except ConsumerStopped:
                break
        self._finish_stop()

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Let running jobs finish (at most `grace` seconds), then queue again those that did not."""
        consumer = self._consumer
        if consumer is None:
            return
        consumer.shutdown_timeout = grace
        consumer.stop(graceful=True)
        self._finish_stop()

    def _finish_stop(self) -> None:
        if self._consumer is None:
            return
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        unfinished = self._requeue_consumer(self.consumer_id, reason="it was stopped before they finished")
        try:
            self._huey.storage.delete_data(f"{_ALIVE}{self.consumer_id}")
        except Exception as exc:
            logger.warning("job consumer %s: could not clear its heartbeat (%s)", self.consumer_id, _describe(exc))
        self._consumer = None
        logger.info(
            "job consumer %s stopped%s", self.consumer_id,
            f"; {unfinished} unfinished job{'s' if unfinished != 1 else ''} queued again" if unfinished else "",
        )

    # ---- heartbeats and recovery ---------------------------------------------------------

    @property
    def _beat_interval(self) -> float:
        return max(self.lease_seconds / 4, 0.1)

    def _beat(self) -> None:
        try:
            self._huey.storage.put_data(f"{_ALIVE}{self.consumer_id}", b"%d" % time.monotonic_ns())
        except _broker_errors() as exc:
            self.broker.failed(exc)

    def _supervise(self) -> None:
        while not self._stop.wait(self._beat_interval):
            self._beat()
            try:
                self.recover_orphans()
            except _broker_errors() as exc:
                self.broker.failed(exc)
            except Exception:
                logger.exception("job consumer %s: looking for orphaned jobs failed", self.consumer_id)

    def recover_orphans(self) -> int:
        """Queue again the jobs of consumers whose heartbeat stood still for the lease; returns how many."""
        storage = self.huey.storage
        items = storage.result_items()
        now = time.monotonic()
        beats: dict[str, bytes] = {}
        running: dict[str, list[str]] = {}
        for key, value in items.items():
            if key.startswith(_ALIVE):
                beats[key[len(_ALIVE):]] = bytes(value)
            elif key.startswith(_INFLIGHT):
                consumer = key[len(_INFLIGHT):].rpartition("|")[0]
                running.setdefault(consumer, []).append(key)
            elif key.startswith(_PERIODIC):
                self._forget_old_claim(storage, key)
        recovered = 0
        for consumer in set(beats) | set(running):
            if consumer == self.consumer_id:
                continue
            beat = beats.get(consumer)
            seen = self._heartbeats.get(consumer)
            if seen is None or seen[0] != beat:
                self._heartbeats[consumer] = (beat, now)
                continue
            if now - seen[1] < self.lease_seconds:
                continue
            recovered += self._requeue_consumer(consumer, reason=f"its consumer {consumer} went silent")
            storage.delete_data(f"{_ALIVE}{consumer}")
            self._heartbeats.pop(consumer, None)
        for consumer in set(self._heartbeats) - set(beats) - set(running):
            self._heartbeats.pop(consumer, None)
        self.recovered += recovered
        return recovered

    def _requeue_consumer(self, consumer: str, *, reason: str) -> int:
        storage = self._huey.storage
        prefix = f"{_INFLIGHT}{consumer}|"
        count = 0
        try:
            keys = [key for key in storage.result_items() if key.startswith(prefix)]
            for key in keys:
                data = storage.pop_data(key)  # atomic: of two consumers recovering, one gets it
                if not isinstance(data, (bytes, bytearray, memoryview)):
                    continue
                task = self._huey.deserialize_task(bytes(data))
                storage.enqueue(bytes(data), None)
                count += 1
                logger.warning("job %s (%s) queued again: %s", task.name, task.id, reason)
        except _broker_errors() as exc:
            self.broker.failed(exc)
        return count

    def _forget_old_claim(self, storage: Any, key: str) -> None:
        stamp = key.rpartition("|")[2]
        try:
            claimed = datetime.strptime(stamp, "%Y%m%d%H%M").timestamp()
        except ValueError:
            return
        from huey.utils import utcnow

        if utcnow().timestamp() - claimed > _PERIODIC_CLAIMS_KEPT_SECONDS:
            storage.delete_data(key)

    # ---- reporting -----------------------------------------------------------------------

    def health(self, *, max_age: float = 1.0) -> dict[str, Any]:
        """For /health and doctor: the mode, whether the queue answers, and its size. Never raises."""
        cached = self._health_cache
        if cached is not None and time.monotonic() - cached[0] < max_age:
            return cached[1]
        report: dict[str, Any] = {
            "mode": self.mode,
            "queue": self.label,
            "consumer": {"running": self.consuming, "workers": self._workers if self.consuming else 0},
        }
        opening = self._opening
        if self._huey is None and opening is not None and not opening.is_set():
            report.update(status="starting", detail="the job queue opens once the database has been checked")
            return report
        if self._huey is None:
            report.update(status="unavailable", detail=f"the job queue is not open{f': {self._open_error}' if self._open_error else ''}")
        else:
            try:
                report["pending"] = self._huey.pending_count()
                report["scheduled"] = self._huey.scheduled_count()
                report["status"] = "ok"
                self.broker.succeeded()
            except Exception as exc:
                self.broker.failed(exc)
                report.update(status="unavailable", detail=f"the job queue is unreachable ({_describe(exc)})")
        if self.recovered:
            report["recovered"] = self.recovered
        self._health_cache = (time.monotonic(), report)
        return report


# ---- after commit --------------------------------------------------------------------------

_AFTER_COMMIT = "a3e.jobs.after_commit"


def _after_commit(session: Session) -> list[tuple[JobRuntime, Any, tuple[Any, ...], dict[str, Any]]]:
    pending = session.info.get(_AFTER_COMMIT)
    if pending is None:
        from sqlalchemy import event

        pending = session.info[_AFTER_COMMIT] = []
        event.listen(session, "after_commit", _send_after_commit)
        event.listen(session, "after_transaction_end", _drop_after_transaction)
    if not session.in_transaction():
        session.begin()  # so that there is a commit to wait for, even when nothing else was written
    return pending


def _send_after_commit(session: Session) -> None:
    pending = session.info.get(_AFTER_COMMIT) or []
    session.info[_AFTER_COMMIT] = []
    for runtime, job, args, kwargs in pending:
        try:
            runtime.enqueue(job, *args, **kwargs)
        except Exception as exc:
            # The transaction is committed: raising here would report a failure for work that is done.
            logger.error("job %s not queued after commit: %s", getattr(job, "__a3e_job__", job), _describe(exc))


def _drop_after_transaction(session: Session, transaction: Any) -> None:
    if transaction.parent is None and session.info.get(_AFTER_COMMIT):
        # Only a rollback reaches here with jobs still pending: after_commit already took them.
        session.info[_AFTER_COMMIT] = []


# ---- the process's queue ---------------------------------------------------------------------

_installed: JobRuntime | None = None


def install(runtime: JobRuntime | None) -> None:
    """Make `runtime` the queue that module-level `enqueue` uses in this process (None: none)."""
    global _installed
    _installed = runtime


def uninstall(runtime: JobRuntime) -> None:
    """Forget `runtime` if it is the installed one (an app shutting down)."""
    global _installed
    if _installed is runtime:
        _installed = None


def installed() -> JobRuntime:
    if _installed is None:
        raise JobQueueUnavailable("the job queue is not running in this process")
    return _installed


def enqueue(job: str | Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    return installed().enqueue(job, *args, **kwargs)


def enqueue_after_commit(session: Session, job: str | Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    installed().enqueue_after_commit(session, job, *args, **kwargs)
