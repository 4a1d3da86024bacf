"""A what-if, for the profiling section only: A³E's real app (create_app from the same settings
as `a3e serve`), wrapped in a pure-ASGI shortcut that answers GET/HEAD /health/live itself,
before Starlette, FastAPI and the middleware stack. Nothing in src/ is changed: this measures
what such a change would buy.

    python bench/whatif_app.py --port N --variant log|nolog

The shortcut keeps A³E's contract for the probe: 200, {"status":"alive"} as application/json,
and an X-Request-ID (the caller's when valid, else a new one). Requests with an Origin header go
to the full app, so that CORS stays as it is. `log` still writes one access-log line per probe
through A³E's logger; `nolog` writes none for a successful probe.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import A3E_UVICORN_OPTIONS, HOST  # noqa: E402

_LIVE_BODY = b'{"status":"alive"}'
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_STATIC_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_LIVE_BODY)).encode())]


def wrap(app, *, access_log: bool):
    access_logger = logging.getLogger("a3e.access")

    async def shortcut(scope, receive, send):
        if (
            scope["type"] != "http"
            or scope["path"] != "/health/live"
            or scope["method"] not in ("GET", "HEAD")
        ):
            await app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"origin":
                await app(scope, receive, send)
                return
            if name == b"x-request-id" and _VALID_REQUEST_ID.match(value):
                request_id = value
        started = time.perf_counter()
        request_id = request_id or os.urandom(16).hex().encode()
        await send({"type": "http.response.start", "status": 200, "headers": [*_STATIC_HEADERS, (b"x-request-id", request_id)]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else _LIVE_BODY})
        if access_log and access_logger.isEnabledFor(logging.INFO):
            # The line A³E's RequestContextMiddleware writes (fields built by A³E: marked as safe).
            access_logger.info(
                "%s %s %s", scope["method"], "/health/live", 200,
                extra={
                    "fields": {
                        "request_id": request_id.decode(),
                        "method": scope["method"],
                        "path": "/health/live",
                        "status": 200,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                    "redacted": True,
                },
            )

    return shortcut


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--variant", choices=("log", "nolog"), default="log")
    args = parser.parse_args()

    from a3e.app import create_app
    from a3e.core.logging import configure_logging
    from a3e.core.settings import load_settings

    loaded = load_settings()
    settings = loaded.settings
    configure_logging(settings.log_level, settings.effective_log_format, settings.secret_values())
    app = create_app(settings, warnings=loaded.warnings)
    uvicorn.run(wrap(app, access_log=args.variant == "log"), host=HOST, port=args.port, **A3E_UVICORN_OPTIONS)


if __name__ == "__main__":
    main()
