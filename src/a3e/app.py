"""The ASGI application: `create_app(settings)`.

Importing this module does no I/O. `create_app` builds the app from settings; the lifespan
starts the background database monitor and returns at once, whatever state the database is in.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from a3e import __version__
from a3e.core.database import (
    MAX_CONNECTIONS_PER_PROCESS,
    Database,
    DatabaseMonitor,
    describe_db_error,
    ensure_sqlite_directory,
)
from a3e.core.errors import error_response, install_error_handlers, request_id_of
from a3e.core.features import Feature, resolve_features
from a3e.core.logging import access_log, configure_logging
from a3e.core.middleware import (
    ConcurrencyLimitMiddleware,
    CORSMiddleware,
    GuardMiddleware,
    LivenessMiddleware,
    RequestContextMiddleware,
)
from a3e.core.security import PasswordHasherConfig, Passwords, VerifiedAccessTokens
from a3e.core.settings import ConfigError, Settings, load_settings

logger = logging.getLogger("a3e")


def core_routers() -> list:
    """The API every deployment has. (Optional parts are features, isolated from these.)"""
    from a3e.apikeys.api import router as api_keys
    from a3e.audit.api import router as audit
    from a3e.auth.api import router as auth
    from a3e.evidence.api import router as evidence
    from a3e.evidence.search_api import router as search
    from a3e.review.api import router as review
    from a3e.review.links_api import router as review_links
    from a3e.review.matrix_api import router as review_matrix
    from a3e.standards.api import routers as standards
    from a3e.webhooks.api import router as webhooks
    from a3e.workspaces.api import router as workspaces

    return [auth, workspaces, api_keys, audit, *standards, evidence, search, review, review_links, review_matrix,
            webhooks]


def builtin_features() -> list[Feature]:
    from a3e.features import BUILTIN_FEATURES

    return list(BUILTIN_FEATURES)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    database: Database = app.state.database
    try:
        ensure_sqlite_directory(settings)
    except OSError as exc:
        logger.error("cannot create the directory of the SQLite database: %s", exc)
    monitor = DatabaseMonitor(database, auto_migrate=settings.should_auto_migrate)
    app.state.database_monitor = monitor
    monitor.start()
    loop = asyncio.get_running_loop()
    flusher = loop.create_task(access_log.flush_periodically(), name="a3e-access-log")
    # The queue opens once the database has had its first check, off the path to readiness: its
    # imports and threads would otherwise delay the first answers (jobs wait for the database
    # anyway). A job queued before then waits for it to open.
    app.state.jobs.opening_in_background()
    jobs_started = loop.create_task(_start_jobs_after(app, monitor), name="a3e-jobs-start")
    logger.info(
        "A3E %s started (%s, database %s)", __version__, settings.environment_label, database.masked_url
    )
    # The objects of start-up (routes, models, schemas) live as long as the process: moved out of
    # the collector's generations, the full collections of a busy server no longer walk them
    # (measured in bench/RESULTS.md, auth section: a shorter tail above all).
    gc.freeze()
    try:
        yield
    finally:
        flusher.cancel()
        await jobs_started
        await monitor.stop()
        await database.reads.close()
        # Running jobs get their grace period; the ones that do not finish are queued again.
        await asyncio.to_thread(_stop_jobs, app)
        # Queued emails get their chance within a bounded time.
        await asyncio.to_thread(app.state.email.shutdown, True, 10.0)
        access_log.flush()
        database.dispose()


async def _start_jobs_after(app: FastAPI, monitor: DatabaseMonitor) -> None:
    if monitor.task is not None:
        await asyncio.wait({monitor.task}, timeout=JOBS_START_DELAY_MAX)
    await asyncio.to_thread(_start_jobs, app)


# The queue opens at the latest this long after start, even while the database is still down.
JOBS_START_DELAY_MAX = 5.0


def _start_jobs(app: FastAPI) -> None:
    """Open the job queue and, in the embedded mode, consume it here. A queue that cannot be opened
    is logged and reported by /health; the API serves without it."""
    from a3e.jobs import service as jobs_service

    settings: Settings = app.state.settings
    jobs: jobs_service.JobRuntime = app.state.jobs
    try:
        jobs.open()
        jobs_service.install(jobs)
        if settings.runs_embedded_jobs:
            jobs.start_consumer()
    except Exception as exc:
        logger.error("background jobs unavailable (%s): %s", jobs.label, describe_db_error(exc))


def _stop_jobs(app: FastAPI) -> None:
    from a3e.jobs import service as jobs_service

    jobs: jobs_service.JobRuntime = app.state.jobs
    try:
        jobs.close()
    finally:
        jobs_service.uninstall(jobs)


async def _database_unavailable(request: Request, exc: Exception) -> object:
    """A request that needs the database while it is down: 503 with the reason, not a 500."""
    logger.warning("database unavailable during %s %s: %s", request.method, request.url.path, describe_db_error(exc))
    return error_response(
        503,
        "database_unavailable",
        "The database is unavailable; try again shortly.",
        request_id=request_id_of(request),
        headers={"Retry-After": "5"},
    )


class A3EApp(FastAPI):
    """FastAPI with our edge layers outside the framework's own middleware stack.

    Request id, access log, CORS and the liveness answer wrap everything, Starlette's
    ServerErrorMiddleware included: every response (a crash's too) gets its request id and CORS
    headers, and a liveness probe costs no more than those layers.
    """

    cors_origins: list[str] = []

    def build_middleware_stack(self):  # type: ignore[no-untyped-def]
        inner = super().build_middleware_stack()
        return RequestContextMiddleware(CORSMiddleware(LivenessMiddleware(inner), allow_origins=self.cors_origins))


def create_app(
    settings: Settings | None = None,
    *,
    features: Sequence[Feature] | None = None,
    warnings: Sequence[str] = (),
) -> FastAPI:
    if settings is None:
        loaded = load_settings()
        settings, warnings = loaded.settings, loaded.warnings
    configure_logging(settings.log_level, settings.effective_log_format, settings.secret_values())
    for warning in warnings:
        logger.warning(warning)

    app = A3EApp(
        title="A³E API",
        version=__version__,
        description="Autonomous Accreditation & Audit Engine",
        lifespan=_lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        # No OpenTelemetry export is configured; its per-request hooks would only cost time.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False, "auto_configure": False},
    )
    app.state.settings = settings
    app.cors_origins = list(settings.cors_origins)
    app.state.database = Database(settings)
    from a3e.email.service import EmailSender

    app.state.email = EmailSender(settings)
    from a3e.jobs.service import JobRuntime

    app.state.jobs = JobRuntime(settings)
    app.state.passwords = Passwords(
        PasswordHasherConfig(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
    )
    app.state.access_tokens = VerifiedAccessTokens(
        settings.jwt_secret_key.get_secret_value() if settings.jwt_secret_key else None
    )
    from a3e.review.matrix_cache import MatrixCache

    app.state.matrix_cache = MatrixCache()
    app.state.started_monotonic = time.monotonic()

    install_error_handlers(app)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeoutError, _database_unavailable)
    app.add_exception_handler(DBAPIError, _db_error_or_unavailable)

    # Health first: nothing registered later can shadow it.
    from a3e.core.health import router as health_router

    app.include_router(health_router)
    for router in core_routers():
        app.include_router(router)
    app.state.features = resolve_features(
        app, settings, builtin_features() if features is None else features
    )

    # Inside the framework's stack; the edge layers wrap it (see A3EApp). The last added is outermost.
    app.add_middleware(ConcurrencyLimitMiddleware, limit=MAX_CONNECTIONS_PER_PROCESS)
    app.add_middleware(
        GuardMiddleware,
        max_body_bytes=settings.max_body_kb * 1024,
        max_upload_bytes=settings.max_upload_mb * 1024 * 1024,
    )
    return app


async def _db_error_or_unavailable(request: Request, exc: Exception) -> object:
    assert isinstance(exc, DBAPIError)
    if exc.connection_invalidated:
        return await _database_unavailable(request, exc)
    raise exc


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn (`a3e.app:create_app_from_env`): exits 78 on a configuration error."""
    try:
        return create_app()
    except ConfigError as error:
        print(error.render(), file=sys.stderr)
        raise SystemExit(78) from None
