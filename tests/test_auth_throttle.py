"""Throttling failed logins: per account and address, per address, shared by every worker process;
attempts in flight count too, and a right password waits for them rather than being refused."""

from __future__ import annotations

import math
import re
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import select, update
from starlette.requests import Request

from a3e.auth import throttle
from a3e.auth.models import LoginAttempt
from a3e.auth.throttle import FAILED, PENDING, Limits, LoginThrottle
from a3e.core import migrations
from a3e.core.clientip import client_ip
from a3e.core.errors import RateLimited
from a3e.core.models import UTCDateTime, utcnow
from tests.conftest import DEFAULT_PASSWORD
from tests.test_auth_support import AUTH, audit_events, db, error_of, make_client, new_email, sign_up  # noqa: F401

WRONG = "definitely not the password"
ATTACKER = "203.0.113.66"
OWNER = "198.51.100.7"
WINDOW = 900


def attempt(client, email_address: str, password: str, address: str | None = None):
    headers = {"X-Forwarded-For": address} if address else {}
    return client.post(f"{AUTH}/login", json={"email": email_address, "password": password}, headers=headers)


def attempts(client, **where) -> list[LoginAttempt]:
    """Recorded attempts, pending or failed, oldest first."""
    with db(client) as session:
        statement = select(LoginAttempt).order_by(LoginAttempt.attempted_at, LoginAttempt.id)
        for column, value in where.items():
            statement = statement.where(getattr(LoginAttempt, column) == value)
        return list(session.scalars(statement))


def failures(client, **where) -> list[LoginAttempt]:
    return attempts(client, state=FAILED, **where)


def shift_failures(client, delta: timedelta, **where) -> None:
    """Move recorded attempts `delta` into the past."""
    with db(client) as session:
        statement = select(LoginAttempt)
        for column, value in where.items():
            statement = statement.where(getattr(LoginAttempt, column) == value)
        for row in session.scalars(statement):
            row.attempted_at = row.attempted_at - delta
        session.commit()


def add_attempts(client, account: str, address: str, state: str, count: int, age: timedelta = timedelta(0)) -> None:
    """Attempts recorded by another process: `pending` ones are being checked there (or it died)."""
    with db(client) as session:
        started = utcnow() - age
        session.add_all(
            [LoginAttempt(account=account, client_ip=address, attempted_at=started, state=state) for _ in range(count)]
        )
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
                update(LoginAttempt).where(LoginAttempt.id == row.id).values(attempted_at=now - timedelta(seconds=age))
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
            [
                LoginAttempt(account=f"old-{n}@example.edu", client_ip="192.0.2.1", attempted_at=old, state=state)
                for n, state in enumerate([FAILED] * 4 + [PENDING])
            ]
        )
        session.commit()
    monkeypatch.setattr(throttle, "_last_prune", -math.inf)
    attempt(proxied, account.email, WRONG, ATTACKER)
    assert [row.client_ip for row in attempts(proxied)] == [ATTACKER]
    # At most once a minute per process: old rows added now stay until the next pruning.
    with db(proxied) as session:
        session.add(LoginAttempt(account="later@example.edu", client_ip="192.0.2.1", attempted_at=old, state=FAILED))
        session.commit()
    attempt(proxied, account.email, WRONG, ATTACKER)
    assert len(attempts(proxied, client_ip="192.0.2.1")) == 1


# ---- attempts in flight ------------------------------------------------------------------------

# A password check that takes as long as a real one (~50 ms here), so that parallel logins overlap.
SLOW_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 32768, "argon2_parallelism": 1}
LIMIT = 3


