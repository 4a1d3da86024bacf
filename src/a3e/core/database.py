"""Database engine, sessions, and the readiness of the database.

Nothing here connects at import or at construction: the engine is lazy, and the first connection
is made by the background `DatabaseMonitor` (with short timeouts and backoff) or by a request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Engine, Executable, MetaData, create_engine, event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from a3e.core.settings import Settings, mask_database_url

logger = logging.getLogger("a3e.database")

# Stable constraint names, so that migrations can alter them on PostgreSQL and SQLite alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Connections per process. The app admits at most this many API requests at once per process
# (see ConcurrencyLimitMiddleware): a request then never waits for a connection while holding
# a worker thread that another request's connection is waiting for.
# All of them are kept open: an overflow connection closed after each burst costs a new
# connection (a new PostgreSQL backend process) for the next one, and under load that churn
# dominated the cost of a request.
DB_POOL_SIZE = 10
DB_MAX_OVERFLOW = 0
MAX_CONNECTIONS_PER_PROCESS = DB_POOL_SIZE + DB_MAX_OVERFLOW
# A pooled connection idle for longer than this is pinged before use.
IDLE_PING_SECONDS = 30.0

# Domain packages whose models belong to the schema; migrations and the drift test load them all.
MODEL_MODULES: tuple[str, ...] = (
    "a3e.auth.models",
    "a3e.workspaces.models",
    "a3e.apikeys.models",
    "a3e.audit.models",
    "a3e.standards.models",
    "a3e.evidence.models",
    "a3e.review.models",
    "a3e.billing.models",
    "a3e.webhooks.models",
)


def load_all_models() -> MetaData:
    import importlib

    for module in MODEL_MODULES:
        importlib.import_module(module)
    return Base.metadata


def describe_db_error(exc: BaseException) -> str:
    """A one-line, secret-free reason for a database failure."""
    original = getattr(exc, "orig", None) or exc
    message = str(original).strip().splitlines()[0] if str(original).strip() else original.__class__.__name__
    return f"{original.__class__.__name__}: {message}"[:300]


def build_engine(settings: Settings) -> Engine:
    url = make_url(settings.sqlalchemy_url)
    timeout = settings.db_connect_timeout
    if url.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": max(timeout, 5.0)},
            pool_pre_ping=False,
            pool_size=DB_POOL_SIZE,
            max_overflow=DB_MAX_OVERFLOW,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        return engine
    engine = create_engine(
        url,
        connect_args=_postgres_connect_args(settings),
        # Not pool_pre_ping: a SELECT 1 round trip before every request's first query cost a
        # quarter of a read's time. Only connections idle for a while are pinged (below).
        pool_pre_ping=False,
        pool_size=DB_POOL_SIZE,
        max_overflow=DB_MAX_OVERFLOW,
        pool_timeout=timeout,
        pool_recycle=1800,
    )
    _ping_idle_connections(engine)
    return engine


def _postgres_connect_args(settings: Settings) -> dict[str, Any]:
    return {"connect_timeout": max(1, round(settings.db_connect_timeout)), "application_name": "a3e"}


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a pooled connection at checkout only when it sat idle long enough for a firewall, a
    failover or a database restart to have cut it; a failed ping makes the pool reconnect."""

    @event.listens_for(engine, "checkin")
    def _note_idle_since(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        except Exception as exc:
            raise DisconnectionError(describe_db_error(exc)) from exc


def ensure_sqlite_directory(settings: Settings) -> None:
    url = make_url(settings.sqlalchemy_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


@dataclass
class CheckResult:
    status: str  # "ok" | "fail" | "unknown"
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, **self.extra}


@dataclass
class Readiness:
    database: CheckResult
    migrations: CheckResult
    checked_at: float

    @property
    def ready(self) -> bool:
        return self.database.ok and self.migrations.ok

    def failing(self) -> list[tuple[str, CheckResult]]:
        return [(name, check) for name, check in (("database", self.database), ("migrations", self.migrations)) if not check.ok]


class Database:
    """The engine, the session factory, and a cached, coalesced readiness check."""

    READINESS_CACHE_SECONDS = 1.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = build_engine(settings)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self.masked_url = mask_database_url(settings.sqlalchemy_url)
        self._last: Readiness | None = None
        self._check_lock: asyncio.Lock | None = None
        self.startup = CheckResult("unknown", "the database has not been checked yet")
        self.reads = Reads(self)

    def check_now(self) -> Readiness:
        """Blocking: connect, SELECT 1, compare the schema revision with the code's head."""
        from a3e.core import migrations

        started = time.perf_counter()
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
                elapsed = round((time.perf_counter() - started) * 1000, 1)
                database = CheckResult("ok", "the database answers", {"latency_ms": elapsed})
                migration = migrations.status(connection)
        except Exception as exc:  # any driver error means "not ready", never a crash
            database = CheckResult("fail", f"cannot reach the database ({describe_db_error(exc)})")
            migration = CheckResult("unknown", "cannot be checked while the database is unreachable")
        return Readiness(database, migration, time.monotonic())

    async def readiness(self, *, max_age: float | None = None) -> Readiness:
        """The readiness, checked at most once per second however many probes arrive."""
        max_age = self.READINESS_CACHE_SECONDS if max_age is None else max_age
        last = self._last
        if last is not None and time.monotonic() - last.checked_at < max_age:
            return last
        if self._check_lock is None:
            self._check_lock = asyncio.Lock()
        async with self._check_lock:
            last = self._last
            if last is not None and time.monotonic() - last.checked_at < max_age:
                return last
            timeout = self.settings.db_connect_timeout + 1.0
            try:
                result = await asyncio.wait_for(asyncio.to_thread(self.check_now), timeout)
            except TimeoutError:
                result = Readiness(
                    CheckResult("fail", f"the database did not answer within {timeout:.0f}s"),
                    CheckResult("unknown", "cannot be checked while the database is unreachable"),
                    time.monotonic(),
                )
            self._last = result
            return result

    def dispose(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return self.sessionmaker()


class Reads:
    """The per-request lookups every authenticated call makes (who is calling, and their access
    to a workspace), run without an ORM session or a transaction.

    On PostgreSQL they run on the event loop through a small pool of psycopg `AsyncConnection`s
    in autocommit mode: no worker-thread hop, no BEGIN/COMMIT, no identity map — measured in
    bench/RESULTS.md (auth section) at several times the throughput of the ORM path. On SQLite
    they run on the engine in one worker-thread hop. Either way the statement is SQLAlchemy Core
    built from the models, and the column types convert the results, so both backends hand back
    the same values. Reads only (and idempotent writes such as an API key's last-used time): a
    statement that fails on a broken connection is retried once on a fresh one.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self.dialect = database.engine.dialect
        self.is_postgres = self.dialect.name == "postgresql"
        self._compiled: dict[int, tuple[Executable, str, list[Any]]] = {}
        self._pool: Any = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None

    def _compile(self, statement: Executable) -> tuple[str, list[Any]]:
        cached = self._compiled.get(id(statement))
        if cached is not None and cached[0] is statement:
            return cached[1], cached[2]
        compiled = statement.compile(dialect=self.dialect)
        processors = [
            column.type.dialect_impl(self.dialect).result_processor(self.dialect, None)
            for column in getattr(statement, "selected_columns", ())
        ]
        self._compiled[id(statement)] = (statement, str(compiled), processors)
        return str(compiled), processors

    async def _postgres_pool(self) -> Any:
        """The pool of the running event loop (a TestClient may run several loops in turn)."""
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._pool_loop is loop:
            return self._pool
        from psycopg_pool import AsyncConnectionPool

        settings = self.database.settings
        url = make_url(settings.sqlalchemy_url)
        args, kwargs = self.dialect.create_connect_args(url)
        kwargs = {**kwargs, **_postgres_connect_args(settings), "autocommit": True}
        conninfo = args[0] if args else ""
        pool = AsyncConnectionPool(
            conninfo,
            kwargs=kwargs,
            min_size=1,
            max_size=MAX_CONNECTIONS_PER_PROCESS,
            timeout=settings.db_connect_timeout,
            max_idle=300,
            reconnect_timeout=settings.db_connect_timeout * 2,
            open=False,
            name="a3e-reads",
        )
        await pool.open(wait=False)
        self._pool, self._pool_loop = pool, loop
        return pool

    async def fetch_one(self, statement: Executable, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of a Core SELECT, its values converted by the column types."""
        if not self.is_postgres:
            return await asyncio.to_thread(self._fetch_one_sync, statement, params)
        sql, processors = self._compile(statement)
        row = await self._run_postgres(sql, params, fetch=True)
        if row is None:
            return None
        return tuple(value if convert is None else convert(value) for convert, value in zip(processors, row))

    async def execute(self, statement: Executable, params: dict[str, Any]) -> None:
        """An idempotent write, committed at once."""
        if not self.is_postgres:
            await asyncio.to_thread(self._execute_sync, statement, params)
            return
        sql, _ = self._compile(statement)
        await self._run_postgres(sql, params, fetch=False)

    async def _run_postgres(self, sql: str, params: dict[str, Any], *, fetch: bool) -> Any:
        import psycopg
        from psycopg_pool import PoolTimeout
        from sqlalchemy.exc import OperationalError
        from sqlalchemy.exc import TimeoutError as PoolTimeoutError

        pool = await self._postgres_pool()
        for attempt in (1, 2):
            try:
                async with pool.connection() as connection:
                    cursor = await connection.execute(sql, params)
                    return await cursor.fetchone() if fetch else None
            except psycopg.OperationalError as exc:
                # A connection cut while it sat in the pool: the pool drops it; try a fresh one.
                # Raised as SQLAlchemy's error, so that the app answers 503 as for any query.
                if attempt == 2:
                    raise OperationalError(sql, None, exc) from exc
            except PoolTimeout as exc:
                raise PoolTimeoutError(f"no database connection within the timeout ({exc})") from exc
        return None  # pragma: no cover

    def _fetch_one_sync(self, statement: Executable, params: dict[str, Any]) -> tuple[Any, ...] | None:
        with self.database.engine.connect() as connection:
            row = connection.execute(statement, params).first()
        return tuple(row) if row is not None else None

    def _execute_sync(self, statement: Executable, params: dict[str, Any]) -> None:
        with self.database.engine.begin() as connection:
            connection.execute(statement, params)

    async def close(self) -> None:
        pool, self._pool, self._pool_loop = self._pool, None, None
        if pool is not None:
            await pool.close(timeout=2.0)


class DatabaseMonitor:
    """Brings the database into service in the background: connect, migrate (when the embedded
    default asks for it), and keep trying with backoff while it is down. Never blocks start-up."""

    def __init__(self, database: Database, *, auto_migrate: bool, max_delay: float = 10.0) -> None:
        self.database = database
        self.auto_migrate = auto_migrate
        self.max_delay = max_delay
        self.attempts = 0
        self._stop = threading.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run(), name="a3e-database-monitor")

    async def stop(self) -> None:
        self._stop.set()
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass

    def _prepare(self) -> tuple[bool, CheckResult]:
        """(reachable, migration status) after one attempt."""
        from a3e.core import migrations

        try:
            if self.auto_migrate:
                migrations.upgrade(self.database.engine)
            with self.database.engine.connect() as connection:
                return True, migrations.status(connection)
        except Exception as exc:
            return False, CheckResult("fail", describe_db_error(exc))

    async def run(self) -> None:
        delay = 0.25
        last_reason = None
        while not self._stop.is_set():
            self.attempts += 1
            reachable, result = await asyncio.to_thread(self._prepare)
            self.database.startup = result
            if result.ok:
                self.database._last = None  # let the next probe see the new state at once
                if self.attempts > 1:
                    logger.info("database is ready after %d attempts", self.attempts)
                return
            if reachable:  # but migrations are pending and running them is a deploy step here
                logger.warning("database schema is not at the latest migration: %s; run `a3e migrate`", result.detail)
                return
            if result.detail != last_reason:
                logger.warning(
                    "database %s not ready (%s); retrying in the background", self.database.masked_url, result.detail
                )
                last_reason = result.detail
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request, committed when the endpoint returns without error.

    Opening a session does no I/O, so it happens on the event loop; only the end (commit or
    rollback, and returning the connection) does I/O, and runs in a worker thread. The blocking
    queries themselves run in the sync dependencies and endpoints that use the session.
    """
    database: Database = request.app.state.database
    session = database.session()
    try:
        yield session
    except BaseException:
        await asyncio.to_thread(_rollback_and_close, session)
        raise
    await asyncio.to_thread(_commit_and_close, session)


def _commit_and_close(session: Session) -> None:
    try:
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _rollback_and_close(session: Session) -> None:
    try:
        session.rollback()
    finally:
        session.close()


# scope="function": commit before the response is sent, so a client acting on the response sees
# the write, and a failed commit is an error response rather than a silent loss.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
