"""Outgoing email: templates rendered to plain text and HTML, delivered off the request path.

Backends:
- `smtp` when SMTP_HOST is set (Postmark, SendGrid, SES and the rest all speak SMTP);
- `development` otherwise outside production: each message is logged (without its body, which
  may hold a token) and written to $A3E_DATA_DIR/outbox/ as an .eml file to open or click through;
- none in production without SMTP: messages are dropped with a warning, and /health says so.

`EmailSender.send` returns at once; delivery runs on a small thread pool with retries, so a slow
or failing mail server never holds up a request.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from a3e.core.settings import Settings

logger = logging.getLogger("a3e.email")

TEMPLATES = Path(__file__).parent / "templates"
RETRY_DELAYS = (1.0, 5.0, 30.0)  # seconds between attempts after the first


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    subject: str
    text: str
    html: str | None
    template: str

    def to_message(self, sender: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = sender
        message["To"] = self.to
        message["Subject"] = self.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1].strip("> ") or "a3e.local")
        message.set_content(self.text)
        if self.html:
            message.add_alternative(self.html, subtype="html")
        return message


class Backend(Protocol):
    name: str

    def deliver(self, message: EmailMessage) -> None: ...


class DevelopmentBackend:
    name = "development"

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    def deliver(self, message: EmailMessage) -> None:
        self.outbox.mkdir(parents=True, exist_ok=True)
        path = self.outbox / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
        path.write_bytes(bytes(message))
        logger.info("email to %s (%s) written to %s", message["To"], message["Subject"], path)


class SMTPBackend:
    name = "smtp"

    def __init__(self, settings: Settings) -> None:
        self.host = settings.smtp_host or ""
        self.port = settings.smtp_port
        self.security = settings.smtp_security
        self.timeout = settings.smtp_timeout
        self.username = settings.smtp_username
        self.password = settings.smtp_password.get_secret_value() if settings.smtp_password else None

    def deliver(self, message: EmailMessage) -> None:
        context = ssl.create_default_context()
        if self.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with client:
            if self.security == "starttls":
                client.starttls(context=context)
            if self.username and self.password:
                client.login(self.username, self.password)
            client.send_message(message)
        logger.info("email to %s (%s) sent via %s:%s", message["To"], message["Subject"], self.host, self.port)


class DroppingBackend:
    """Production without SMTP: never write tokens into logs or local files."""

    name = "none"

    def deliver(self, message: EmailMessage) -> None:
        logger.warning("email to %s (%s) not sent: SMTP_HOST is not configured", message["To"], message["Subject"])


def backend_for(settings: Settings) -> Backend:
    if settings.smtp_host:
        return SMTPBackend(settings)
    if settings.is_production:
        return DroppingBackend()
    return DevelopmentBackend(settings.data_dir / "outbox")


class EmailSender:
    def __init__(self, settings: Settings, backend: Backend | None = None, retry_delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        self.settings = settings
        self.backend = backend or backend_for(settings)
        self.retry_delays = retry_delays
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.failures = 0
        self.last_error: str | None = None

    @cached_property
    def _templates(self):
        from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

        return Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, template: str, to: str, context: dict[str, Any]) -> OutgoingEmail:
        values = {"app_url": self.settings.app_url, "product": "A³E", **context}
        subject = self._templates.get_template(f"{template}.subject.txt").render(values).strip()
        text = self._templates.get_template(f"{template}.txt").render(values)
        html_path = f"{template}.html"
        html = self._templates.get_template(html_path).render(values) if (TEMPLATES / html_path).exists() else None
        return OutgoingEmail(to=to, subject=subject, text=text, html=html, template=template)

    def send(self, template: str, to: str, context: dict[str, Any]) -> Future[None]:
        """Render now (a template error is the caller's bug), deliver in the background."""
        email = self.render(template, to, context)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="a3e-email")
            return self._pool.submit(self._deliver_with_retries, email)

    def _deliver_with_retries(self, email: OutgoingEmail) -> None:
        message = email.to_message(self.settings.email_from)
        for attempt, delay in enumerate((0.0, *self.retry_delays), start=1):
            if delay:
                time.sleep(delay)
            try:
                self.backend.deliver(message)
                return
            except Exception as exc:  # any SMTP or network error: retry, then give up loudly
                self.last_error = f"{exc.__class__.__name__}: {exc}"[:300]
                logger.warning("email to %s (%s), attempt %d failed: %s", email.to, email.template, attempt, self.last_error)
        self.failures += 1
        logger.error("email to %s (%s) not delivered after %d attempts", email.to, email.template, attempt)

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=wait)
                self._pool = None
