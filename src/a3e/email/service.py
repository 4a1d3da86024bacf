"""Outgoing email: templates rendered to plain text and HTML, delivered off the request path.

Backends:
- `smtp` when SMTP_HOST is set (Postmark, SendGrid, SES and the rest all speak SMTP);
- `development` otherwise outside production: each message is logged (recipient and subject,
  never the body, which may hold a token) and written to $A3E_DATA_DIR/outbox/ as an .eml file
  (readable by its owner only) to open or click through;
- `none` in production without SMTP: messages are dropped with a warning, nothing is written
  anywhere, and `EmailSender.health()` says so.

`EmailSender.send` renders and checks the message at once (a bad template or recipient is the
caller's error, raised in the request), then returns; delivery runs on a small thread pool with
retries, so a slow or failing mail server never holds up a request. Temporary failures (network
errors, 4xx replies) are retried after `retry_delays`; permanent ones (5xx replies, a refused
login, a certificate that does not verify) are not. Every message that is finally not delivered is
logged as an error and counted, and `EmailSender.health()` reports the counters and the last error.

Templates live in `templates/`: `<name>.subject.txt`, `<name>.txt` and optionally `<name>.html`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re
import smtplib
import ssl
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from a3e.core.settings import Settings

logger = logging.getLogger("a3e.email")

TEMPLATES = Path(__file__).parent / "templates"
RETRY_DELAYS = (1.0, 5.0, 30.0)  # seconds between attempts after the first
SHUTDOWN_GRACE_SECONDS = 10.0

_TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
# Any control character (CR and LF above all) in a header value would let text become headers.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")
_CONTROL_RUN = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")
_ADDRESS = re.compile(r"^[^@\s<>(),;:\"\[\]\\]+@[^@\s<>(),;:\"\[\]\\]+$")
_EMAIL_IN_TEXT = re.compile(r"[^\s<>()\[\],;:\"']+@[^\s<>()\[\],;:\"']+")
MAX_ADDRESS_LENGTH = 320
MAX_SUBJECT_LENGTH = 250


class InvalidRecipient(ValueError):
    """The `to` of a message is not exactly one plain email address (or tries to add headers)."""


def check_recipient(to: str) -> str:
    """`to` if it is one address (`someone@example.edu` or `Name <someone@example.edu>`), else
    InvalidRecipient. Refuses CR/LF and every other control character, and lists of addresses."""
    if not isinstance(to, str) or not to.strip():
        raise InvalidRecipient("the recipient is empty")
    if _CONTROL.search(to):
        raise InvalidRecipient("the recipient contains control characters (CR, LF, …)")
    to = to.strip()
    if len(to) > MAX_ADDRESS_LENGTH:
        raise InvalidRecipient(f"the recipient is longer than {MAX_ADDRESS_LENGTH} characters")
    name, address = parseaddr(to)
    if not address or not _ADDRESS.match(address):
        raise InvalidRecipient("the recipient is not one email address")
    # parseaddr quietly keeps the first of several addresses: make sure nothing else was there.
    bare = to if to == address else None
    if bare is None and not re.fullmatch(r"(?:\"[^\"]*\"|[^<>\",;]*)\s*<" + re.escape(address) + r">", to):
        raise InvalidRecipient("the recipient is not one email address")
    return to


def clean_header_text(value: str, limit: int = MAX_SUBJECT_LENGTH) -> str:
    """A single-line header value: control characters (CR, LF, tabs, …) become one space."""
    text = _CONTROL_RUN.sub(" ", value).strip()
    text = re.sub(r" {2,}", " ", text)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _redact_addresses(text: str) -> str:
    return _EMAIL_IN_TEXT.sub("<address>", text)


def describe_failure(exc: BaseException) -> str:
    """A short, address-free reason for a failed attempt (safe for /health, which is public)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in exc.recipients.values()})
        reason = f"recipient refused ({', '.join(str(code) for code in codes)})"
    elif isinstance(exc, smtplib.SMTPResponseException):
        message = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        reason = f"{exc.smtp_code} {message}"
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    else:
        reason = str(exc)
    reason = _redact_addresses(clean_header_text(reason, 200))
    return f"{exc.__class__.__name__}: {reason}" if reason else exc.__class__.__name__


