"""Background jobs of billing: applying a stored Stripe event, and the sweep that queues again the
events whose job was lost or whose last attempt failed (with backoff, up to MAX_EVENT_ATTEMPTS).

Processing is idempotent and exactly-once: `service.process_event` claims the event in the same
transaction that applies it, so a second run of the same job finds it done.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from a3e.core.models import utcnow
from a3e.jobs import JobContext, crontab, job

logger = logging.getLogger("a3e.billing")

PROCESS_JOB = "billing.process_event"
# A received event whose job has not run for this long was lost (queue down at commit, worker died).
STALLED_RECEIVED = timedelta(minutes=2)
SWEEP_BATCH = 500


def _enqueue_after_commit(context: JobContext) -> Any:
    if context.runtime is not None:
        return context.runtime.enqueue_after_commit
    from a3e.jobs import enqueue_after_commit

    return enqueue_after_commit


@job(PROCESS_JOB, retries=2, retry_delay=2.0)
def process_stripe_event(context: JobContext, event_id: str) -> str | None:
    """Apply one stored event. A failure is recorded on the event (status, attempts, last_error,
    next attempt) and retried by the sweep; the database being briefly down is retried here."""
    from sqlalchemy.exc import OperationalError

    from a3e.billing import service

    try:
        with context.transaction() as session:
            status = service.process_event(
                session, context.settings, event_id, enqueue_after_commit=_enqueue_after_commit(context)
            )
    except OperationalError:
        raise  # transient: the job's own retries
    except Exception as exc:
        logger.warning("stripe event %s failed: %s: %s", event_id, exc.__class__.__name__, str(exc)[:300])
        with context.transaction() as session:
            service.record_failure(session, event_id, f"{exc.__class__.__name__}: {str(exc)[:1000]}")
        return "failed"
    return status.value if status is not None else None


@job("billing.resume_events", schedule=crontab(minute="*"), retries=0)
def resume_events(context: JobContext) -> dict[str, int]:
    """Start the trial of every workspace billing has not counted yet (see count_new_workspaces), and
    queue again the events left received (their job was lost) and the failed ones due another try."""
    from a3e.billing.models import EventStatus, StripeEvent
    from a3e.billing.plans import billing_enabled
    from a3e.billing.service import MAX_EVENT_ATTEMPTS, count_new_workspaces

    if not billing_enabled(context.settings) or not context.schema_ready():  # nothing to resume without Stripe
        return {"requeued": 0, "trials_started": 0}
    now = utcnow()
    with context.transaction() as session:
        trials = count_new_workspaces(session, now=now)
    if trials:
        logger.info("billing: %d workspaces counted, their trials started", trials)
    with context.transaction() as session:
        due = session.scalars(
            select(StripeEvent.id)
            .where(
                ((StripeEvent.status == EventStatus.RECEIVED.value) & (StripeEvent.received_at < now - STALLED_RECEIVED))
                | (
                    (StripeEvent.status == EventStatus.FAILED.value)
                    & (StripeEvent.attempts < MAX_EVENT_ATTEMPTS)
                    & (StripeEvent.next_attempt_at <= now)
                )
            )
            .order_by(StripeEvent.created)
            .limit(SWEEP_BATCH)
        ).all()
    for event_id in due:
        context.runtime.enqueue(PROCESS_JOB, event_id)
    if due:
        logger.info("billing: %d Stripe events queued again", len(due))
    return {"requeued": len(due), "trials_started": trials}
