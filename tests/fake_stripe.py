"""A local fake Stripe for the billing tests, and Stripe's webhook signing scheme.

`localstripe` (from PyPI) is the fake: a stateful Stripe API server, run here as a subprocess on a
free 127.0.0.1 port. It keeps customers (and subscriptions, invoices, …) but has no Checkout
Sessions and no customer portal, so a small front server in this module answers those two routes
with Stripe-shaped objects — after checking, against localstripe, that the customer exists, and
replaying the first answer for a repeated Idempotency-Key as Stripe does — and forwards every other
request to localstripe untouched. Every request the front sees is recorded for the tests to read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import httpx

from tests.conftest import free_port

# localstripe listens on every interface and saves its store under /tmp after each change: run it
# on the loopback address only, and in memory only (parallel test runs must not share a file).
_LOCALSTRIPE = """
import sys
from aiohttp import web
from localstripe import server
from localstripe.resources import store
type(store).dump_to_disk = lambda self: None
web.run_app(server.app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeStripe:
    """The front server's address is `base` (STRIPE_API_BASE); `localstripe` is the backing server."""

    base: str
    localstripe: str
    requests: list[Recorded] = field(default_factory=list)
    # The next call to a fake route answers this (status, Stripe error body) instead: Stripe's errors.
    fail_next: tuple[int, dict[str, Any]] | None = None
    _replies: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, path: str) -> list[Recorded]:
        return [request for request in self.requests if request.path == path and request.method == "POST"]

    def customers(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.localstripe}/v1/customers", params={"limit": 100}, headers=_AUTH, timeout=5)
        response.raise_for_status()
        return response.json()["data"]


_AUTH = {"Authorization": "Bearer sk_test_" + "f" * 24}


def _handler(fake: FakeStripe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Request-Id", "req_" + secrets.token_hex(8))
            self.end_headers()
            self.wfile.write(body)

        def _forward(self, method: str, body: bytes) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            response = httpx.request(method, fake.localstripe + self.path, content=body, headers=headers, timeout=10)
            self._reply(response.status_code, response.content)

        def do_GET(self) -> None:
            fake.requests.append(Recorded("GET", self.path.split("?")[0], {}, dict(self.headers)))
            self._forward("GET", b"")

        def do_DELETE(self) -> None:
            self._forward("DELETE", self._body())

        def do_POST(self) -> None:
            body = self._body()
            path = self.path.split("?")[0]
            params = dict(parse_qsl(body.decode(), keep_blank_values=True))
            fake.requests.append(Recorded("POST", path, params, dict(self.headers)))
            if path not in ("/v1/checkout/sessions", "/v1/billing_portal/sessions"):
                self._forward("POST", body)
                return
            if not self.headers.get("Authorization", "").startswith("Bearer sk_"):
                self._reply(401, _error("invalid_request_error", "Invalid API Key provided", code=None))
                return
            with fake._lock:
                failure, fake.fail_next = fake.fail_next, None
                key = self.headers.get("Idempotency-Key")
                if failure is None and key and key in fake._replies:
                    self._reply(*fake._replies[key])
                    return
                if failure is not None:
                    status, reply = failure[0], json.dumps(failure[1]).encode()
                else:
                    status, reply = self._create(path, params)
                    if key:
                        fake._replies[key] = (status, reply)
            self._reply(status, reply)

        def _create(self, path: str, params: dict[str, str]) -> tuple[int, bytes]:
            customer = params.get("customer", "")
            known = httpx.get(f"{fake.localstripe}/v1/customers/{customer}", headers=_AUTH, timeout=5)
            if known.status_code != 200:
                return 400, _error("invalid_request_error", f"No such customer: '{customer}'", code="resource_missing")
            if path == "/v1/billing_portal/sessions":
                session_id = "bps_" + secrets.token_hex(12)
                return 200, json.dumps({
                    "id": session_id, "object": "billing_portal.session", "customer": customer,
                    "return_url": params.get("return_url"), "livemode": False, "created": int(time.time()),
                    "url": f"https://billing.stripe.test/p/session/{session_id}",
                }).encode()
            session_id = "cs_test_" + secrets.token_hex(16)
            metadata = {k[len("metadata["):-1]: v for k, v in params.items() if k.startswith("metadata[")}
            return 200, json.dumps({
                "id": session_id, "object": "checkout.session", "mode": params.get("mode"), "customer": customer,
                "client_reference_id": params.get("client_reference_id"), "metadata": metadata,
                "status": "open", "payment_status": "unpaid", "livemode": False, "created": int(time.time()),
                "success_url": params.get("success_url"), "cancel_url": params.get("cancel_url"),
                "url": f"https://checkout.stripe.test/c/pay/{session_id}",
            }).encode()

    return Handler


def _error(kind: str, message: str, *, code: str | None) -> bytes:
    return json.dumps({"error": {"type": kind, "message": message, "code": code}}).encode()


def start_fake_stripe() -> tuple[FakeStripe, Any]:
    """Start localstripe and the front server; returns the fake and a function that stops both."""
    stripe_port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _LOCALSTRIPE, str(stripe_port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    localstripe = f"http://127.0.0.1:{stripe_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{localstripe}/v1/customers", headers=_AUTH, timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"localstripe did not start: {process.stderr.read().decode()[-2000:] if process.stderr else ''}")
        time.sleep(0.1)
    front = ThreadingHTTPServer(("127.0.0.1", 0), None)  # type: ignore[arg-type]
    fake = FakeStripe(base=f"http://127.0.0.1:{front.server_address[1]}", localstripe=localstripe)
    front.RequestHandlerClass = _handler(fake)
    thread = threading.Thread(target=front.serve_forever, name="fake-stripe", daemon=True)
    thread.start()

    def stop() -> None:
        front.shutdown()
        front.server_close()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()

    return fake, stop


# ---- Stripe's webhook signatures ------------------------------------------------------------


def stripe_signature(payload: str, secret: str, *, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe sends: t=<unix time>,v1=<hex HMAC-SHA256 of "t.payload">."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def stripe_event(event_type: str, obj: dict[str, Any], *, created: int | None = None, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or "evt_" + secrets.token_hex(12),
        "object": "event",
        "api_version": "2025-09-30.clover",
        "created": int(time.time()) if created is None else created,
        "livemode": False,
        "pending_webhooks": 1,
        "type": event_type,
        "data": {"object": obj},
    }


def subscription(
    workspace_id: str, *, status: str = "active", price: str = "price_monthly_test", customer: str = "cus_test",
    subscription_id: str = "sub_test", period_end: int | None = None, trial_end: int | None = None,
    cancel_at_period_end: bool = False,
) -> dict[str, Any]:
    """A subscription object as Stripe sends it (the period end on the item, as in current API versions)."""
    return {
        "id": subscription_id, "object": "subscription", "customer": customer, "status": status,
        "metadata": {"workspace_id": workspace_id}, "cancel_at_period_end": cancel_at_period_end,
        "trial_end": trial_end,
        "items": {"object": "list", "data": [{
            "id": "si_" + secrets.token_hex(6), "object": "subscription_item",
            "price": {"id": price, "object": "price"},
            "current_period_end": period_end or int(time.time()) + 30 * 86400,
        }]},
    }
