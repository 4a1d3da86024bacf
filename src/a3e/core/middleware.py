"""The edge of the app, as plain ASGI middleware (outermost first; the first three wrap even the
framework's own stack, see a3e.app.A3EApp):

1. `RequestContextMiddleware`: request id in and out, one access-log line per request.
2. `CORSMiddleware`: CORS headers on *every* response to an allowed origin, errors included.
3. `LivenessMiddleware`: /health/live answered without routing.
4. `GuardMiddleware`: request-size limit and the last-resort 500, both in the error envelope.

The 500 handler sits inside CORS on purpose: Starlette's own ServerErrorMiddleware is outside
all user middleware, so a crash would reach the browser without CORS headers and be reported
as a "CORS error" instead of the real one.
"""

from __future__ import annotations

import logging
import re
import os
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from a3e.core.errors import error_response
from a3e.core.logging import access_log, request_id_var

error_logger = logging.getLogger("a3e.errors")

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def _state(scope: Scope) -> dict:
    return scope.setdefault("state", {})


class RequestContextMiddleware:
    """Request id in and out, and the access-log line. On every request: kept lean (raw header
    lists rather than Headers objects), since it is most of the cost of a health probe."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                if _VALID_REQUEST_ID.match(incoming):
                    request_id = incoming
                break
        if request_id is None:
            request_id = os.urandom(16).hex()
        _state(scope)["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("latin-1"))
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # Never the query string, nor a token in the path.
            access_log.write(
                request_id, scope["method"], loggable_path(scope), status, round((time.perf_counter() - started) * 1000, 2)
            )
            request_id_var.reset(token)


_LIVE_BODY = b'{"status":"alive"}'
_LIVE_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_LIVE_BODY)).encode())]


class LivenessMiddleware:
    """Answers GET/HEAD /health/live before routing: probes arrive often and must stay cheap.
    It sits inside the request-id and CORS layers, so the answer carries their headers too; the
    same route is declared in FastAPI for the OpenAPI schema."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/health/live" and scope["method"] in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 200, "headers": list(_LIVE_HEADERS)})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else _LIVE_BODY})
            return
        await self.app(scope, receive, send)


_SENSITIVE_PARAM = re.compile(r"token|secret|key|password", re.IGNORECASE)


def loggable_path(scope: Scope) -> str:
    """The request path with path parameters named like credentials masked
    (e.g. /invitations/{token}/accept), so that the access log never holds one."""
    path = scope["path"]
    params = scope.get("path_params") or {}
    for name, value in params.items():
        if _SENSITIVE_PARAM.search(name) and isinstance(value, str) and value:
            path = path.replace(value, "***")
    return path


DEFAULT_ALLOW_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_ALLOW_HEADERS = (
    "accept",
    "accept-language",
    "authorization",
    "content-language",
    "content-type",
    "idempotency-key",
    "x-request-id",
    "x-requested-with",
)
DEFAULT_EXPOSE_HEADERS = ("X-Request-ID", "Retry-After", "Content-Disposition")


class CORSMiddleware:
    """CORS for the configured origins only, with credentials, on every response.

    Starlette's CORSMiddleware adds credential headers even for origins it refuses and answers a
    refused preflight in plain text; here a refused origin gets no CORS headers at all and every
    refusal uses the error envelope.
    """

    def __init__(
        self,
        app: ASGIApp,
        allow_origins: Iterable[str],
        allow_methods: Iterable[str] = DEFAULT_ALLOW_METHODS,
        allow_headers: Iterable[str] = DEFAULT_ALLOW_HEADERS,
        expose_headers: Iterable[str] = DEFAULT_EXPOSE_HEADERS,
        max_age: int = 600,
    ) -> None:
        self.app = app
        origins = list(allow_origins)
        self.allow_any = "*" in origins
        self.allow_origins = frozenset(origin for origin in origins if origin != "*")
        self.allow_methods = tuple(m.upper() for m in allow_methods)
        self.allow_headers = frozenset(h.lower() for h in allow_headers)
        self.expose_headers = ", ".join(expose_headers)
        self.max_age = str(max_age)

    def is_allowed(self, origin: str) -> bool:
        return self.allow_any or origin.rstrip("/").lower() in self.allow_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = None
        for name, value in scope["headers"]:  # raw scan: most requests carry no Origin at all
            if name == b"origin":
                origin = value.decode("latin-1")
                break
        if origin is None:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        allowed = self.is_allowed(origin)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(scope, receive, send, headers, origin, allowed)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                response_headers.add_vary_header("Origin")
                if allowed:
                    response_headers["Access-Control-Allow-Origin"] = origin
                    response_headers["Access-Control-Allow-Credentials"] = "true"
                    response_headers["Access-Control-Expose-Headers"] = self.expose_headers
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers, origin: str, allowed: bool
    ) -> None:
        request_id = _state(scope).get("request_id")
        vary = {"Vary": "Origin"}
        if not allowed:
            response = error_response(
                403,
                "cors_origin_not_allowed",
                f"Origin {origin} is not in CORS_ORIGINS",
                request_id=request_id,
                headers=vary,
            )
            await response(scope, receive, send)
            return
        cors = {
            **vary,
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Allow-Methods": ", ".join(self.allow_methods),
            "Access-Control-Max-Age": self.max_age,
        }
        method = headers["access-control-request-method"].upper()
        requested = [h.strip().lower() for h in headers.get("access-control-request-headers", "").split(",") if h.strip()]
        refused = [h for h in requested if h not in self.allow_headers]
        if method not in self.allow_methods or refused:
            problem = f"method {method}" if method not in self.allow_methods else f"headers {', '.join(refused)}"
            response = error_response(
                400, "cors_preflight_refused", f"CORS preflight refused: {problem} not allowed", request_id=request_id, headers=cors
            )
            await response(scope, receive, send)
            return
        if requested:
            cors["Access-Control-Allow-Headers"] = ", ".join(requested)
        await send({"type": "http.response.start", "status": 204, "headers": [(k.lower().encode(), v.encode()) for k, v in cors.items()]})
        await send({"type": "http.response.body", "body": b""})


