"""Throttling failed logins: per account and address, per address, shared by every worker process."""

from __future__ import annotations

import math
import os
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update
from starlette.requests import Request

from a3e.auth import throttle
from a3e.auth.models import LoginFailure
from a3e.core.clientip import client_ip
from a3e.core.models import utcnow
from tests.conftest import DEFAULT_PASSWORD
from tests.test_auth_support import AUTH, audit_events, db, error_of, make_client, new_email, sign_up  # noqa: F401

WRONG = "definitely not the password"
ATTACKER = "203.0.113.66"
OWNER = "198.51.100.7"
WINDOW = 900


def attempt(client, email_address: str, password: str, address: str | None = None):
    headers = {"X-Forwarded-For": address} if address else {}
    return client.post(f"{AUTH}/login", json={"email": email_address, "password": password}, headers=headers)


def failures(client, **where) -> list[LoginFailure]:
    with db(client) as session:
        statement = select(LoginFailure).order_by(LoginFailure.failed_at)
        for column, value in where.items():
            statement = statement.where(getattr(LoginFailure, column) == value)
        return list(session.scalars(statement))


def shift_failures(client, delta: timedelta, **where) -> None:
    with db(client) as session:
        statement = select(LoginFailure)
        for column, value in where.items():
            statement = statement.where(getattr(LoginFailure, column) == value)
        for row in session.scalars(statement):
            row.failed_at = row.failed_at - delta
        session.commit()


@pytest.fixture
def proxied(make_client):
    """Behind a trusted proxy (127.0.0.1): X-Forwarded-For sets the client's address."""
    return make_client(
        trusted_proxies=["127.0.0.1"], login_max_failures=3, login_max_failures_per_ip=100, login_window_seconds=WINDOW
    )


def test_the_account_limit_stops_the_attacker_but_not_the_owner_elsewhere(proxied):
    account = sign_up(proxied)
    assert [attempt(proxied, account.email, WRONG, ATTACKER).status_code for _ in range(3)] == [401, 401, 401]

    blocked = attempt(proxied, account.email, account.password, ATTACKER)  # even the right password
    assert blocked.status_code == 429
    error = error_of(blocked)
    assert error["code"] == "rate_limited" and error["details"]["limit"] == "account"
    retry_after = int(blocked.headers["retry-after"])
    assert WINDOW - 10 <= retry_after <= WINDOW and error["details"]["retry_after"] == retry_after

    # The owner, from their own address, is not locked out by the attacker's failures.
    assert attempt(proxied, account.email, account.password, OWNER).status_code == 200
    assert attempt(proxied, account.email, account.password, ATTACKER).status_code == 429

    events = audit_events(proxied, "auth.login_failed")
    assert len(events) == 3 and {event.client_ip for event in events} == {ATTACKER}
    assert {row.client_ip for row in failures(proxied)} == {ATTACKER}


def test_unknown_accounts_are_throttled_like_known_ones(proxied):
    ghost = new_email("ghost")
    assert [attempt(proxied, ghost, WRONG, ATTACKER).status_code for _ in range(4)] == [401, 401, 401, 429]


def test_retry_after_is_when_the_oldest_failure_leaves_the_window(proxied):
    account = sign_up(proxied)
    for _ in range(3):
        attempt(proxied, account.email, WRONG, ATTACKER)
    now = utcnow()
    rows = failures(proxied, client_ip=ATTACKER)
    with db(proxied) as session:
        for row, age in zip(rows, (800, 500, 100), strict=True):
            session.execute(
                update(LoginFailure).where(LoginFailure.id == row.id).values(failed_at=now - timedelta(seconds=age))
            )
        session.commit()
    blocked = attempt(proxied, account.email, WRONG, ATTACKER)
    assert blocked.status_code == 429
    assert WINDOW - 800 - 5 <= int(blocked.headers["retry-after"]) <= WINDOW - 800 + 1

    # Once the oldest failure has aged out, one more attempt is allowed, and only one.
    shift_failures(proxied, timedelta(seconds=101), client_ip=ATTACKER)
    assert attempt(proxied, account.email, WRONG, ATTACKER).status_code == 401
    assert attempt(proxied, account.email, WRONG, ATTACKER).status_code == 429


