"""What-ifs for the `auth` section's profile only: A³E's real app (create_app from the same
environment as `a3e serve`), with one change each, to measure what a suggestion would buy before
anyone touches src/. Nothing in src/ is changed.

    python bench/whatif_auth_app.py --port N --variant VARIANT [--workers 2]

- `plain`: no change (with A3E_WHATIF_GC_FREEZE=1: only `gc.collect(); gc.freeze()` once the app is
  built, so that the full collections no longer walk the start-up objects — any variant takes it).
- `noping`: the PostgreSQL engine without `pool_pre_ping` (no `SELECT 1` round trip at each
  checkout; a dead connection is then found by the request that uses it, and SQLAlchemy discards
  the pool's connections when it sees a disconnect error).
- `fused`: an extra route, GET /whatif/workspaces/{workspace_id}, doing exactly what
  GET /api/v1/workspaces/{workspace_id} does (same bearer parsing, same principal and scoping
  functions from a3e, same session handling, same response model), but in *one* sync endpoint:
  one hop to the thread pool instead of one per sync dependency (session, principal, access) plus
  the endpoint and the session's exit.
- `onequery`: as `fused`, but the user, their membership and the workspace come from one SELECT
  (users LEFT JOIN memberships LEFT JOIN workspaces) instead of two: 401 and 404 answers stay the
  same (no row: invalid token; no membership: not found).

- `gate`: admission control in front of the app: a pure-ASGI wrapper lets at most as many /api/
  requests in at once as the engine's pool has connections (pool_size + max_overflow); the others
  wait on the event loop. For an A³E whose request holds its connection across thread-pool hops
  and has no admission control of its own, this removes the stall (every thread waiting for a
  connection held by a request waiting for a thread) at more requests in flight than thread
  tokens + connections; where A³E already admits no more, it measures a second gate's cost.
- `async-lean`: the ceiling of this stack: GET /whatif/workspaces/{workspace_id} as an `async def`
  route on the event loop (no thread pool), PyJWT for the token, one SQL statement on a small
  pool of psycopg `AsyncConnection`s in autocommit mode (no BEGIN/COMMIT, no ORM), the answer
  rendered by pydantic's `model_dump_json`. The same middleware, access log and 401/404 answers;
  user tokens only (an API key gets 401 here).
- `sync-lean`: the same as `async-lean` but a sync `def` route (one hop to the thread pool) on a
  pool of sync psycopg connections (as many as the engine's pool, autocommit): between
  `onequery-noping` and this lies the cost of the ORM, the Session and BEGIN/COMMIT; between this
  and `async-lean`, the cost of the thread pool and the sync driver.

The real route stays available in every variant, so one server answers both.
"""


import argparse
import os
import sys
import uuid
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import A3E_UVICORN_OPTIONS, HOST  # noqa: E402

VARIANTS = ("plain", "noping", "gate", "fused", "fused-noping", "onequery-noping", "sync-lean", "async-lean")
WHATIF_PATH = "/whatif/workspaces/{workspace_id}"


def _without_pre_ping() -> None:
    import sqlalchemy

    import a3e.core.database as database

    def create_engine(*args, **kwargs):
        if kwargs.get("pool_pre_ping"):
            kwargs["pool_pre_ping"] = False
        return sqlalchemy.create_engine(*args, **kwargs)

    database.create_engine = create_engine