class _BodyTooLarge(StarletteHTTPException):
    """An HTTPException so that FastAPI's body parsing passes it on instead of calling it a 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"The request body is larger than the limit of {_human_bytes(limit)}", headers={"Connection": "close"}
        )
        self.limit = limit


# A multipart body carries its framing and a few text fields besides the files: room for them on
# top of A3E_MAX_UPLOAD_MB, so that a file of exactly the limit gets through. The upload receiver
# (a3e.evidence.uploads) enforces the exact limits on the files and on each field.
MULTIPART_ALLOWANCE_BYTES = 2 * 1024 * 1024


class GuardMiddleware:
    """Refuses oversized bodies with 413 and turns any unhandled exception into a 500 envelope."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    def _limits_for(self, headers: Headers) -> tuple[int, int]:
        """(bytes allowed, the limit to name in a 413: the one an operator configured)."""
        content_type = headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            return self.max_upload_bytes + MULTIPART_ALLOWANCE_BYTES, self.max_upload_bytes
        return self.max_body_bytes, self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit, stated_limit = self._limits_for(headers)
        request_id = _state(scope).get("request_id")
        try:
            declared = int(headers.get("content-length", "0") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            await self._too_large(scope, receive, send, stated_limit, request_id)
            return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(stated_limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if response_started:
                raise
            await self._too_large(scope, receive, send, stated_limit, request_id)
        except Exception:
            error_logger.exception("Unhandled error on %s %s", scope["method"], scope["path"])
            if response_started:
                raise
            response = error_response(
                500,
                "internal_error",
                "An unexpected error occurred. Quote the request id when you report it.",
                request_id=request_id,
            )
            await response(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int, request_id: str | None) -> None:
        response = error_response(
            413,
            "request_too_large",
            f"The request body is larger than the limit of {_human_bytes(limit)}",
            request_id=request_id,
            # The rest of the body is never read: close, rather than let the server drain it.
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _human_bytes(size: int) -> str:
    if size >= 1024 * 1024 and size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KB"
    return f"{size} bytes"


class ConcurrencyLimitMiddleware:
    """Admits at most `limit` API requests at once in this process; the others wait their turn.

    Endpoints run blocking database work in worker threads, and a request's session holds its
    connection from its first query until its end. With more requests in flight than connections,
    every thread can end up waiting for a connection held by a request that is itself waiting for
    a thread — the process stalls. Admitting no more requests than the pool has connections makes
    that impossible. A request that waits longer than `max_wait` seconds gets 503 and Retry-After.
    """

    def __init__(self, app: ASGIApp, limit: int, max_wait: float = 30.0, prefix: str = "/api/") -> None:
        self.app = app
        self.limit = limit
        self.max_wait = max_wait
        self.prefix = prefix
        self._semaphore = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        if _is_deferred_upload(scope):
            # A document upload streams in for as long as the client's link takes, using no
            # connection meanwhile: it is admitted once its body is in (the route enters
            # `admitted`), so that slow uploads never hold back everyone else's requests.
            scope.setdefault("state", {})[ADMISSION_STATE] = self
            await self.app(scope, receive, send)
            return
        if not await self.acquire():
            response = error_response(
                503,
                "server_busy",
                "The server is busy; try again shortly.",
                request_id=_state(scope).get("request_id"),
                headers={"Retry-After": "2"},
            )
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.release()

    async def acquire(self) -> bool:
        import asyncio

        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.limit)
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self.max_wait)
        except TimeoutError:
            return False
        return True

    def release(self) -> None:
        assert self._semaphore is not None
        self._semaphore.release()


ADMISSION_STATE = "a3e.admission"


# The routes that take their admission themselves, after receiving the body (see `admitted`).
_DEFERRED_UPLOADS = re.compile(r"^/api/v1/workspaces/[^/]+/documents(?:/bulk|/[^/]+/revisions)?$")


def _is_deferred_upload(scope: Scope) -> bool:
    if scope.get("method") != "POST" or not _DEFERRED_UPLOADS.match(scope["path"]):
        return False
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return value[:19].lower() == b"multipart/form-data"
    return False


@asynccontextmanager
async def admitted(request: Any) -> AsyncIterator[None]:
    """Admission for a request the gate let through unadmitted (an upload, once its body is in):
    database work inside this block counts against the process's limit like any request's."""
    gate: ConcurrencyLimitMiddleware | None = request.scope.get("state", {}).get(ADMISSION_STATE)
    if gate is None:
        yield
        return
    if not await gate.acquire():
        from a3e.core.errors import AppError

        raise AppError("The server is busy; try again shortly.", status_code=503, code="server_busy",
                       headers={"Retry-After": "2"})
    try:
        yield
    finally:
        gate.release()
