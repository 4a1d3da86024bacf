"""Email sent from background jobs (billing notices, integration alerts), where no request and no
`app.state.email` exist.

`email.send` renders and delivers one message with the runtime's shared `EmailSender`, waiting for
the outcome so that the job ends only once the message was delivered or given up (the sender
retries temporary failures itself and logs and counts what it gives up). Callers queue it after
their transaction commits:

    enqueue_after_commit(session, "email.send", template="billing_trial_will_end", to=address,
                         context={"workspace": name, ...})
"""

from __future__ import annotations

from typing import Any

from a3e.jobs.registry import JobContext, job

SEND_TIMEOUT_SECONDS = 120.0


def _sender(context: JobContext) -> Any:
    from a3e.email.service import EmailSender

    if context.runtime is None:  # called directly (tests): a sender of its own
        return EmailSender(context.settings)
    return context.runtime.resource("email", lambda: EmailSender(context.settings))


@job("email.send", retries=0)
def send_email(context: JobContext, *, template: str, to: str, context_values: dict[str, Any]) -> None:
    """Deliver `template` to `to`. A bad template or address fails the job at once (a bug, not a
    passing outage); delivery failures are the sender's to retry and report."""
    sender = _sender(context)
    sender.send(template, to, context_values).result(timeout=SEND_TIMEOUT_SECONDS)
    if context.runtime is None:
        sender.shutdown()
