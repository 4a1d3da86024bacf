"""The `billing` section: a burst of signed Stripe events at `POST /api/v1/webhooks/stripe` (issue 6).

Steps: start a throwaway PostgreSQL cluster (bench_auth's); `a3e migrate`; start `a3e serve`
(ENVIRONMENT=production, billing configured, jobs embedded: the web process also applies the
events); through the API register an owner and create WORKSPACES workspaces. Then build UNIQUE
events — customer.subscription.updated for each workspace with strictly increasing `created`
times and random status and plan (the newest per workspace is the state to end in), plus a few
event types A³E does not use — and DUPLICATES re-sends of randomly chosen ids, shuffled in among
them (a re-send can come before its first copy), each signed as Stripe does at the moment it is
sent. CONNECTIONS threads send them with keep-alive connections as fast as the server answers.

Measured: every answer (2xx count, how many said duplicate), the acknowledgement latency (p50,
p99, max), and the time from the first send until every stored event is processed or ignored
(the queue drained), polled in the database. Checked: each unique event stored exactly once and
applied exactly once (attempts = 1, nothing failed), and every workspace's stored state equals its
newest event's (status, plan, event id).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import queue
import random
import secrets
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench_auth import (
    A3E, Cluster, Server, _expect, call, describe_cluster, migrate, register_and_login, server_env, start_cluster,
    start_server, stop_cluster,
)
from lib import HOST, log, stop

WORKSPACES = 20
SUBSCRIPTION_EVENTS = 760  # 38 per workspace
IGNORED_EVENTS = 40  # types A³E does not use
UNIQUE = SUBSCRIPTION_EVENTS + IGNORED_EVENTS
DUPLICATES = 200
CONNECTIONS = 32
DRAIN_TIMEOUT_S = 300.0
SEED = 20261128
WEBHOOK_SECRET = "whsec_bench" + "0123456789abcdefABCDEF" * 2
PRICES = {"monthly": "price_bench_monthly", "annual": "price_bench_annual"}
STATUSES = ("active", "past_due", "trialing", "active", "unpaid")


def billing_env(work: Path, cluster: Cluster) -> dict[str, str]:
    return {
        **server_env(work, cluster, 1),
        "STRIPE_SECRET_KEY": "sk_test_" + "bench" * 6,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_PRICE_MONTHLY": PRICES["monthly"],
        "STRIPE_PRICE_ANNUAL": PRICES["annual"],
    }


def sign(payload: bytes) -> str:
    timestamp = int(time.time())
    digest = hmac.new(WEBHOOK_SECRET.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def build_events(workspace_ids: list[str], rng: random.Random) -> tuple[list[dict], dict[str, dict]]:
    """The unique events and, per workspace, the newest one (the state to end in)."""
    base = int(time.time()) - 10 * SUBSCRIPTION_EVENTS
    events: list[dict] = []
    newest: dict[str, dict] = {}
    per_workspace = SUBSCRIPTION_EVENTS // len(workspace_ids)
    for index, workspace_id in enumerate(workspace_ids):
        customer = f"cus_bench{index:03d}"
        for step in range(per_workspace):
            plan = rng.choice(("monthly", "annual"))
            status = rng.choice(STATUSES)
            event = {
                "id": "evt_" + secrets.token_hex(12), "object": "event", "type": "customer.subscription.updated",
                "created": base + step * 5 + index, "livemode": False, "api_version": "2025-09-30.clover",
                "data": {"object": {
                    "id": f"sub_bench{index:03d}", "object": "subscription", "customer": customer, "status": status,
                    "metadata": {"workspace_id": workspace_id}, "cancel_at_period_end": False, "trial_end": None,
                    "items": {"object": "list", "data": [{
                        "object": "subscription_item", "price": {"id": PRICES[plan], "object": "price"},
                        "current_period_end": base + 30 * 86400,
                    }]},
                }},
            }
            events.append(event)
            newest[workspace_id] = {"id": event["id"], "status": status, "plan": plan}
    for _ in range(IGNORED_EVENTS):
        events.append({"id": "evt_" + secrets.token_hex(12), "object": "event", "type": "customer.tax_id.created",
                       "created": base, "livemode": False, "data": {"object": {"object": "tax_id", "customer": "cus_x"}}})
    return events, newest


def send_burst(port: int, sends: list[bytes]) -> dict:
    """Send every payload (signed at its send) over CONNECTIONS keep-alive connections."""
    work: queue.Queue[int] = queue.Queue()
    for index in range(len(sends)):
        work.put(index)
    answers: list[tuple[int, float, bool | None]] = [(0, 0.0, None)] * len(sends)
    errors: list[str] = []

    def sender() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=30)
        try:
            while True:
                try:
                    index = work.get_nowait()
                except queue.Empty:
                    return
                payload = sends[index]
                started = time.perf_counter()
                try:
                    connection.request("POST", "/api/v1/webhooks/stripe", body=payload, headers={
                        "Content-Type": "application/json", "Stripe-Signature": sign(payload)})
                    response = connection.getresponse()
                    raw = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    errors.append(f"{exc.__class__.__name__}: {exc}")
                    connection.close()
                    connection = http.client.HTTPConnection(HOST, port, timeout=30)
                    continue
                elapsed = time.perf_counter() - started
                duplicate = json.loads(raw).get("duplicate") if response.status == 200 else None
                answers[index] = (response.status, elapsed, duplicate)
        finally:
            connection.close()

    threads = [threading.Thread(target=sender, name=f"stripe-sender-{n}") for n in range(CONNECTIONS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"answers": answers, "errors": errors[:5], "error_count": len(errors), "seconds": time.perf_counter() - started}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def _event_counts(engine) -> dict[str, int]:
    from sqlalchemy import text

    with engine.connect() as connection:
        rows = connection.execute(text("SELECT status, count(*) FROM stripe_events GROUP BY status")).all()
    return {status: int(count) for status, count in rows}


def billing(*, seed: int = SEED) -> dict:
    from sqlalchemy import create_engine, text

    rng = random.Random(seed)
    result: dict = {"workspaces": WORKSPACES, "unique": UNIQUE, "duplicates": DUPLICATES, "connections": CONNECTIONS,
                    "subscription_events": SUBSCRIPTION_EVENTS, "ignored_events": IGNORED_EVENTS, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="a3e-bench-billing-") as tmp:
        work = Path(tmp)
        cluster: Cluster | None = None
        server: Server | None = None
        engine = None
        try:
            cluster = start_cluster()
            result["postgres"] = describe_cluster(cluster)
            env = billing_env(work, cluster)
            migrate(env, work)
            server = Server("a3e_w1", "`a3e serve`, WEB_CONCURRENCY=1, jobs embedded", 1, [A3E, "serve", "--host", HOST], env)
            start_server(server, work)
            features = _expect("health", call(server.port, "GET", "/health"), 200, 503)["features"]
            if features.get("billing", {}).get("status") != "enabled":
                raise RuntimeError(f"billing is not enabled: {features.get('billing')}")

            token = register_and_login(server.port, "owner@example.edu", "bench-" + uuid.uuid4().hex)["access_token"]
            workspace_ids = [
                _expect("workspace", call(server.port, "POST", "/api/v1/workspaces", {"name": f"Bench College {n}"},
                                          token=token), 201)["id"]
                for n in range(WORKSPACES)
            ]
            events, newest = build_events(workspace_ids, rng)
            payloads = [json.dumps(event).encode() for event in events]
            resent = [rng.randrange(UNIQUE) for _ in range(DUPLICATES)]
            sends = payloads + [payloads[index] for index in resent]
            rng.shuffle(sends)
            engine = create_engine(cluster.url().replace("postgresql://", "postgresql+psycopg://", 1))

            log(f"billing: {len(sends)} signed events ({UNIQUE} unique, {DUPLICATES} re-sent) over {CONNECTIONS} connections")
            first_send = time.perf_counter()
            burst = send_burst(server.port, sends)
            drained_at = None
            while time.perf_counter() - first_send < DRAIN_TIMEOUT_S:
                counts = _event_counts(engine)
                if counts.get("processed", 0) + counts.get("ignored", 0) + counts.get("failed", 0) >= UNIQUE \
                        and not counts.get("received"):
                    drained_at = time.perf_counter()
                    break
                time.sleep(0.05)
            answers = burst["answers"]
            latencies = [elapsed for status, elapsed, _ in answers if 200 <= status < 300]
            result["sent"] = len(sends)
            result["acknowledged_2xx"] = len(latencies)
            result["answered_duplicate"] = sum(1 for _, _, duplicate in answers if duplicate)
            result["answered_new"] = sum(1 for status, _, duplicate in answers if status == 200 and duplicate is False)
            result["statuses"] = {str(s): sum(1 for a in answers if a[0] == s) for s in sorted({a[0] for a in answers})}
            result["send_errors"] = burst["error_count"]
            result["send_error_samples"] = burst["errors"]
            result["burst_seconds"] = burst["seconds"]
            result["ack_rate"] = len(latencies) / burst["seconds"] if burst["seconds"] else None
            if latencies:
                result["ack_latency_s"] = {"p50": _percentile(latencies, 0.5), "p99": _percentile(latencies, 0.99),
                                           "max": max(latencies)}
            result["drain_seconds"] = None if drained_at is None else drained_at - first_send
            result["events_by_status"] = _event_counts(engine)

            with engine.connect() as connection:
                result["stored_rows"] = connection.execute(text("SELECT count(*) FROM stripe_events")).scalar_one()
                result["attempts_other_than_1"] = connection.execute(
                    text("SELECT count(*) FROM stripe_events WHERE attempts <> 1")).scalar_one()
                result["state_changes_audited"] = connection.execute(
                    text("SELECT count(*) FROM audit_events WHERE action = 'billing.subscription_changed'")).scalar_one()
                accounts = {
                    str(row.workspace_id): row for row in connection.execute(
                        text("SELECT workspace_id, status, plan, state_event_id FROM billing_accounts"))
                }
            mismatched = [
                workspace_id for workspace_id, expected in newest.items()
                if workspace_id not in accounts
                or (accounts[workspace_id].state_event_id, accounts[workspace_id].status, accounts[workspace_id].plan)
                != (expected["id"], expected["status"], expected["plan"])
            ]
            result["state_matches_newest"] = len(newest) - len(mismatched)
            result["state_mismatches"] = mismatched[:5]
            result["exactly_once"] = (
                result["stored_rows"] == UNIQUE and result["attempts_other_than_1"] == 0
                and result["events_by_status"].get("processed", 0) == SUBSCRIPTION_EVENTS
                and result["events_by_status"].get("ignored", 0) == IGNORED_EVENTS
            )
            result["all_acknowledged"] = result["acknowledged_2xx"] == len(sends)
            log(f"billing: {result['acknowledged_2xx']}/{len(sends)} acknowledged, drained in "
                f"{result['drain_seconds']}, events {result['events_by_status']}, state matches "
                f"{result['state_matches_newest']}/{len(newest)}")
        finally:
            if engine is not None:
                engine.dispose()
            if server is not None and server.process is not None:
                stop(server.process)
            if cluster is not None:
                stop_cluster(cluster)
    return result
