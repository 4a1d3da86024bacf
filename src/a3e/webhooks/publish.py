"""Publishing an event: the outbox row and its deliveries, in the caller's transaction.

    publish(session, workspace_id, "document.processed", lambda: events.document_processed(session, revision))

Written in the same transaction as the change it describes, so a rolled-back change publishes
nothing and a committed one is never lost: the delivery jobs are queued after the commit, and the
per-minute sweep (`webhooks.sweep`) queues whatever is due and was not (the queue was down, or the
process died between the commit and the queueing). Delivery is therefore at least once.

Deliberately light (no HTTP client, no crypto): every domain's write path imports it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from a3e.core.models import utcnow
from a3e.webhooks.events import EVENT_TYPES
from a3e.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookEvent

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

logger = logging.getLogger("a3e.webhooks")

DELIVER_JOB = "webhooks.deliver"


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def encode_payload(event_type: str, timestamp: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": event_type, "timestamp": timestamp, "data": data}, separators=(",", ":"), default=str)


def queue_delivery(
    session: Session, delivery_id: uuid.UUID, *, runtime: Any = None, delay: float | None = None, manual: bool = False
) -> None:
    """Queue the delivery job once the transaction commits (after `delay` seconds). Without a
    reachable queue in this process the sweep picks the delivery up within a minute."""
    from a3e.jobs import service as jobs

    options: dict[str, Any] = {"manual": True} if manual else {}
    if delay is not None:
        options["delay"] = delay
    try:
        (runtime or jobs.installed()).enqueue_after_commit(session, DELIVER_JOB, str(delivery_id), **options)
    except jobs.JobQueueUnavailable:
        logger.info("webhook delivery %s left to the sweep: no job queue in this process", delivery_id)


def publish(
    session: Session,
    workspace_id: uuid.UUID,
    event_type: str,
    data: dict[str, Any] | Callable[[], dict[str, Any]],
    *,
    runtime: Any = None,
) -> WebhookEvent | None:
    """Record `event_type` with `data` for every enabled endpoint of the workspace subscribed to
    it; returns the event, or None when nobody listens (then nothing is written). `data` may be a
    function: the domains' write paths pass one, so that a payload nobody listens for (the usual
    case) is never built.

    `runtime`: the job queue to use (a job passes its `context.runtime`); default: this process's."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}; add it to a3e.webhooks.events.EVENT_TYPES")
    endpoints = [
        endpoint
        for endpoint in session.scalars(
            select(WebhookEndpoint).where(WebhookEndpoint.workspace_id == workspace_id, WebhookEndpoint.enabled.is_(True))
        )
        if event_type in endpoint.event_types
    ]
    if not endpoints:
        return None
    now = utcnow()
    event = WebhookEvent(
        id=new_message_id(),
        workspace_id=workspace_id,
        type=event_type,
        payload=encode_payload(
            event_type, now.isoformat().replace("+00:00", "Z"), data() if callable(data) else data
        ),
        created_at=now,
    )
    session.add(event)
    session.flush()  # the event row before its deliveries (no ORM relationship orders them)
    deliveries = [
        WebhookDelivery(
            id=uuid.uuid4(), workspace_id=workspace_id, endpoint_id=endpoint.id, event_id=event.id,
            status=DeliveryStatus.PENDING.value, attempts=0, next_attempt_at=now, created_at=now,
        )
        for endpoint in endpoints
    ]
    session.add_all(deliveries)
    session.flush()
    for delivery in deliveries:
        queue_delivery(session, delivery.id, runtime=runtime)
    return event
