"""Throttling password guesses, in the database so that every worker process and replica shares it.

Two limits over a sliding window (`login_window_seconds`):

- per account *and* client address (`login_max_failures`): an attacker guessing one account is
  stopped, while its owner, from another address, still logs in;
- per client address (`login_max_failures_per_ip`): one address guessing many accounts is stopped.

The protocol, one `login_attempts` row per password check:

1. `begin` counts the scope's attempts in the window. Failures — and pending attempts older than
   a short lease (`PENDING_LEASE_SECONDS`: their process died mid-check) — at the limit: refused
   with 429, Retry-After saying when enough of them age out. Otherwise, when failures plus the
   attempts being checked right now reach the limit, the attempt waits (below). Otherwise it
   writes a `pending` row, commits it, and counts again, its own row aside: however many attempts
   race across processes, the later of two always sees the earlier, so at most the limit of
   unknown guesses are ever being checked at once. Over the limit on that second count, the row
   is deleted and the attempt is refused or waits by the same rule.
2. Waiting: attempts in flight resolve within one password hash (~0.1–0.2 s), so rather than
   refuse a password that may well be right, `begin` commits (holding no transaction or pooled
   connection), sleeps a few jittered milliseconds and starts again, for at most
   `PENDING_WAIT_SECONDS`; then it answers 429 with a short Retry-After. This is what lets many
   parallel logins with the right password (several tabs, an integration) all succeed.
3. `failed` turns the row into a failure. `succeeded` deletes it together with the account and
   address's failures (and stale pending rows, which count as failures), and leaves the other
   attempts still in flight alone, so that each of them is still counted until it resolves.

A refusal because of failures lasts only until enough of them age out of the window, never
longer; refused attempts are not recorded, so hammering does not extend it. A row stuck in
`pending` (crash, lost commit) counts as in flight for the lease, then as a failure until it ages
out: a crash neither bypasses the limit nor blocks anyone for longer than the window.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from a3e.auth.models import LoginAttempt
from a3e.core.errors import RateLimited
from a3e.core.logging import log_fields
from a3e.core.models import utcnow
from a3e.core.settings import Settings

logger = logging.getLogger("a3e.auth")

ACCOUNT_LENGTH = 320
ADDRESS_LENGTH = 64
PRUNE_EVERY_SECONDS = 60.0

PENDING = "pending"
FAILED = "failed"
# A pending attempt older than this is taken for a failure: its process died mid-check.
PENDING_LEASE_SECONDS = 30.0
# How long an attempt waits for attempts in flight to resolve before it is refused.
PENDING_WAIT_SECONDS = 5.0
# Polling while waiting: the first pause, growing to the longest, each jittered by ±50% so that
# waiters who collided do not collide again.
POLL_FIRST_SECONDS = 0.02
POLL_LONGEST_SECONDS = 0.05
# Retry-After when the wait ran out: the attempts in flight may be done a moment later.
IN_FLIGHT_RETRY_AFTER = 1

_prune_lock = threading.Lock()
_last_prune = -math.inf

Scope = tuple[ColumnElement[bool], ...]


@dataclass(frozen=True)
class Limits:
    per_account: int
    per_address: int
    window: timedelta
    pending_lease: timedelta = timedelta(seconds=PENDING_LEASE_SECONDS)
    pending_wait: float = PENDING_WAIT_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            per_account=settings.login_max_failures,
            per_address=settings.login_max_failures_per_ip,
            window=timedelta(seconds=settings.login_window_seconds),
            pending_lease=timedelta(seconds=PENDING_LEASE_SECONDS),
            pending_wait=PENDING_WAIT_SECONDS,
        )


@dataclass(frozen=True)
class Attempt:
    """A login attempt that was allowed to check its password (its pending row is committed)."""

    id: int
    account: str
    address: str
    attempted_at: datetime


@dataclass(frozen=True)
class Tally:
    """One scope's attempts in the window."""

    settled: int  # failures, and pending attempts past their lease
    in_flight: int  # pending attempts within their lease


@dataclass(frozen=True)
class Verdict:
    refusal: RateLimited | None = None  # refused: the failures reached a limit
    waiting_for: str | None = None  # the limit ("account" or "address") only attempts in flight fill

    @property
    def admitted(self) -> bool:
        return self.refusal is None and self.waiting_for is None