class CheckWatcher:
    """Wraps the app's real password check to record how many run at once, per password tried."""

    def __init__(self, client, monkeypatch: pytest.MonkeyPatch) -> None:
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()
        self.peak: dict[str, int] = defaultdict(int)
        self.calls: Counter[str] = Counter()
        passwords = client.app.state.passwords
        real_verify = passwords.verify

        def watched(stored_hash: str | None, password: str) -> bool:
            with self._lock:
                self.calls[password] += 1
                self._running[password] += 1
                self.peak[password] = max(self.peak[password], self._running[password])
            try:
                return real_verify(stored_hash, password)
            finally:
                with self._lock:
                    self._running[password] -= 1

        monkeypatch.setattr(passwords, "verify", watched)


@pytest.fixture
def slow_checks(make_client):
    return make_client(
        trusted_proxies=["127.0.0.1"],
        login_max_failures=LIMIT,
        login_max_failures_per_ip=100,
        login_window_seconds=WINDOW,
        **SLOW_ARGON2,
    )


def in_parallel(calls: list) -> list:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]


def test_parallel_logins_with_the_right_password_all_succeed(slow_checks, monkeypatch):
    account = sign_up(slow_checks)
    watcher = CheckWatcher(slow_checks, monkeypatch)
    responses = in_parallel([lambda: attempt(slow_checks, account.email, account.password, OWNER)] * 12)

    assert [response.status_code for response in responses] == [200] * 12, [r.text for r in responses if r.status_code != 200]
    assert watcher.calls[account.password] == 12
    # The checks did overlap (the case that used to be refused), yet never more than the limit at once.
    assert 2 <= watcher.peak[account.password] <= LIMIT, watcher.peak
    assert attempts(slow_checks) == []
    assert len(audit_events(slow_checks, "auth.login_succeeded")) == 1 + 12


def test_an_attacker_guessing_in_parallel_gets_the_limit_and_the_owner_every_login(slow_checks, monkeypatch):
    account = sign_up(slow_checks)
    watcher = CheckWatcher(slow_checks, monkeypatch)
    guesses = [lambda n=n: attempt(slow_checks, account.email, f"{WRONG} {n}", ATTACKER) for n in range(12)]
    logins = [lambda: attempt(slow_checks, account.email, account.password, OWNER)] * 12
    calls = [call for pair in zip(guesses, logins, strict=True) for call in pair]  # interleaved
    statuses = [response.status_code for response in in_parallel(calls)]

    assert statuses[1::2] == [200] * 12, statuses
    # Exactly the limit of guesses reached the password check (none refused for racing each other).
    assert Counter(statuses[0::2]) == {401: LIMIT, 429: 12 - LIMIT}, statuses
    wrong_checks = sum(count for password, count in watcher.calls.items() if password.startswith(WRONG))
    assert wrong_checks == LIMIT
    assert len(failures(slow_checks, client_ip=ATTACKER)) == LIMIT
    assert attempts(slow_checks, client_ip=OWNER) == []
    assert len(audit_events(slow_checks, "auth.login_failed")) == LIMIT
    # The attacker's address stays refused, even with the right password; the owner's does not.
    blocked = attempt(slow_checks, account.email, account.password, ATTACKER)
    assert blocked.status_code == 429 and error_of(blocked)["details"]["reason"] == "failures"
    assert attempt(slow_checks, account.email, account.password, OWNER).status_code == 200


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_an_attempt_waits_for_the_attempts_in_flight_to_resolve(proxied, outcome):
    account = sign_up(proxied)
    add_attempts(proxied, account.email, OWNER, PENDING, 3)  # another process is checking three
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        waiting = pool.submit(attempt, proxied, account.email, account.password, OWNER)
        time.sleep(0.4)
        assert not waiting.done()  # neither refused nor let through while the limit is in flight
        with db(proxied) as session:
            in_flight = select(LoginAttempt.id).where(LoginAttempt.state == PENDING)
            if outcome == "succeeded":
                session.execute(sa.delete(LoginAttempt).where(LoginAttempt.id.in_(in_flight)))
            else:
                session.execute(update(LoginAttempt).where(LoginAttempt.id.in_(in_flight)).values(state=FAILED))
            session.commit()
        response = waiting.result(timeout=10)
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < throttle.PENDING_WAIT_SECONDS, elapsed
    if outcome == "succeeded":
        assert response.status_code == 200
        assert attempts(proxied) == []
    else:  # they were three failures: the limit
        assert response.status_code == 429 and error_of(response)["details"]["reason"] == "failures"
        assert len(failures(proxied)) == 3 and attempts(proxied, state=PENDING) == []


