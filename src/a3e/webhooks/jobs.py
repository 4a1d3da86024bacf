"""Background jobs of outgoing webhooks: one attempt of a delivery, and the per-minute sweep.

`webhooks.deliver` claims a due delivery (an atomic UPDATE that pushes its due time past the
attempt's longest possible duration, so two runs never attempt the same delivery at once), makes
one HTTP attempt outside any transaction, then records it: the attempt's log row, the delivery's
state (succeeded, or due again after a capped, jittered backoff, or failed when the attempts ran
out) and the endpoint's health, disabling the endpoint (audited, its admins emailed) once it has
failed too often for too long. Retries are ours, kept in the database, not the queue's: they
survive restarts, and the sweep re-queues what is due and was not queued or whose worker died.
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from a3e.core.models import utcnow
from a3e.jobs import JobContext, crontab, job
from a3e.webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from a3e.webhooks.publish import DELIVER_JOB, queue_delivery

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from a3e.core.settings import Settings
    from a3e.webhooks.delivery import AttemptResult

logger = logging.getLogger("a3e.webhooks")

SWEEP_BATCH = 500
# The sweep leaves alone what became due this recently: its own job is most likely on its way.
SWEEP_GRACE = timedelta(seconds=10)
# A claim outlasts the attempt's longest possible duration by this much before the sweep retries.
CLAIM_MARGIN = timedelta(seconds=60)
JITTER = 0.2
# An endpoint that failed this many attempts in a row is probed, not flooded: its deliveries wait
# for it (without spending their attempts), and one attempt per interval — the retry schedule's, at
# most PROBE_INTERVAL_CAP — tries it. A hanging receiver then holds a job thread once per interval,
# not once per event, and recovers all its waiting deliveries as soon as it answers.
CIRCUIT_OPENS_AFTER = 3
PROBE_INTERVAL_CAP = 60.0
# Events, with their deliveries and attempt logs, are kept this long once nothing is pending.
DELIVERY_LOG_KEPT = timedelta(days=30)


def retry_delay(settings: Settings, attempts_done: int) -> float:
    """Seconds before the next attempt after `attempts_done` failed ones: the schedule's entry (the
    last one repeats, the cap), with ±20 % jitter so that retries of many deliveries spread out."""
    schedule = settings.webhooks_retry_schedule
    base = schedule[min(max(attempts_done, 1), len(schedule)) - 1]
    return base * random.uniform(1 - JITTER, 1 + JITTER)


@dataclass(frozen=True)
class _Claim:
    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    url: str
    message_id: str
    body: str
    secrets: list[str]
    secret_error: str | None


def endpoint_resumes_at(settings: Settings, endpoint: WebhookEndpoint) -> datetime | None:
    """When a failing endpoint may be tried again (None: it is not failing enough to wait for)."""
    if endpoint.consecutive_failures < CIRCUIT_OPENS_AFTER or endpoint.last_failure_at is None:
        return None
    interval = min(retry_delay(settings, endpoint.consecutive_failures - CIRCUIT_OPENS_AFTER + 1), PROBE_INTERVAL_CAP)
    return endpoint.last_failure_at + timedelta(seconds=interval)


def _claim(context: JobContext, delivery_id: uuid.UUID, *, manual: bool = False) -> _Claim | None:
    from a3e.webhooks.signing import SecretUnreadable, decrypt_secret

    settings = context.settings
    now = utcnow()
    lease = timedelta(seconds=settings.webhooks_connect_timeout + settings.webhooks_timeout) + CLAIM_MARGIN
    with context.transaction() as session:
        claimed = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == DeliveryStatus.PENDING.value,
                WebhookDelivery.next_attempt_at <= now + timedelta(seconds=1),
            )
            .values(next_attempt_at=now + lease)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            return None  # done, not due yet, or being attempted by another run
        delivery = session.get(WebhookDelivery, delivery_id)
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id) if delivery else None
        event = session.get(WebhookEvent, delivery.event_id) if delivery else None
        if delivery is None or endpoint is None or event is None:
            return None
        if not endpoint.enabled:
            delivery.status = DeliveryStatus.CANCELLED.value
            delivery.next_attempt_at = None
            delivery.last_error = "the endpoint is disabled"
            return None
        resume = None if manual else endpoint_resumes_at(settings, endpoint)  # people may always try
        if resume is not None and resume > now:
            delivery.next_attempt_at = resume
            queue_delivery(session, delivery.id, runtime=context.runtime, delay=(resume - now).total_seconds())
            return None
        secret_key = settings.secret_key.get_secret_value() if settings.secret_key else ""
        try:
            secrets = [decrypt_secret(endpoint.secret_encrypted, secret_key)]
            if endpoint.previous_secret_encrypted and endpoint.previous_secret_expires_at and \
                    endpoint.previous_secret_expires_at > now:
                secrets.append(decrypt_secret(endpoint.previous_secret_encrypted, secret_key))
            secret_error = None
        except SecretUnreadable as exc:
            secrets, secret_error = [], str(exc)
        return _Claim(delivery.id, endpoint.id, endpoint.url, event.id, event.payload, secrets, secret_error)


def _workspace_admins(session: Session, workspace_id: uuid.UUID) -> list[str]:
    from a3e.auth.models import User
    from a3e.workspaces.models import Membership

    return list(
        session.scalars(
            select(User.email)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.workspace_id == workspace_id, Membership.role.in_(("owner", "admin")))
            .order_by(User.email)
        )
    )


def _disable(context: JobContext, session: Session, endpoint: WebhookEndpoint, reason: str) -> None:
    """Disable a failing endpoint: stop its pending deliveries, audit it, email its admins."""
    from a3e.audit.service import record_event
    from a3e.jobs import service as jobs
    from a3e.workspaces.models import Workspace

    now = utcnow()
    endpoint.enabled = False
    endpoint.disabled_at = now
    endpoint.disabled_reason = reason[:500]
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == DeliveryStatus.PENDING.value)
        .values(status=DeliveryStatus.CANCELLED.value, next_attempt_at=None, last_error="the endpoint was disabled")
        .execution_options(synchronize_session=False)
    )
    record_event(
        session, "webhook.disabled", workspace_id=endpoint.workspace_id, actor_label="A³E (automatic)",
        target_type="webhook", target_id=endpoint.id,
        details={"url": endpoint.url, "reason": reason, "consecutive_failures": endpoint.consecutive_failures,
                 "last_failure": endpoint.last_failure_reason},
    )
    workspace = session.get(Workspace, endpoint.workspace_id)
    runtime = context.runtime
    for address in _workspace_admins(session, endpoint.workspace_id):
        values = {
            "workspace_name": workspace.name if workspace else "",
            "endpoint_url": endpoint.url,
            "endpoint_id": str(endpoint.id),
            "reason": reason,
            "last_failure": endpoint.last_failure_reason or "",
        }
        try:
            (runtime or jobs.installed()).enqueue_after_commit(
                session, "email.send", template="webhook_endpoint_disabled", to=address, context_values=values
            )
        except jobs.JobQueueUnavailable:
            logger.warning("webhook endpoint %s disabled; no job queue to email %s", endpoint.id, address)
    logger.warning("webhook endpoint %s disabled: %s", endpoint.id, reason)


def _should_disable(settings: Settings, endpoint: WebhookEndpoint) -> str | None:
    if not endpoint.enabled or endpoint.failing_since is None:
        return None
    failing_for = utcnow() - endpoint.failing_since
    if endpoint.consecutive_failures < settings.webhooks_disable_after_failures:
        return None
    if failing_for < timedelta(hours=settings.webhooks_disable_after_hours):
        return None
    hours = failing_for.total_seconds() / 3600
    return (
        f"{endpoint.consecutive_failures} failed attempts in a row over {hours:.1f} hours "
        f"(the limit is {settings.webhooks_disable_after_failures} failures over "
        f"{settings.webhooks_disable_after_hours:g} hours)"
    )


def _record(context: JobContext, claim: _Claim, result: AttemptResult, started: Any, manual: bool) -> str:
    settings = context.settings
    now = utcnow()
    error = result.error[:500] if result.error else None
    with context.transaction() as session:
        # The endpoint's health first, computed in SQL: this write also takes the lock (a row lock on
        # PostgreSQL, the database's write lock on SQLite) before anything is read, so that attempts
        # finishing at the same moment count every failure and only one of them disables it.
        if result.succeeded:
            health = {"consecutive_failures": 0, "failing_since": None, "last_success_at": now}
        else:
            health = {
                "consecutive_failures": WebhookEndpoint.consecutive_failures + 1,
                "failing_since": func.coalesce(WebhookEndpoint.failing_since, started),
                "last_failure_at": now,
                "last_failure_reason": error,
            }
        session.execute(
            update(WebhookEndpoint).where(WebhookEndpoint.id == claim.endpoint_id).values(**health)
            .execution_options(synchronize_session=False)
        )
        delivery = session.scalar(
            select(WebhookDelivery).where(WebhookDelivery.id == claim.delivery_id).with_for_update()
        )
        endpoint = session.get(WebhookEndpoint, claim.endpoint_id)
        if delivery is None or endpoint is None:
            return "gone"  # the endpoint was deleted meanwhile
        delivery.attempts += 1
        session.add(WebhookAttempt(
            delivery_id=delivery.id, number=delivery.attempts, manual=manual, started_at=started,
            duration_ms=result.duration_ms, succeeded=result.succeeded, status_code=result.status_code,
            error=error, response_body=result.response_body,
        ))
        delivery.last_attempt_at = started
        delivery.last_status_code = result.status_code
        delivery.last_error = error
        if result.succeeded:
            delivery.status = DeliveryStatus.SUCCEEDED.value
            delivery.succeeded_at = now
            delivery.next_attempt_at = None
            return delivery.status
        if reason := _should_disable(settings, endpoint):
            _disable(context, session, endpoint, reason)
        if not endpoint.enabled:  # disabled now, or meanwhile by another attempt or a person
            delivery.status = DeliveryStatus.CANCELLED.value
            delivery.next_attempt_at = None
        elif delivery.attempts < settings.webhooks_max_attempts:
            delay = retry_delay(settings, delivery.attempts)
            delivery.status = DeliveryStatus.PENDING.value
            delivery.next_attempt_at = now + timedelta(seconds=delay)
            queue_delivery(session, delivery.id, runtime=context.runtime, delay=delay)
        else:
            delivery.status = DeliveryStatus.FAILED.value
            delivery.next_attempt_at = None
        return delivery.status


@job(DELIVER_JOB, retries=0)
def deliver(context: JobContext, delivery_id: str, manual: bool = False) -> str:
    """One attempt of a delivery, if it is due. Returns the delivery's status afterwards (or why
    nothing was attempted)."""
    from a3e.webhooks.delivery import AttemptResult, attempt

    claim = _claim(context, uuid.UUID(delivery_id), manual=manual)
    if claim is None:
        return "not due"
    started = utcnow()
    if claim.secret_error:
        result = AttemptResult(False, None, claim.secret_error, None, 0)
    else:
        result = attempt(context.settings, claim.url, claim.message_id, claim.body, claim.secrets)
    status = _record(context, claim, result, started, manual)
    logger.info(
        "webhook %s delivery %s attempt: %s%s", claim.message_id, delivery_id,
        "ok" if result.succeeded else "failed", f" ({result.error})" if result.error else "",
    )
    return status


def forget_old_events(session: Session, *, older_than: timedelta = DELIVERY_LOG_KEPT) -> int:
    """Delete events older than `older_than` that no delivery still waits for (their deliveries and
    attempt logs go with them); returns how many."""
    from sqlalchemy import delete

    still_pending = select(WebhookDelivery.event_id).where(WebhookDelivery.status == DeliveryStatus.PENDING.value)
    result = session.execute(
        delete(WebhookEvent)
        .where(WebhookEvent.created_at < utcnow() - older_than, WebhookEvent.id.not_in(still_pending))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


@job("webhooks.sweep", schedule=crontab(minute="*"), retries=0)
def sweep(context: JobContext) -> int:
    """Queue every delivery that is due and not being attempted: its job was lost (the queue was
    down at commit, a worker died mid-attempt) or it is a retry whose time has come. Returns how
    many were queued. Once an hour, also forget the delivery log older than DELIVERY_LOG_KEPT."""
    from a3e.jobs import service as jobs

    if not context.schema_ready():
        return 0
    if utcnow().minute == 0:
        with context.transaction() as session:
            forgotten = forget_old_events(session)
        if forgotten:
            logger.info("webhooks: %d events older than %d days forgotten", forgotten, DELIVERY_LOG_KEPT.days)
    with context.transaction() as session:
        due = list(
            session.scalars(
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.status == DeliveryStatus.PENDING.value,
                    WebhookDelivery.next_attempt_at <= utcnow() - SWEEP_GRACE,
                )
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(SWEEP_BATCH)
            )
        )
    runtime = context.runtime or jobs.installed()
    for delivery_id in due:
        runtime.enqueue(DELIVER_JOB, str(delivery_id))
    if due:
        logger.info("webhooks: %d due deliveries queued by the sweep", len(due))
    return len(due)
