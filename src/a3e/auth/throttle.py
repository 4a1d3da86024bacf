"""Throttling password guesses, in the database so that every worker process and replica shares it.

Two limits over a sliding window (`login_window_seconds`):

- per account *and* client address (`login_max_failures`): an attacker guessing one account is
  stopped, while its owner, from another address, still logs in;
- per client address (`login_max_failures_per_ip`): one address guessing many accounts is stopped.

A refusal lasts only until enough failures age out of the window (Retry-After says when), never
longer, and a successful login clears its account and address's failures.

Each attempt is written down and committed *before* the password is checked, then counted again:
however many attempts race in parallel across processes, at most the limit of them reach the
password check in one window. A successful attempt deletes its record; a failed one leaves it as
the failure it is. Refused attempts are not recorded, so hammering does not extend a refusal.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from a3e.auth.models import LoginFailure
from a3e.core.errors import RateLimited
from a3e.core.logging import log_fields
from a3e.core.models import utcnow
from a3e.core.settings import Settings

logger = logging.getLogger("a3e.auth")

ACCOUNT_LENGTH = 320
ADDRESS_LENGTH = 64
PRUNE_EVERY_SECONDS = 60.0

_prune_lock = threading.Lock()
_last_prune = -math.inf


@dataclass(frozen=True)
class Limits:
    per_account: int
    per_address: int
    window: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            per_account=settings.login_max_failures,
            per_address=settings.login_max_failures_per_ip,
            window=timedelta(seconds=settings.login_window_seconds),
        )


@dataclass(frozen=True)
class Attempt:
    """A login attempt that was allowed to check its password (its record is committed)."""

    id: int
    account: str
    address: str


class LoginThrottle:
    def __init__(self, session: Session, limits: Limits) -> None:
        self.session = session
        self.limits = limits

    # ---- the two scopes --------------------------------------------------------------------

    def _account_scope(self, account: str, address: str):
        return (LoginFailure.account == account, LoginFailure.client_ip == address)

    def _address_scope(self, address: str):
        return (LoginFailure.client_ip == address,)

    def _count(self, scope, since: datetime) -> int:
        statement = select(func.count()).select_from(LoginFailure).where(*scope, LoginFailure.failed_at > since)
        return int(self.session.scalar(statement) or 0)

    def _retry_after(
        self, scope, since: datetime, now: datetime, count: int, limit: int, exclude_id: int | None
    ) -> int:
        """Seconds until enough failures age out that one more attempt is allowed."""
        statement = select(LoginFailure.failed_at).where(*scope, LoginFailure.failed_at > since)
        if exclude_id is not None:
            statement = statement.where(LoginFailure.id != exclude_id)
        # With `count` failures in the window and room for `limit`, the (count - limit + 1)
        # oldest must age out: the oldest one when the window holds exactly the limit.
        pivot = self.session.scalar(statement.order_by(LoginFailure.failed_at).offset(max(0, count - limit)).limit(1))
        if pivot is None:
            return 1
        return max(1, math.ceil((pivot + self.limits.window - now).total_seconds()))

    def _refusal(
        self, account: str, address: str, now: datetime, *, exclude_id: int | None, strict: bool
    ) -> RateLimited | None:
        """A 429 when a limit is reached (`strict`: counting the attempt itself, exceeded)."""
        since = now - self.limits.window
        checks = (
            (self._account_scope(account, address), self.limits.per_account, "account"),
            (self._address_scope(address), self.limits.per_address, "address"),
        )
        for scope, limit, kind in checks:
            count = self._count(scope, since)  # the attempt's own record included, when strict
            over = count > limit if strict else count >= limit
            if not over:
                continue
            others = count - 1 if strict else count
            retry = self._retry_after(scope, since, now, others, limit, exclude_id)
            log_fields(
                logger,
                logging.WARNING,
                "login refused: too many failed attempts",
                limit=kind,
                account=account,
                client_ip=address,
                retry_after=retry,
            )
            if kind == "account":
                message = "Too many failed login attempts for this account from your address; try again later"
            else:
                message = "Too many failed login attempts from your address; try again later"
            return RateLimited(message, retry_after=retry, details={"limit": kind, "retry_after": retry})
        return None

    # ---- the protocol --------------------------------------------------------------------

    def begin(self, account: str, address: str) -> Attempt:
        """Record an attempt for `account` from `address`, or raise RateLimited (429).

        Commits the session: the record must be visible to every other process before the
        password is checked.
        """
        account, address = account[:ACCOUNT_LENGTH], address[:ADDRESS_LENGTH]
        now = utcnow()
        refusal = self._refusal(account, address, now, exclude_id=None, strict=False)
        if refusal is not None:
            raise refusal
        record = LoginFailure(account=account, client_ip=address, failed_at=now)
        self.session.add(record)
        self._maybe_prune(now)
        self.session.commit()
        refusal = self._refusal(account, address, now, exclude_id=record.id, strict=True)
        if refusal is not None:  # others got there first, in parallel
            self.session.execute(delete(LoginFailure).where(LoginFailure.id == record.id))
            self.session.commit()
            raise refusal
        return Attempt(record.id, account, address)

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: forget this account and address's failures (this attempt's too)."""
        self.session.execute(delete(LoginFailure).where(*self._account_scope(attempt.account, attempt.address)))

    def _maybe_prune(self, now: datetime) -> None:
        """Delete failures older than the window, at most once a minute per process."""
        global _last_prune
        with _prune_lock:
            if time.monotonic() - _last_prune < PRUNE_EVERY_SECONDS:
                return
            _last_prune = time.monotonic()
        self.session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= now - self.limits.window))


def throttle_for(session: Session, settings: Settings) -> LoginThrottle:
    return LoginThrottle(session, Limits.from_settings(settings))