def test_a_refusal_lasts_one_window_at_most_and_hammering_does_not_extend_it(proxied):
    account = sign_up(proxied)
    for _ in range(3):
        attempt(proxied, account.email, WRONG, ATTACKER)
    assert {attempt(proxied, account.email, WRONG, ATTACKER).status_code for _ in range(10)} == {429}
    assert len(failures(proxied, client_ip=ATTACKER)) == 3  # refused attempts are not recorded

    shift_failures(proxied, timedelta(seconds=WINDOW - 20))
    retry_after = int(attempt(proxied, account.email, account.password, ATTACKER).headers["retry-after"])
    assert 1 <= retry_after <= 20
    shift_failures(proxied, timedelta(seconds=21))
    assert attempt(proxied, account.email, account.password, ATTACKER).status_code == 200


def test_a_successful_login_clears_that_account_and_address(proxied):
    account = sign_up(proxied)
    other = sign_up(proxied)
    attempt(proxied, other.email, WRONG, OWNER)
    for _ in range(2):
        attempt(proxied, account.email, WRONG, OWNER)
    attempt(proxied, account.email, WRONG, ATTACKER)
    assert attempt(proxied, account.email, account.password, OWNER).status_code == 200
    # Only this account from this address is forgiven.
    assert failures(proxied, account=account.email, client_ip=OWNER) == []
    assert len(failures(proxied, account=account.email, client_ip=ATTACKER)) == 1
    assert len(failures(proxied, account=other.email, client_ip=OWNER)) == 1
    assert [attempt(proxied, account.email, WRONG, OWNER).status_code for _ in range(4)] == [401, 401, 401, 429]


def test_the_address_limit_spans_accounts(make_client):
    client = make_client(trusted_proxies=["127.0.0.1"], login_max_failures=10, login_max_failures_per_ip=4)
    people = [sign_up(client) for _ in range(3)]
    targets = [person.email for person in people] + [new_email("ghost")]
    assert [attempt(client, email_address, WRONG, ATTACKER).status_code for email_address in targets] == [401] * 4
    blocked = attempt(client, people[0].email, people[0].password, ATTACKER)
    assert blocked.status_code == 429 and error_of(blocked)["details"]["limit"] == "address"
    assert "from your address" in error_of(blocked)["message"]
    assert attempt(client, people[0].email, people[0].password, OWNER).status_code == 200


def test_a_forged_forwarded_for_from_an_untrusted_peer_is_ignored(make_client):
    # TestClient's peer is "testclient": not an address, so never a trusted proxy.
    client = make_client(peer=None, trusted_proxies=["127.0.0.1"], login_max_failures=3)
    account = sign_up(client)
    statuses = [attempt(client, account.email, WRONG, f"192.0.2.{n}").status_code for n in range(1, 6)]
    assert statuses == [401, 401, 401, 429, 429]
    assert {row.client_ip for row in failures(client)} == {"testclient"}
    assert {event.client_ip for event in audit_events(client, "auth.login_failed")} == {"testclient"}


def _request(app, peer, forwarded: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "app": app, "query_string": b""}
    if peer is not None:
        scope["client"] = peer
    return Request(scope)


def test_client_ip_falls_back_sanely(make_client):
    app = make_client(trusted_proxies=["127.0.0.1", "10.0.0.0/8"]).app
    assert client_ip(_request(app, ("testclient", 50000), "203.0.113.1")) == "testclient"
    assert client_ip(_request(app, ("192.0.2.9", 1), "203.0.113.1")) == "192.0.2.9"  # untrusted peer
    assert client_ip(_request(app, ("127.0.0.1", 1))) == "127.0.0.1"  # trusted, no header
    assert client_ip(_request(app, ("127.0.0.1", 1), "203.0.113.1")) == "203.0.113.1"
    assert client_ip(_request(app, ("127.0.0.1", 1), "198.51.100.1, 203.0.113.1, 10.1.2.3")) == "203.0.113.1"
    assert client_ip(_request(app, ("127.0.0.1", 1), "not-an-address")) == "127.0.0.1"
    assert client_ip(_request(app, None, "203.0.113.1")) == "unknown"


def test_wrong_current_passwords_are_throttled_too(proxied):
    account = sign_up(proxied)
    headers = {**account.headers, "X-Forwarded-For": ATTACKER}

    def change(current: str):
        return proxied.post(
            f"{AUTH}/password",
            json={"current_password": current, "new_password": "a brand new passphrase"},
            headers=headers,
        )

    assert [change(WRONG).status_code for _ in range(3)] == [400, 400, 400]
    assert change(account.password).status_code == 429
    assert attempt(proxied, account.email, account.password, OWNER).status_code == 200


