"""Housekeeping: delete credentials and counters that can no longer mean anything.

What goes, and why it is safe:
- refresh tokens that expired more than a day ago (rotated, revoked or not): an expired token is
  refused whatever its row says, and theft detection only matters while a token could still be
  used. The day's grace keeps the "your session expired" answer for a client that just missed it.
- password-reset and verification tokens that expired more than a day ago (used or not).
- failed logins older than the throttling window: they no longer count (the throttle prunes them
  too, but only when someone logs in).

What stays: invitations (their rows say who invited whom and whether it was accepted; an expired
one cannot be accepted anyway), users, workspaces, and the audit log, which is append-only and is
never touched by anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete

from a3e.jobs.registry import JobContext, crontab, job

logger = logging.getLogger("a3e.jobs.housekeeping")

EXPIRED_GRACE = timedelta(days=1)


@dataclass(frozen=True)
class HousekeepingReport:
    refresh_tokens: int
    one_time_tokens: int
    login_failures: int

    @property
    def total(self) -> int:
        return self.refresh_tokens + self.one_time_tokens + self.login_failures


def clean_up(context: JobContext) -> HousekeepingReport:
    from a3e.auth.models import LoginAttempt, OneTimeToken, RefreshToken
    from a3e.core.models import utcnow

    now = utcnow()
    with context.transaction() as session:
        refresh = session.execute(delete(RefreshToken).where(RefreshToken.expires_at < now - EXPIRED_GRACE)).rowcount
        one_time = session.execute(delete(OneTimeToken).where(OneTimeToken.expires_at < now - EXPIRED_GRACE)).rowcount
        window = timedelta(seconds=context.settings.login_window_seconds)
        failures = session.execute(delete(LoginAttempt).where(LoginAttempt.attempted_at <= now - window)).rowcount
    report = HousekeepingReport(refresh or 0, one_time or 0, failures or 0)
    if report.total:
        logger.info(
            "housekeeping deleted %d expired refresh tokens, %d expired one-time tokens, %d old failed logins",
            report.refresh_tokens, report.one_time_tokens, report.login_failures,
        )
    return report


# Hourly, at a minute chosen to stay off the hour's crowd; idempotent, so a second run is harmless.
@job("housekeeping", schedule=crontab(minute="17"), retries=2, retry_delay=60)
def housekeeping(context: JobContext) -> None:
    if context.schema_ready():
        clean_up(context)
