"""Helpers for the webhook tests (no tests here): a local receiver on 127.0.0.1 that answers with
the statuses it is told to and records every request, an app whose webhook settings suit tests,
and signature checks through the `standardwebhooks` library (the spec's own implementation)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import CHEAP_ARGON2, wait_ready


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A webhook receiver: answers each request with the next status of `script` (then
    `default`), and records what it got."""

    url: str
    requests: list[Received] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    default: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, *statuses: int, default: int | None = None) -> None:
        with self.lock:
            self.script = list(statuses)
            if default is not None:
                self.default = default

    def next_status(self) -> int:
        with self.lock:
            return self.script.pop(0) if self.script else self.default

    def received(self, count: int, timeout: float = 20.0) -> list[Received]:
        """The requests so far once there are at least `count` of them (or fail after `timeout`)."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver got {len(self.requests)} requests, expected {count}")
            time.sleep(0.02)
        return list(self.requests)

    def of_type(self, event_type: str) -> list[Received]:
        import json

        return [request for request in list(self.requests) if json.loads(request.body)["type"] == event_type]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            target = state["receiver"]
            target.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()))
            status = target.next_status()
            answer = b"ok" if status < 300 else b"receiver says no: " + b"x" * 3000
            self.send_response(status)
            self.send_header("content-length", str(len(answer)))
            if 300 <= status < 400:
                self.send_header("location", "http://127.0.0.1:9/elsewhere")
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["receiver"] = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hooks/a3e")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["receiver"]
    finally:
        server.shutdown()
        server.server_close()


# Tiny retry delays, few attempts, and loopback allowed (the receiver is on 127.0.0.1).
TEST_WEBHOOK_SETTINGS: dict[str, Any] = {
    "webhooks_allow_private": True,
    "webhooks_retry_schedule": [0.3, 0.3],
    "webhooks_max_attempts": 3,
    "webhooks_timeout": 3.0,
    "webhooks_connect_timeout": 1.0,
    "webhooks_disable_after_failures": 50,
    "webhooks_disable_after_hours": 0,
}


@pytest.fixture
def webhook_settings() -> dict[str, Any]:
    """Override per test with @pytest.mark.parametrize("webhook_settings", [{...}])."""
    return {}


@pytest.fixture
def api(make_settings, database_url, webhook_settings):
    """The conftest's `api` with test-sized webhook settings (make_person and make_workspace use it)."""
    from fastapi.testclient import TestClient

    from a3e.app import create_app

    settings = make_settings(database_url=database_url, **CHEAP_ARGON2, **{**TEST_WEBHOOK_SETTINGS, **webhook_settings})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def hooks_url(workspace: dict) -> str:
    return f"/api/v1/workspaces/{workspace['id']}/webhooks"


def register(api, person, workspace, url: str, event_types: list[str], **fields: Any) -> dict:
    response = api.post(hooks_url(workspace), json={"url": url, "event_types": event_types, **fields}, headers=person.headers)
    assert response.status_code == 201, response.text
    return response.json()


def verified(secret: str, request: Received) -> Any:
    """The payload, verified by the Standard Webhooks reference library (raises when it is not)."""
    from standardwebhooks.webhooks import Webhook

    return Webhook(secret).verify(request.body, request.headers)


def deliveries(api, person, workspace, endpoint: dict, **params: Any) -> dict:
    response = api.get(f"{hooks_url(workspace)}/{endpoint['id']}/deliveries", params=params, headers=person.headers)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met after {timeout}s")
        time.sleep(0.05)