def test_the_wait_is_bounded(proxied, monkeypatch):
    monkeypatch.setattr(throttle, "PENDING_WAIT_SECONDS", 0.5)
    account = sign_up(proxied)
    add_attempts(proxied, account.email, OWNER, PENDING, 3)  # in flight, and staying so
    started = time.monotonic()
    response = attempt(proxied, account.email, account.password, OWNER)
    elapsed = time.monotonic() - started
    assert response.status_code == 429 and 0.5 <= elapsed < 3, elapsed
    error = error_of(response)
    assert error["details"] == {"limit": "account", "retry_after": 1, "reason": "in_flight"}
    assert response.headers["retry-after"] == "1" and "being checked" in error["message"]
    assert len(attempts(proxied)) == 3  # the refused attempt left nothing behind
    # Another address is not affected, and neither is the address limit.
    assert attempt(proxied, account.email, account.password, ATTACKER).status_code == 200


def test_a_pending_attempt_past_its_lease_counts_as_a_failure_until_it_ages_out(proxied):
    account = sign_up(proxied)
    lease = timedelta(seconds=throttle.PENDING_LEASE_SECONDS)
    # The process checking these died a minute ago: they are failures, and nothing waits for them.
    add_attempts(proxied, account.email, OWNER, PENDING, 3, age=lease + timedelta(seconds=30))
    started = time.monotonic()
    blocked = attempt(proxied, account.email, account.password, OWNER)
    assert blocked.status_code == 429 and time.monotonic() - started < 1
    assert error_of(blocked)["details"]["reason"] == "failures"
    retry_after = int(blocked.headers["retry-after"])
    expected = WINDOW - (lease.total_seconds() + 30)
    assert expected - 5 <= retry_after <= expected + 1, retry_after

    # Until then, a crash cannot be used to get more guesses either.
    assert attempt(proxied, account.email, WRONG, OWNER).status_code == 429
    shift_failures(proxied, timedelta(seconds=retry_after + 1))
    assert attempt(proxied, account.email, account.password, OWNER).status_code == 200


def test_a_success_forgives_failures_but_not_the_attempts_still_in_flight(proxied):
    limits = Limits(per_account=4, per_address=100, window=timedelta(seconds=WINDOW), pending_wait=0.2)
    account = new_email("direct")
    add_attempts(proxied, account, OWNER, FAILED, 1)
    add_attempts(proxied, account, OWNER, PENDING, 1, age=timedelta(seconds=throttle.PENDING_LEASE_SECONDS + 5))
    with db(proxied) as session:
        first = LoginThrottle(session, limits).begin(account, OWNER)
    with db(proxied) as session:
        second = LoginThrottle(session, limits).begin(account, OWNER)
    with db(proxied) as session, pytest.raises(RateLimited) as refused:
        LoginThrottle(session, limits).begin(account, OWNER)  # 2 settled + 2 in flight: the limit
    assert refused.value.details["reason"] == "in_flight"
    assert Counter(row.state for row in attempts(proxied)) == {PENDING: 3, FAILED: 1}

    with db(proxied) as session:
        LoginThrottle(session, limits).succeeded(first)
        session.commit()
    # The failure and the stale attempt are forgiven; the other check still in flight is not.
    assert [(row.id, row.state) for row in attempts(proxied)] == [(second.id, PENDING)]
    with db(proxied) as session:
        LoginThrottle(session, limits).failed(second)
        session.commit()
    assert [(row.id, row.state) for row in attempts(proxied)] == [(second.id, FAILED)]

    # A failure whose row has gone meanwhile (forgiven as stale, pruned) is still recorded.
    with db(proxied) as session:
        third = LoginThrottle(session, limits).begin(account, OWNER)
        session.execute(sa.delete(LoginAttempt).where(LoginAttempt.id == third.id))
        LoginThrottle(session, limits).failed(third)
        session.commit()
    rows = failures(proxied)
    assert len(rows) == 2 and rows[-1].attempted_at == third.attempted_at