def _add_fused_route(app, *, one_query: bool) -> None:
    from fastapi import Request
    from sqlalchemy import and_, select

    from a3e.auth.models import User
    from a3e.auth.principal import (
        API_KEY_PREFIX,
        Principal,
        Unauthorized,
        _api_key,
        _user_from_access_token,
        bearer_token,
        password_version,
    )
    from a3e.core.security import InvalidToken, decode_access_token
    from a3e.workspaces.api import _workspace_out
    from a3e.workspaces.models import Membership, Workspace
    from a3e.workspaces.permissions import Action, Role
    from a3e.workspaces.schemas import WorkspaceOut
    from a3e.workspaces.scoping import WorkspaceAccess, not_found, workspace_access

    def user_access(request: Request, session, token: str, workspace_id: uuid.UUID) -> WorkspaceAccess:
        settings = request.app.state.settings
        try:
            claims = decode_access_token(settings.jwt_secret_key.get_secret_value(), token)
            user_id = uuid.UUID(str(claims["sub"]))
        except InvalidToken as exc:
            raise Unauthorized(f"{str(exc).capitalize()}; log in again or refresh it") from None
        except ValueError:
            raise Unauthorized("The access token is invalid") from None
        row = session.execute(
            select(User, Membership, Workspace)
            .outerjoin(Membership, and_(Membership.user_id == User.id, Membership.workspace_id == workspace_id))
            .outerjoin(Workspace, Workspace.id == Membership.workspace_id)
            .where(User.id == user_id)
        ).first()
        if row is None or not row[0].is_active:
            raise Unauthorized("The access token is invalid")
        user, membership, workspace = row
        if claims.get("pwd") != password_version(user):
            raise Unauthorized("The password was changed since this token was issued; log in again")
        if membership is None or workspace is None:
            raise not_found()
        access = WorkspaceAccess(workspace, Principal(user=user), Role(membership.role), membership)
        access.require(Action.WORKSPACE_READ)
        return access

    def get_workspace_fused(workspace_id: uuid.UUID, request: Request) -> WorkspaceOut:
        database = request.app.state.database
        with database.session() as session:
            try:
                token = bearer_token(request)
                if token is None:
                    raise Unauthorized()
                if token.startswith(API_KEY_PREFIX):
                    principal = Principal(api_key=_api_key(session, token))
                    access = workspace_access(session, principal, workspace_id, Action.WORKSPACE_READ)
                elif one_query:
                    access = user_access(request, session, token, workspace_id)
                else:
                    principal = Principal(user=_user_from_access_token(request, session, token))
                    access = workspace_access(session, principal, workspace_id, Action.WORKSPACE_READ)
                answer = _workspace_out(access.workspace, access.role)
                session.commit()
            except BaseException:
                session.rollback()
                raise
        return answer

    app.add_api_route(WHATIF_PATH, get_workspace_fused, methods=["GET"], response_model=WorkspaceOut)


def _gate(app, capacity: int):
    import asyncio

    semaphore: asyncio.Semaphore | None = None

    async def gated(scope, receive, send):
        nonlocal semaphore
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await app(scope, receive, send)
            return
        if semaphore is None:
            semaphore = asyncio.Semaphore(capacity)
        async with semaphore:
            await app(scope, receive, send)

    return gated


_LEAN_SQL = (
    "SELECT u.is_active, u.password_changed_at, m.role, w.id, w.name, w.created_at, w.updated_at "
    "FROM users u LEFT JOIN memberships m ON m.user_id = u.id AND m.workspace_id = %s "
    "LEFT JOIN workspaces w ON w.id = m.workspace_id WHERE u.id = %s"
)


def _lean_claims(request, token):
    from a3e.auth.principal import Unauthorized
    from a3e.core.security import InvalidToken, decode_access_token

    try:
        claims = decode_access_token(request.app.state.settings.jwt_secret_key.get_secret_value(), token)
        return claims, uuid.UUID(str(claims["sub"]))
    except InvalidToken as exc:
        raise Unauthorized(f"{str(exc).capitalize()}; log in again or refresh it") from None
    except ValueError:
        raise Unauthorized("The access token is invalid") from None


def _lean_answer(claims, row):
    from fastapi import Response

    from a3e.auth.principal import Unauthorized
    from a3e.core.errors import Forbidden
    from a3e.workspaces.permissions import PERMISSIONS, Action, Role
    from a3e.workspaces.schemas import WorkspaceOut
    from a3e.workspaces.scoping import not_found

    if row is None or not row[0]:
        raise Unauthorized("The access token is invalid")
    if claims.get("pwd") != int(row[1].timestamp() * 1000):
        raise Unauthorized("The password was changed since this token was issued; log in again")
    if row[2] is None or row[3] is None:
        raise not_found()
    role = Role(row[2])
    if Action.WORKSPACE_READ not in PERMISSIONS[role]:
        raise Forbidden("Not allowed")
    body = WorkspaceOut(id=row[3], name=row[4], role=role, created_at=row[5], updated_at=row[6])
    return Response(body.model_dump_json().encode(), media_type="application/json")