def test_old_failures_are_pruned(proxied, monkeypatch):
    account = sign_up(proxied)
    old = utcnow() - timedelta(seconds=2 * WINDOW)
    with db(proxied) as session:
        session.add_all(
            [LoginFailure(account=f"old-{n}@example.edu", client_ip="192.0.2.1", failed_at=old) for n in range(5)]
        )
        session.commit()
    monkeypatch.setattr(throttle, "_last_prune", -math.inf)
    attempt(proxied, account.email, WRONG, ATTACKER)
    assert [row.client_ip for row in failures(proxied)] == [ATTACKER]
    # At most once a minute per process: old rows added now stay until the next pruning.
    with db(proxied) as session:
        session.add(LoginFailure(account="later@example.edu", client_ip="192.0.2.1", failed_at=old))
        session.commit()
    attempt(proxied, account.email, WRONG, ATTACKER)
    assert len(failures(proxied, client_ip="192.0.2.1")) == 1


# ---- across worker processes -----------------------------------------------------------------


def _wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {timeout}s")


def _fresh_connection_post(url: str, body: dict) -> httpx.Response:
    # No client reused: every request opens its own connection, so both workers get traffic.
    return httpx.post(url, json=body, headers={"Connection": "close"}, timeout=30)


@pytest.mark.slow
def test_the_limit_holds_across_two_worker_processes(postgres, run_server, tmp_path):
    name = postgres.create_database()
    limit = 4
    server = None
    try:
        server = run_server(
            {
                "WEB_CONCURRENCY": "2",
                "DATABASE_URL": postgres.url(name),
                "A3E_ARGON2_TIME_COST": "1",
                "A3E_ARGON2_MEMORY_KIB": "1024",
                "A3E_ARGON2_PARALLELISM": "1",
                "A3E_LOGIN_MAX_FAILURES": str(limit),
                "A3E_LOGIN_MAX_FAILURES_PER_IP": "1000",
                "LOG_LEVEL": "info",
            }
        )
        _wait_ready(server.url)
        deadline = time.monotonic() + 60
        while server.log().count("Application startup complete") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = set(re.findall(r"Started server process \[(\d+)\]", server.log()))
        assert len(workers) == 2, server.log()

        email_address, password = new_email("shared"), DEFAULT_PASSWORD
        registered = _fresh_connection_post(
            f"{server.url}{AUTH}/register", {"email": email_address, "password": password, "name": "Shared"}
        )
        assert registered.status_code == 201, registered.text
        login_url = f"{server.url}{AUTH}/login"

        # One after another, each on a new connection: with a per-process count, two workers
        # would allow up to twice the limit.
        statuses = [
            _fresh_connection_post(login_url, {"email": email_address, "password": WRONG}).status_code
            for _ in range(3 * limit)
        ]
        assert statuses == [401] * limit + [429] * (2 * limit), statuses
        assert _fresh_connection_post(login_url, {"email": email_address, "password": password}).status_code == 429

        # All at once, from several connections in parallel: still at most `limit` guesses checked.
        target = new_email("raced")
        with ThreadPoolExecutor(max_workers=8) as pool:
            raced = list(
                pool.map(
                    lambda _: _fresh_connection_post(login_url, {"email": target, "password": WRONG}).status_code,
                    range(24),
                )
            )
        # (Attempts racing each other may all be refused: never more than the limit get through.)
        assert set(raced) <= {401, 429} and raced.count(401) <= limit, raced

        import psycopg

        with psycopg.connect(f"host={postgres.host} port={postgres.port} user={postgres.user} dbname={name}") as conn:
            counts = dict(conn.execute("SELECT account, count(*) FROM login_failures GROUP BY account").fetchall())
        assert counts.pop(email_address) == limit
        assert counts.get(target, 0) == raced.count(401)

        # Both workers served logins: the limit held in total, not per process.
        # Each access-log line names its process: [pid] a3e.access: POST …
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and server.log().count("a3e.access: POST /api/v1/auth/login") < 3 * limit + 1 + 24:
            time.sleep(0.05)  # the access log is written in batches, at most a fraction of a second late
        served = Counter(re.findall(r"\[(\d+)\] a3e\.access: POST /api/v1/auth/login", server.log()))
        assert set(served) == workers and sum(served.values()) == 3 * limit + 1 + 24, served
    finally:
        if server is not None:
            server.stop()  # before its database goes
        postgres.drop_database(name)