# ---- the migration -----------------------------------------------------------------------------


def test_the_migration_keeps_every_failure(database_url):
    from alembic import command

    failures_table = sa.table(
        "login_failures", sa.column("account"), sa.column("client_ip"), sa.column("failed_at", UTCDateTime())
    )
    attempts_table = sa.table(
        "login_attempts",
        sa.column("account"),
        sa.column("client_ip"),
        sa.column("attempted_at", UTCDateTime()),
        sa.column("state"),
    )
    before = [utcnow() - timedelta(seconds=age) for age in (300, 10)]
    engine = sa.create_engine(database_url)
    try:
        migrations.upgrade(engine, "0004_standards")
        with engine.begin() as connection:
            connection.execute(
                sa.insert(failures_table),
                [{"account": "a@example.edu", "client_ip": ATTACKER, "failed_at": at} for at in before],
            )
        migrations.upgrade(engine)
        with engine.begin() as connection:
            rows = connection.execute(
                sa.select(attempts_table).order_by(attempts_table.c.attempted_at)
            ).all()
            assert rows == [("a@example.edu", ATTACKER, at, FAILED) for at in before]
            in_flight = utcnow()
            connection.execute(
                sa.insert(attempts_table),
                {"account": "a@example.edu", "client_ip": ATTACKER, "attempted_at": in_flight, "state": PENDING},
            )
        with engine.connect() as connection:
            command.downgrade(migrations.alembic_config(connection), "0004_standards")
            connection.commit()
        with engine.connect() as connection:
            times = connection.scalars(sa.select(failures_table.c.failed_at).order_by(failures_table.c.failed_at)).all()
        assert times == [*before, in_flight]  # an attempt in flight was counted, and still is
    finally:
        engine.dispose()


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
        # Racing attempts wait for each other rather than being refused: exactly the limit get through.
        assert Counter(raced) == {401: limit, 429: 24 - limit}, raced

        # The owner of another account, from one address, in many tabs at once: every login succeeds.
        owner = new_email("tabs")
        registered = _fresh_connection_post(
            f"{server.url}{AUTH}/register", {"email": owner, "password": password, "name": "Tabs"}
        )
        assert registered.status_code == 201, registered.text
        with ThreadPoolExecutor(max_workers=8) as pool:
            tabs = list(
                pool.map(
                    lambda _: _fresh_connection_post(login_url, {"email": owner, "password": password}).status_code,
                    range(16),
                )
            )
        assert tabs == [200] * 16, tabs

        import psycopg

        with psycopg.connect(f"host={postgres.host} port={postgres.port} user={postgres.user} dbname={name}") as conn:
            counts = dict(
                conn.execute("SELECT account, count(*) FROM login_attempts WHERE state = 'failed' GROUP BY account")
            )
            pending = conn.execute("SELECT count(*) FROM login_attempts WHERE state = 'pending'").fetchone()
        assert counts == {email_address: limit, target: limit} and pending == (0,), (counts, pending)

        # Both workers served logins: the limit held in total, not per process.
        # Each access-log line names its process: [pid] a3e.access: POST …
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and server.log().count("a3e.access: POST /api/v1/auth/login") < 3 * limit + 1 + 24 + 16:
            time.sleep(0.05)  # the access log is written in batches, at most a fraction of a second late
        served = Counter(re.findall(r"\[(\d+)\] a3e\.access: POST /api/v1/auth/login", server.log()))
        assert set(served) == workers and sum(served.values()) == 3 * limit + 1 + 24 + 16, served
    finally:
        if server is not None:
            server.stop()  # before its database goes
        postgres.drop_database(name)
