"""Per-request cost of A³E's app, measured in-process: the ASGI app that `create_app` returns,
called directly (no server, no socket) for GET /health/live and /health/ready, with logging set
up as `a3e serve` sets it up, at LOG_LEVEL=info and warning; and the bare ASGI app as the floor.
The difference between info and warning is the cost of the access-log line. Run as its own
process (it configures logging, and the log lines go to its stderr):

    python bench/bench_micro.py > figures.json 2> lines.log

Prints one JSON object: CPU microseconds per request (process time, so other processes on the
machine hardly move it), median of 5 repeats, or {"error": ...} per item that could not run.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

N = 4000
REPEATS = 5
SECRETS = ["bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyzABCDEF",
           "bench-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyzABCDEF"]
_HEADERS = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")]


def _scope(path: str) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": list(_HEADERS), "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000), "state": {},
    }


async def _per_request_us(app, path: str) -> float:
    statuses: list[int] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(_scope(path), receive, send)  # builds the middleware stack, warms caches
    if statuses != [200]:
        raise RuntimeError(f"GET {path} answered {statuses}")
    samples = []
    for _ in range(REPEATS):
        statuses.clear()
        started = time.process_time()
        for _ in range(N):
            await app(_scope(path), receive, send)
        samples.append((time.process_time() - started) / N * 1e6)
        if any(status != 200 for status in statuses):
            raise RuntimeError(f"GET {path} answered {set(statuses)}")
    return statistics.median(samples)


async def _measure(results: dict, name: str, coroutine) -> None:
    try:
        results[name] = await coroutine
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        results[name] = {"error": f"{exc.__class__.__name__}: {exc}"[:300]}


async def main_async() -> dict:
    results: dict = {"n": N, "repeats": REPEATS}
    from bare_app import bare_asgi

    await _measure(results, "bare_live_us", _per_request_us(bare_asgi, "/health/live"))
    try:
        from a3e.app import create_app
        from a3e.core.logging import RedactingFilter, configure_logging
        from a3e.core.settings import load_settings
    except ImportError as exc:
        results["error"] = f"A³E's app or logging API changed: {exc}"
        return results

    settings = load_settings().settings
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            # The lifespan starts the database monitor: wait (bounded) until the app is ready.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                readiness = await app.state.database.readiness(max_age=0)
                if readiness.ready:
                    break
                await asyncio.sleep(0.05)
            for level, fmt in (("info", "text"), ("info", "json"), ("warning", "text")):
                configure_logging(level, fmt, settings.secret_values())
                for path in ("/health/live", "/health/ready"):
                    key = f"a3e_{path.rsplit('/', 1)[-1]}_{level}_{fmt}_us"
                    await _measure(results, key, _per_request_us(app, path))
    except Exception as exc:  # noqa: BLE001
        results["lifespan_error"] = f"{exc.__class__.__name__}: {exc}"[:300]

    redactor = RedactingFilter(SECRETS)
    line = "GET /api/v1/workspaces/3f2a/members 200 request_id=9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e duration_ms=1.23"
    started = time.process_time()
    for _ in range(N * 5):
        redactor.redact(line)
    results["redact_line_us"] = (time.process_time() - started) / (N * 5) * 1e6
    return results


def main() -> None:
    print(json.dumps(asyncio.run(main_async())), flush=True)


if __name__ == "__main__":
    main()
