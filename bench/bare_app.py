"""The reference servers that A³E is compared with, on the same uvicorn and the same options.

    python bench/bare_app.py --port N [--kind asgi|fastapi]

`asgi` (the reference): a bare ASGI callable answering GET/HEAD /health/live with
{"status":"alive"} and /health/ready with {"status":"ready"}, as application/json.
`fastapi` (a diagnostic): a bare FastAPI app with the same two routes written the way A³E writes
them (a pre-rendered Response for live, a returned dict for ready), and nothing else: no
middleware, no database, no logging. It separates the framework's cost from A³E's own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import A3E_UVICORN_OPTIONS, HOST  # noqa: E402

LIVE = b'{"status":"alive"}'
READY = b'{"status":"ready"}'
_BODIES = {"/health/live": LIVE, "/health/ready": READY}
_NOT_FOUND = b'{"detail":"Not Found"}'


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


async def bare_asgi(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = _BODIES.get(scope["path"]) if scope["method"] in ("GET", "HEAD") else None
    status = 200 if body is not None else 404
    body = body if body is not None else _NOT_FOUND
    await send({"type": "http.response.start", "status": status, "headers": _headers(body)})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def bare_fastapi():
    from fastapi import FastAPI
    from fastapi.responses import Response

    app = FastAPI()

    @app.api_route("/health/live", methods=["GET", "HEAD"])
    async def live() -> Response:
        return Response(LIVE, media_type="application/json")

    @app.api_route("/health/ready", methods=["GET", "HEAD"])
    async def ready() -> dict:
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=("asgi", "fastapi"), default="asgi")
    args = parser.parse_args()
    app = bare_asgi if args.kind == "asgi" else bare_fastapi()
    # Same server, same options as `a3e serve` with one worker (loop and http stay at uvicorn's
    # defaults there too: uvloop and httptools when installed).
    uvicorn.run(app, host=HOST, port=args.port, **A3E_UVICORN_OPTIONS)


if __name__ == "__main__":
    main()