class LoginThrottle:
    def __init__(self, session: Session, limits: Limits) -> None:
        self.session = session
        self.limits = limits

    # ---- the two scopes --------------------------------------------------------------------

    def _account_scope(self, account: str, address: str) -> Scope:
        return (LoginAttempt.account == account, LoginAttempt.client_ip == address)

    def _address_scope(self, address: str) -> Scope:
        return (LoginAttempt.client_ip == address,)

    def _settled(self, now: datetime) -> ColumnElement[bool]:
        return or_(LoginAttempt.state == FAILED, LoginAttempt.attempted_at <= now - self.limits.pending_lease)

    def _tally(self, scope: Scope, now: datetime, exclude_id: int | None) -> Tally:
        statement = select(func.count(case((self._settled(now), 1))), func.count()).where(
            *scope, LoginAttempt.attempted_at > now - self.limits.window
        )
        if exclude_id is not None:
            statement = statement.where(LoginAttempt.id != exclude_id)
        settled, total = self.session.execute(statement).one()
        return Tally(settled=int(settled), in_flight=int(total) - int(settled))

    def _retry_after(self, scope: Scope, now: datetime, settled: int, limit: int) -> int:
        """Seconds until enough settled attempts age out that one more attempt is allowed."""
        statement = select(LoginAttempt.attempted_at).where(
            *scope, LoginAttempt.attempted_at > now - self.limits.window, self._settled(now)
        )
        # With `settled` failures in the window and room for `limit`, the (settled - limit + 1)
        # oldest must age out: the oldest one when the window holds exactly the limit.
        pivot = self.session.scalar(
            statement.order_by(LoginAttempt.attempted_at).offset(max(0, settled - limit)).limit(1)
        )
        if pivot is None:
            return 1
        return max(1, math.ceil((pivot + self.limits.window - now).total_seconds()))

    def _verdict(self, account: str, address: str, now: datetime, *, exclude_id: int | None) -> Verdict:
        """Refused, waiting or admitted, counting every attempt but the caller's own (`exclude_id`)."""
        checks = (
            (self._account_scope(account, address), self.limits.per_account, "account"),
            (self._address_scope(address), self.limits.per_address, "address"),
        )
        waiting_for = None
        for scope, limit, kind in checks:
            tally = self._tally(scope, now, exclude_id)
            if tally.settled >= limit:
                retry = self._retry_after(scope, now, tally.settled, limit)
                return Verdict(refusal=self._refusal(kind, account, address, retry, in_flight=False))
            if waiting_for is None and tally.settled + tally.in_flight >= limit:
                waiting_for = kind  # unless the other scope refuses outright
        return Verdict(waiting_for=waiting_for)

    def _refusal(self, kind: str, account: str, address: str, retry: int, *, in_flight: bool) -> RateLimited:
        log_fields(
            logger,
            logging.WARNING,
            "login refused: too many attempts in flight" if in_flight else "login refused: too many failed attempts",
            limit=kind,
            account=account,
            client_ip=address,
            retry_after=retry,
        )
        what = "login attempts are being checked right now" if in_flight else "failed login attempts"
        whose = "for this account from your address" if kind == "account" else "from your address"
        details: dict[str, Any] = {"limit": kind, "retry_after": retry, "reason": "in_flight" if in_flight else "failures"}
        return RateLimited(f"Too many {what} {whose}; try again later", retry_after=retry, details=details)

    # ---- the protocol --------------------------------------------------------------------

    def begin(self, account: str, address: str) -> Attempt:
        """Record a pending attempt for `account` from `address`, or raise RateLimited (429).

        May wait (at most `pending_wait` seconds, holding no transaction) for attempts in flight
        to resolve. Commits the session: the pending row must be visible to every other process
        before the password is checked.
        """
        account, address = account[:ACCOUNT_LENGTH], address[:ADDRESS_LENGTH]
        deadline = time.monotonic() + self.limits.pending_wait
        pause = POLL_FIRST_SECONDS
        while True:
            now = utcnow()
            verdict = self._verdict(account, address, now, exclude_id=None)
            if verdict.admitted:
                attempt = self._record(account, address, now)
                verdict = self._verdict(account, address, now, exclude_id=attempt.id)
                if verdict.admitted:
                    return attempt
                # Others got there first, in parallel: step back, so they are not blocked by us.
                self.session.execute(delete(LoginAttempt).where(LoginAttempt.id == attempt.id))
            self.session.commit()  # no transaction, and no pooled connection, held while waiting
            if verdict.refusal is not None:
                raise verdict.refusal
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                assert verdict.waiting_for is not None
                raise self._refusal(verdict.waiting_for, account, address, IN_FLIGHT_RETRY_AFTER, in_flight=True)
            time.sleep(min(remaining, pause * random.uniform(0.5, 1.5)))
            pause = min(pause * 1.5, POLL_LONGEST_SECONDS)

    def _record(self, account: str, address: str, now: datetime) -> Attempt:
        attempt_id = self.session.scalar(
            insert(LoginAttempt)
            .values(account=account, client_ip=address, attempted_at=now, state=PENDING)
            .returning(LoginAttempt.id)
        )
        self._maybe_prune(now)
        self.session.commit()
        return Attempt(int(attempt_id), account, address, now)

    def failed(self, attempt: Attempt) -> None:
        """The password was wrong: the attempt stays, as a failure (committed with the caller's session)."""
        updated = self.session.execute(
            update(LoginAttempt)
            .where(LoginAttempt.id == attempt.id)
            .values(state=FAILED)
            .execution_options(synchronize_session=False)
        )
        if updated.rowcount == 0:  # pruned, or forgiven as stale by a success: it still counts
            self.session.execute(
                insert(LoginAttempt).values(
                    account=attempt.account, client_ip=attempt.address, attempted_at=attempt.attempted_at, state=FAILED
                )
            )

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: forget this attempt and this account and address's failures.

        Other attempts still in flight stay: each is counted until it resolves by itself.
        """
        self.session.execute(
            delete(LoginAttempt)
            .where(
                *self._account_scope(attempt.account, attempt.address),
                or_(LoginAttempt.id == attempt.id, self._settled(utcnow())),
            )
            .execution_options(synchronize_session=False)
        )

    def _maybe_prune(self, now: datetime) -> None:
        """Delete attempts older than the window, at most once a minute per process."""
        global _last_prune
        with _prune_lock:
            if time.monotonic() - _last_prune < PRUNE_EVERY_SECONDS:
                return
            _last_prune = time.monotonic()
        self.session.execute(delete(LoginAttempt).where(LoginAttempt.attempted_at <= now - self.limits.window))


def throttle_for(session: Session, settings: Settings) -> LoginThrottle:
    return LoginThrottle(session, Limits.from_settings(settings))