def _connect_kwargs(app) -> dict:
    from sqlalchemy.engine import make_url

    url = make_url(app.state.settings.sqlalchemy_url)
    return dict(host=url.host, port=url.port, user=url.username, password=url.password or None, dbname=url.database,
                autocommit=True)


def _add_sync_lean_route(app) -> None:
    import queue
    import threading

    import psycopg
    from fastapi import Request

    from a3e.auth.principal import Unauthorized, bearer_token

    pool = app.state.database.engine.pool
    size = pool.size() + pool._max_overflow
    connections: queue.LifoQueue = queue.LifoQueue()
    lock = threading.Lock()
    opened = [0]

    def checkout():
        try:
            return connections.get_nowait()
        except queue.Empty:
            pass
        with lock:
            if opened[0] < size:
                opened[0] += 1
                return psycopg.connect(**_connect_kwargs(app))
        return connections.get(timeout=app.state.settings.db_connect_timeout)

    def get_workspace_sync_lean(workspace_id: uuid.UUID, request: Request):
        token = bearer_token(request)
        if token is None:
            raise Unauthorized()
        claims, user_id = _lean_claims(request, token)
        connection = checkout()
        try:
            row = connection.execute(_LEAN_SQL, (workspace_id, user_id)).fetchone()
        finally:
            connections.put(connection)
        return _lean_answer(claims, row)

    app.add_api_route(WHATIF_PATH, get_workspace_sync_lean, methods=["GET"])


def _add_async_lean_route(app) -> None:
    import asyncio

    import psycopg
    from fastapi import Request

    from a3e.auth.principal import Unauthorized, bearer_token

    size = 8
    state: dict = {}

    async def connection_pool() -> asyncio.Queue:
        if "pool" not in state:
            connections: asyncio.Queue = asyncio.Queue()
            for _ in range(size):
                connections.put_nowait(await psycopg.AsyncConnection.connect(**_connect_kwargs(app)))
            state.setdefault("pool", connections)
        return state["pool"]

    async def get_workspace_lean(workspace_id: uuid.UUID, request: Request):
        token = bearer_token(request)
        if token is None:
            raise Unauthorized()
        claims, user_id = _lean_claims(request, token)
        pool = await connection_pool()
        connection = await pool.get()
        try:
            cursor = await connection.execute(_LEAN_SQL, (workspace_id, user_id))
            row = await cursor.fetchone()
        finally:
            pool.put_nowait(connection)
        return _lean_answer(claims, row)

    app.add_api_route(WHATIF_PATH, get_workspace_lean, methods=["GET"])


def build(variant: str):
    from a3e.app import create_app
    from a3e.core.settings import load_settings

    if "noping" in variant:
        _without_pre_ping()
    loaded = load_settings()
    app = create_app(loaded.settings, warnings=loaded.warnings)
    if variant.startswith(("fused", "onequery")):
        _add_fused_route(app, one_query=variant.startswith("onequery"))
    if variant == "async-lean":
        _add_async_lean_route(app)
    if variant == "sync-lean":
        _add_sync_lean_route(app)
    if os.environ.get("A3E_WHATIF_GC_FREEZE"):
        import gc

        gc.collect()
        gc.freeze()
    if variant == "gate":
        pool = app.state.database.engine.pool
        return _gate(app, pool.size() + pool._max_overflow)
    return app


def factory():
    """For uvicorn's workers (`--workers 2`): the variant comes from the environment."""
    return build(os.environ["A3E_WHATIF_VARIANT"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    from a3e.core.logging import configure_logging
    from a3e.core.settings import load_settings

    settings = load_settings().settings
    configure_logging(settings.log_level, settings.effective_log_format, settings.secret_values())
    if args.workers == 1:
        uvicorn.run(build(args.variant), host=HOST, port=args.port, **A3E_UVICORN_OPTIONS)
    else:
        os.environ["A3E_WHATIF_VARIANT"] = args.variant
        uvicorn.run("whatif_auth_app:factory", factory=True, workers=args.workers, host=HOST, port=args.port,
                    **A3E_UVICORN_OPTIONS)


if __name__ == "__main__":
    main()