def is_permanent(exc: BaseException) -> bool:
    """A failure that another attempt cannot fix: a 5xx reply, a refused login, a missing
    STARTTLS, a certificate that does not verify. Network errors and 4xx replies are temporary."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(500 <= code < 600 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 500 <= exc.smtp_code < 600
    if isinstance(exc, (smtplib.SMTPNotSupportedError, ssl.SSLCertVerificationError)):
        return True
    return False


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    subject: str
    text: str
    html: str | None
    template: str

    def to_message(self, sender: str) -> EmailMessage:
        to = check_recipient(self.to)
        message = EmailMessage()
        message["From"] = clean_header_text(sender, MAX_ADDRESS_LENGTH)
        message["To"] = to
        message["Subject"] = clean_header_text(self.subject)
        message["Date"] = formatdate(localtime=False)
        domain = parseaddr(sender)[1].rpartition("@")[2].strip() or "a3e.local"
        message["Message-ID"] = make_msgid(domain=domain if _ADDRESS.match(f"x@{domain}") else "a3e.local")
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
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
        path = self.outbox / name
        # Written under a private name, then renamed into place: whoever reads *.eml never sees a
        # half-written message. The body may hold a reset or invitation token: owner-only file.
        partial = self.outbox / f".{name}.partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(bytes(message))
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        # Recipient, subject and where to find it; never the body.
        logger.info("email to %s (%s) written to %s", message["To"], message["Subject"], path)


class SMTPBackend:
    name = "smtp"

    def __init__(self, settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = settings.smtp_host or ""
        self.port = settings.smtp_port
        self.security = settings.smtp_security
        self.timeout = settings.smtp_timeout
        self.username = settings.smtp_username
        self.password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        # Certificates are verified against the system's CAs unless a context is given.
        self.ssl_context = ssl_context

    def _context(self) -> ssl.SSLContext:
        return self.ssl_context or ssl.create_default_context()

    def deliver(self, message: EmailMessage) -> None:
        if self.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._context())
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with client:
            if self.security == "starttls":
                client.starttls(context=self._context())
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


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class EmailSender:
    """Renders templates and delivers them in the background. One per app (`app.state.email`)."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend | None = None,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        *,
        templates_dir: Path | None = None,
        max_workers: int = 2,
    ) -> None:
        self.settings = settings
        self.backend = backend or backend_for(settings)
        self.retry_delays = tuple(retry_delays)
        self.templates_dir = Path(templates_dir) if templates_dir is not None else TEMPLATES
        self.max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: set[Future[None]] = set()
        # Counters, for health() and the logs; changed under _lock.
        self.sent = 0
        self.failures = 0
        self.retries = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.last_error_at: str | None = None
        self.last_success_at: str | None = None
        self._last_outcome_failed = False

    @cached_property
    def _templates(self):
        from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

        return Environment(
            loader=FileSystemLoader(self.templates_dir),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, template: str, to: str, context: dict[str, Any]) -> OutgoingEmail:
        """The message, rendered and checked: InvalidRecipient for a bad `to`, ValueError for a
        bad template name, jinja2 errors for a missing template or variable."""
        from jinja2 import TemplateNotFound

        if not _TEMPLATE_NAME.match(template):
            raise ValueError(f"invalid email template name {template!r}")
        to = check_recipient(to)
        values = {"app_url": self.settings.app_url, "product": "A³E", **context}
        subject = clean_header_text(self._templates.get_template(f"{template}.subject.txt").render(values))
        text = self._templates.get_template(f"{template}.txt").render(values)
        try:
            html: str | None = self._templates.get_template(f"{template}.html").render(values)
        except TemplateNotFound:
            html = None
        return OutgoingEmail(to=to, subject=subject, text=text, html=html, template=template)

    def send(self, template: str, to: str, context: dict[str, Any]) -> Future[None]:
        """Render and check now (an error here is the caller's), deliver in the background.

        The future completes when delivery succeeded or was given up (it never raises: failures
        are logged and counted)."""
        email = self.render(template, to, context)
        message = email.to_message(self.settings.email_from)
        with self._lock:
            if self._pool is None:
                self._stop = threading.Event()
                self._pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="a3e-email")
            future = self._pool.submit(self._deliver_with_retries, email, message, self._stop)
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _deliver_with_retries(self, email: OutgoingEmail, message: EmailMessage, stop: threading.Event) -> None:
        attempts = 1 + len(self.retry_delays)
        attempt = 0
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                # Waits the delay, but wakes at once when the app shuts down.
                if stop.wait(self.retry_delays[attempt - 2]):
                    self._gave_up(email, attempt - 1, "the application is shutting down")
                    return
                with self._lock:
                    self.retries += 1
            try:
                self.backend.deliver(message)
            except Exception as exc:  # any SMTP or network error: retry, then give up loudly
                reason = describe_failure(exc)
                with self._lock:
                    self.last_error, self.last_error_at = reason, _now_iso()
                permanent = is_permanent(exc)
                logger.warning(
                    "email to %s (%s), attempt %d of %d failed%s: %s",
                    email.to, email.template, attempt, attempts, " permanently" if permanent else "", reason,
                )
                if permanent:
                    break
                continue
            with self._lock:
                if isinstance(self.backend, DroppingBackend):
                    self.dropped += 1
                else:
                    self.sent += 1
                    self.last_success_at = _now_iso()
                self._last_outcome_failed = False
            return
        self._gave_up(email, attempt, self.last_error or "unknown error")

    def _gave_up(self, email: OutgoingEmail, attempts: int, reason: str) -> None:
        with self._lock:
            self.failures += 1
            self._last_outcome_failed = True
        logger.error(
            "email to %s (%s) not delivered after %d attempt%s: %s",
            email.to, email.template, attempts, "" if attempts == 1 else "s", reason,
        )

    @cached_property
    def templates_found(self) -> bool:
        """Whether any template is installed (a package built without them cannot send at all)."""
        return self.templates_dir.is_dir() and any(self.templates_dir.glob("*.subject.txt"))

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def health(self) -> dict[str, Any]:
        """For /health: the backend, the counters and the last error (no address, no secret).

        status: `ok`; `failing` when the most recent message was finally not delivered (it turns
        `ok` again with the next delivery) or when no template is installed; `not_configured` in
        production without SMTP_HOST. Never calls the mail server."""
        templates_found = self.templates_found
        with self._lock:
            if isinstance(self.backend, DroppingBackend):
                status = "not_configured"
            elif self._last_outcome_failed or not templates_found:
                status = "failing"
            else:
                status = "ok"
            report: dict[str, Any] = {
                "status": status,
                "backend": self.backend.name,
                "sent": self.sent,
                "failures": self.failures,
                "retries": self.retries,
                "pending": len(self._pending),
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
                "last_success_at": self.last_success_at,
            }
            if status == "not_configured":
                report["dropped"] = self.dropped
                report["detail"] = "SMTP_HOST is not set: emails are not sent"
            elif not templates_found:
                report["detail"] = "no email templates are installed"
            return report

    def shutdown(self, wait: bool = True, timeout: float | None = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop: no more retries; messages not yet tried get their one attempt. With `wait`, block
        up to `timeout` seconds for them, then abandon the rest (logged as not delivered)."""
        with self._lock:
            pool, self._pool = self._pool, None
            pending = set(self._pending)
            stop = self._stop
        if pool is None:
            return
        stop.set()
        if not wait:
            pool.shutdown(wait=False)
            return
        _, not_done = concurrent.futures.wait(pending, timeout=timeout)
        abandoned = sum(1 for future in not_done if future.cancel())
        if abandoned:
            with self._lock:
                self.failures += abandoned
                self._last_outcome_failed = True
            logger.error("%d email%s not delivered: the application shut down first", abandoned, "" if abandoned == 1 else "s")
        pool.shutdown(wait=False, cancel_futures=True)
