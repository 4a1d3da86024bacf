"""Health endpoints for load balancers, platforms and people. No auth, no secrets, no writes,
and never a call to an external or paid API."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from a3e import __version__
from a3e.core.database import Database
from a3e.core.errors import error_response, request_id_of
from a3e.core.features import FeatureState, feature_health

router = APIRouter(prefix="/health", tags=["health"])

_LIVE_BODY = b'{"status":"alive"}'


@router.get("/live", summary="The process is up and serving")
async def live() -> Response:
    # A pre-rendered body: liveness is probed often and must stay cheap.
    return Response(_LIVE_BODY, media_type="application/json")


@router.get("/ready", summary="The database answers and the schema is current")
async def ready(request: Request) -> Any:
    database: Database = request.app.state.database
    readiness = await database.readiness()
    if readiness.ready:
        return {"status": "ready"}
    failing = readiness.failing()
    message = "; ".join(f"{name}: {check.detail}" for name, check in failing)
    return error_response(
        503,
        "not_ready",
        f"Not ready — {message}",
        request_id=request_id_of(request),
        details={"checks": {name: check.as_dict() for name, check in failing}},
    )


@router.get("", summary="Every check and every optional feature")
async def health(request: Request) -> Any:
    app = request.app
    database: Database = app.state.database
    readiness = await database.readiness()
    features = feature_health(app)
    email = app.state.email.health()
    jobs = await asyncio.to_thread(app.state.jobs.health)
    if not readiness.ready:
        overall = "unavailable"
    elif email["status"] == "failing" or jobs["status"] not in ("ok", "starting") or any(
        entry["status"] == FeatureState.FAILED.value for entry in features.values()
    ):
        overall = "degraded"
    else:
        overall = "ok"
    body = {
        "status": overall,
        "ready": readiness.ready,
        "version": __version__,
        "environment": app.state.settings.environment_label,
        "uptime_seconds": round(time.monotonic() - app.state.started_monotonic, 1),
        "checks": {
            "database": {**readiness.database.as_dict(), "backend": database.engine.dialect.name},
            "migrations": readiness.migrations.as_dict(),
            # Email never decides readiness: a mail outage must not take the API out of rotation.
            "email": email,
            # Nor do jobs: with the queue away, the API still serves and jobs wait (or are refused
            # with 503 job_queue_unavailable); /health says "degraded" and why.
            "jobs": jobs,
        },
        "features": features,
    }
    return JSONResponse(body, status_code=200 if readiness.ready else 503)


# Some load balancers probe with HEAD; answer it on every health path, outside the schema.
for _path, _endpoint in (("/live", live), ("/ready", ready), ("", health)):
    router.add_api_route(_path, _endpoint, methods=["HEAD"], include_in_schema=False)
