"""Outgoing email against a real SMTP server (aiosmtpd) on loopback: both parts arrive, delivery
is off the request path, temporary failures are retried and permanent ones are not, every
undelivered message is logged and counted, and headers cannot be injected. Also the development
outbox (a parseable .eml, nothing of the body in the log) and production without SMTP (nothing
written anywhere)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import stat
import subprocess
import threading
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from a3e.email.service import (
    DevelopmentBackend,
    DroppingBackend,
    EmailSender,
    InvalidRecipient,
    SMTPBackend,
    backend_for,
    check_recipient,
    clean_header_text,
)
from tests.conftest import free_port

pytest.importorskip("aiosmtpd")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

TOKEN = "tok_Zq8xN3vL0pR5sT7uW9yA"  # stands for a reset or invitation token in a body
FROM = "A3E Test <no-reply@a3e.test>"
TO = "dana@example.edu"
WAIT = 10.0  # the most any delivery here may take (seconds)


# ---------------------------------------------------------------------------------------------
# Templates of our own, in a temporary directory: nothing test-only ships with the package.


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    directory = tmp_path / "email-templates"
    directory.mkdir()
    (directory / "a3e_test_welcome.subject.txt").write_text("Welcome to {{ workspace }}\n")
    (directory / "a3e_test_welcome.txt").write_text("Hello {{ name }},\nyour link: {{ app_url }}/accept/{{ token }}\n")
    (directory / "a3e_test_welcome.html").write_text(
        "<p>Hello {{ name }},</p><p><a href=\"{{ app_url }}/accept/{{ token }}\">Accept</a></p>\n"
    )
    (directory / "a3e_test_plain.subject.txt").write_text("Just text\n")
    (directory / "a3e_test_plain.txt").write_text("Only a plain part, {{ name }}.\n")
    return directory


CONTEXT = {"workspace": "Example College", "name": "Dana <Admin>", "token": TOKEN}


# ---------------------------------------------------------------------------------------------
# A real SMTP server on 127.0.0.1


class Recorder:
    """An aiosmtpd handler: collects what arrives; answers with `replies` in turn (then 250),
    sleeping `delay` seconds before answering DATA."""

    def __init__(self, replies: list[str] | None = None, delay: float = 0.0) -> None:
        self.replies = list(replies or [])
        self.delay = delay
        self.attempts = 0
        self.envelopes: list = []
        self.messages: list[EmailMessage] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server, session, envelope) -> str:
        self.attempts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.replies:
            return self.replies.pop(0)
        self.envelopes.append(envelope)
        self.messages.append(BytesParser(policy=policy.default).parsebytes(envelope.original_content or envelope.content))
        self.arrived.set()
        return "250 2.0.0 OK"


@pytest.fixture
def smtp_server():
    """Start servers with `smtp_server(handler, **aiosmtpd options)`; all stopped at the end."""
    started: list[Controller] = []

    def start(handler: Recorder, **options) -> int:
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, server_hostname="a3e-test-smtp", **options)
        controller.start()
        started.append(controller)
        return port

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def sender_for(make_settings, templates):
    """EmailSender(s) delivering to 127.0.0.1:port, with short retry delays; shut down at the end."""
    senders: list[EmailSender] = []

    def make(port: int, *, retry_delays=(0.05, 0.05), ssl_context=None, **settings) -> EmailSender:
        values = {
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_security": "none",
            "smtp_timeout": 5,
            "email_from": FROM,
            **settings,
        }
        configured = make_settings(**values)
        backend = SMTPBackend(configured, ssl_context=ssl_context)
        sender = EmailSender(configured, backend, retry_delays=retry_delays, templates_dir=templates)
        senders.append(sender)
        return sender

    yield make
    for sender in senders:
        sender.shutdown(wait=True, timeout=5)


def body_of(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    return part.get_content()


# ---------------------------------------------------------------------------------------------
# Delivery over SMTP


def test_plain_text_and_html_arrive_with_subject_from_and_to(smtp_server, sender_for):
    handler = Recorder()
    sender = sender_for(smtp_server(handler))
    assert sender.backend.name == "smtp"
    sender.send("a3e_test_welcome", TO, CONTEXT).result(timeout=WAIT)
    [message] = handler.messages
    assert message["Subject"] == "Welcome to Example College"
    assert message["From"] == FROM
    assert message["To"] == TO
    assert message["Message-ID"].endswith("@a3e.test>") and message["Date"]
    assert handler.envelopes[0].rcpt_tos == [TO]
    assert message.get_content_type() == "multipart/alternative"
    text, html = body_of(message, "plain"), body_of(message, "html")
    assert f"http://localhost:8000/accept/{TOKEN}" in text and "Hello Dana <Admin>," in text  # text is not escaped
    assert f'href="http://localhost:8000/accept/{TOKEN}"' in html and "Hello Dana &lt;Admin&gt;," in html  # HTML is
    health = sender.health()
    assert health["status"] == "ok" and health["backend"] == "smtp" and health["sent"] == 1 and health["failures"] == 0


def test_a_template_without_html_sends_one_plain_part(smtp_server, sender_for):
    handler = Recorder()
    sender = sender_for(smtp_server(handler))
    sender.send("a3e_test_plain", f"Dana Example <{TO}>", {"name": "Dana"}).result(timeout=WAIT)
    [message] = handler.messages
    assert message.get_content_type() == "text/plain"
    assert message.get_content().replace("\r\n", "\n") == "Only a plain part, Dana.\n"  # CRLF on the wire
    assert handler.envelopes[0].rcpt_tos == [TO]


def test_send_returns_before_delivery_completes(smtp_server, sender_for):
    handler = Recorder(delay=1.0)
    sender = sender_for(smtp_server(handler))
    started = time.perf_counter()
    future = sender.send("a3e_test_welcome", TO, CONTEXT)
    returned = time.perf_counter() - started
    assert returned < 0.2, f"send() took {returned:.3f}s"
    assert not future.done() and not handler.arrived.is_set()
    future.result(timeout=WAIT)
    assert time.perf_counter() - started >= 1.0
    assert len(handler.messages) == 1


def test_a_temporary_failure_is_retried_until_accepted(smtp_server, sender_for, caplog):
    caplog.set_level(logging.INFO, logger="a3e.email")
    handler = Recorder(replies=["451 4.3.0 Try again later"])
    sender = sender_for(smtp_server(handler), retry_delays=(0.05, 0.05))
    sender.send("a3e_test_welcome", TO, CONTEXT).result(timeout=WAIT)
    assert handler.attempts == 2 and len(handler.messages) == 1
    health = sender.health()
    assert (health["sent"], health["failures"], health["retries"]) == (1, 0, 1)
    assert health["status"] == "ok" and "451" in health["last_error"]
    assert "attempt 1 of 3 failed" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_delivery_gives_up_after_the_configured_attempts(smtp_server, sender_for, caplog):
    caplog.set_level(logging.INFO, logger="a3e.email")
    handler = Recorder(replies=["451 4.3.0 Try again later"] * 10)
    sender = sender_for(smtp_server(handler), retry_delays=(0.02, 0.02, 0.02))
    sender.send("a3e_test_welcome", TO, CONTEXT).result(timeout=WAIT)  # the future itself never raises
    assert handler.attempts == 4 and handler.messages == []
    assert sender.failures == 1
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1 and "not delivered after 4 attempts" in errors[0].getMessage()
    health = sender.health()
    assert health["status"] == "failing" and health["failures"] == 1 and health["sent"] == 0
    assert health["last_error"].startswith("SMTPDataError: 451") and health["last_error_at"]
    # A later success clears the status, not the counters.
    handler.replies.clear()
    sender.send("a3e_test_welcome", TO, CONTEXT).result(timeout=WAIT)
    assert sender.health()["status"] == "ok" and sender.health()["failures"] == 1


def test_a_permanent_failure_is_not_retried_and_the_reason_names_no_address(smtp_server, sender_for, caplog):
    caplog.set_level(logging.INFO, logger="a3e.email")
    handler = Recorder(replies=[f"550 5.1.1 <{TO}>: mailbox unavailable"] * 3)
    sender = sender_for(smtp_server(handler), retry_delays=(0.02, 0.02))
    sender.send("a3e_test_welcome", TO, CONTEXT).result(timeout=WAIT)
    assert handler.attempts == 1 and sender.failures == 1
    health = sender.health()
    assert "550" in health["last_error"] and TO not in health["last_error"]  # /health is public
    assert "not delivered after 1 attempt:" in caplog.text


def test_an_unreachable_server_is_retried_then_given_up(sender_for, caplog):
    caplog.set_level(logging.INFO, logger="a3e.email")
    sender = sender_for(free_port(), retry_delays=(0.02,))  # nothing listens there
    sender.send("a3e_test_welcome", TO, CONTEXT).result(timeout=WAIT)
    assert sender.failures == 1 and sender.retries == 1
    assert "ConnectionRefusedError" in sender.health()["last_error"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_without_tls(smtp_server, sender_for):
    """SMTP_SECURITY=none with SMTP_USERNAME/PASSWORD (aiosmtpd allowing AUTH without TLS)."""
    logins: list[tuple[str, str]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            logins.append((auth_data.login.decode(), auth_data.password.decode()))
            if (auth_data.login, auth_data.password) == (b"mailer", b"s3cret-pass"):
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    handler = Recorder()
    port = smtp_server(handler, authenticator=authenticator, auth_required=True, auth_require_tls=False)
    sender = sender_for(port, smtp_username="mailer", smtp_password="s3cret-pass")
    sender.send("a3e_test_welcome", TO, CONTEXT).result(timeout=WAIT)
    assert len(handler.messages) == 1 and logins[-1] == ("mailer", "s3cret-pass")

    # A refused login is permanent: one attempt, counted, and the password is nowhere in the report.
    wrong = sender_for(port, smtp_username="mailer", smtp_password="wrong-password", retry_delays=(0.02, 0.02))
    wrong.send("a3e_test_welcome", TO, CONTEXT).result(timeout=WAIT)
    assert wrong.failures == 1 and len(handler.messages) == 1
    assert "SMTPAuthenticationError: 535" in wrong.health()["last_error"]
    assert "wrong-password" not in str(wrong.health())


# ---------------------------------------------------------------------------------------------
# TLS: a self-signed certificate made for the test (by the openssl command; the `cryptography`
# package is not among the test dependencies).


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed: TLS is not tested")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def _login_ok(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"mailer", b"s3cret-pass")
    return AuthResult(success=ok, handled=False if not ok else None)


def test_starttls_with_login(smtp_server, sender_for, certificate):
    cert, key = certificate
    handler = Recorder()
    port = smtp_server(
        handler, tls_context=_server_context(cert, key), require_starttls=True, authenticator=_login_ok, auth_required=True
    )
    trusted = ssl.create_default_context(cafile=str(cert))  # verification stays on: we trust this certificate
    sender = sender_for(port, smtp_security="starttls", smtp_username="mailer", smtp_password="s3cret-pass", ssl_context=trusted)
    sender.send("a3e_test_welcome", TO, CONTEXT).result(timeout=WAIT)
    assert len(handler.messages) == 1
    [message] = handler.messages
    assert message["Subject"] == "Welcome to Example College"

    # With the system's CAs the self-signed certificate is refused, once, and not retried.
    untrusting = sender_for(port, smtp_security="starttls", smtp_username="mailer", smtp_password="s3cret-pass")
    untrusting.send("a3e_test_welcome", TO, CONTEXT).result(timeout=WAIT)
    assert untrusting.failures == 1 and untrusting.retries == 0
    assert "SSLCertVerificationError" in untrusting.health()["last_error"]


def test_implicit_tls(smtp_server, sender_for, certificate):
    cert, key = certificate
    handler = Recorder()
    port = smtp_server(handler, ssl_context=_server_context(cert, key))
    sender = sender_for(port, smtp_security="ssl", ssl_context=ssl.create_default_context(cafile=str(cert)))
    sender.send("a3e_test_welcome", TO, CONTEXT).result(timeout=WAIT)
    assert len(handler.messages) == 1


# ---------------------------------------------------------------------------------------------
# Header injection


@pytest.mark.parametrize(
    "to",
    [
        f"{TO}\r\nBcc: thief@example.com",
        f"{TO}\nBcc: thief@example.com",
        f"{TO}\rBcc: thief@example.com",
        f"{TO}, thief@example.com",
        f"{TO}; thief@example.com",
        f"Dana <{TO}>, thief@example.com",
        f"thief@example.com <{TO}>",
        "not-an-address",
        "",
        "a@b@c",
        f"{TO}\x00",
        "x" * 320 + "@example.edu",
    ],
)
def test_a_recipient_that_could_inject_headers_is_refused(smtp_server, sender_for, to):
    handler = Recorder()
    sender = sender_for(smtp_server(handler))
    with pytest.raises(InvalidRecipient):
        sender.send("a3e_test_welcome", to, CONTEXT)
    with pytest.raises(ValueError):  # InvalidRecipient is a ValueError: the caller's 422 or bug
        sender.render("a3e_test_welcome", to, CONTEXT)
    assert sender.pending == 0 and handler.attempts == 0


def test_a_subject_built_from_user_input_cannot_add_headers(smtp_server, sender_for):
    handler = Recorder()
    sender = sender_for(smtp_server(handler))
    hostile = {**CONTEXT, "workspace": "Evil\r\nBcc: thief@example.com\r\nX-Injected: yes"}
    sender.send("a3e_test_welcome", TO, hostile).result(timeout=WAIT)
    [message] = handler.messages
    assert message["Subject"] == "Welcome to Evil Bcc: thief@example.com X-Injected: yes"
    assert message["Bcc"] is None and message["X-Injected"] is None
    assert handler.envelopes[0].rcpt_tos == [TO]


def test_header_helpers():
    assert check_recipient(f"  {TO} ") == TO
    assert check_recipient(f'"Doe, Dana" <{TO}>') == f'"Doe, Dana" <{TO}>'
    assert clean_header_text("a\r\n\tb\x00c  d") == "a b c d"
    assert len(clean_header_text("x" * 1000)) == 250


def test_template_names_are_checked(sender_for):
    sender = sender_for(free_port())
    for name in ("../etc/passwd", "A3E", "", "a3e_test_welcome.txt"):
        with pytest.raises(ValueError):
            sender.render(name, TO, CONTEXT)


# ---------------------------------------------------------------------------------------------
# Development outbox and production without SMTP


def test_development_writes_a_parseable_eml_and_logs_no_body(make_settings, templates, data_dir, caplog):
    caplog.set_level(logging.DEBUG)
    settings = make_settings(email_from=FROM)
    backend = backend_for(settings)
    assert isinstance(backend, DevelopmentBackend) and backend.outbox == data_dir / "outbox"
    sender = EmailSender(settings, backend, templates_dir=templates)
    try:
        sender.send("a3e_test_welcome", TO, CONTEXT).result(timeout=WAIT)
    finally:
        sender.shutdown()
    [path] = list((data_dir / "outbox").glob("*.eml"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the token
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert message["To"] == TO and message["From"] == FROM and message["Subject"] == "Welcome to Example College"
    assert TOKEN in body_of(message, "plain") and TOKEN in body_of(message, "html")
    assert TOKEN not in caplog.text and "your link" not in caplog.text and "Accept" not in caplog.text
    assert f"email to {TO} (Welcome to Example College) written to {path}" in caplog.text
    assert sender.health()["backend"] == "development" and sender.health()["sent"] == 1


def test_production_without_smtp_writes_nothing_and_says_so(make_settings, templates, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    settings = make_settings(environment_name="production", email_from=FROM)
    backend = backend_for(settings)
    assert isinstance(backend, DroppingBackend)
    before = sorted(p for p in tmp_path.rglob("*"))
    sender = EmailSender(settings, backend, templates_dir=templates)
    try:
        sender.send("a3e_test_welcome", TO, CONTEXT).result(timeout=WAIT)
    finally:
        sender.shutdown()
    assert sorted(p for p in tmp_path.rglob("*")) == before  # no outbox, no file at all
    assert TOKEN not in caplog.text
    assert "not sent: SMTP_HOST is not configured" in caplog.text
    health = sender.health()
    assert health["status"] == "not_configured" and health["backend"] == "none"
    assert health["dropped"] == 1 and health["sent"] == 0


def test_smtp_is_chosen_whenever_smtp_host_is_set(make_settings):
    assert isinstance(backend_for(make_settings(smtp_host="127.0.0.1")), SMTPBackend)
    assert isinstance(backend_for(make_settings(smtp_host="127.0.0.1", environment_name="production")), SMTPBackend)


# ---------------------------------------------------------------------------------------------
# Shutdown


def test_shutdown_is_bounded_and_counts_what_was_abandoned(smtp_server, sender_for, caplog):
    caplog.set_level(logging.INFO, logger="a3e.email")
    handler = Recorder(replies=["451 4.3.0 Try again later"] * 10)
    sender = sender_for(smtp_server(handler), retry_delays=(30.0,))
    sender.send("a3e_test_welcome", TO, CONTEXT)
    deadline = time.monotonic() + WAIT
    while handler.attempts < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handler.attempts == 1
    started = time.perf_counter()
    sender.shutdown(wait=True, timeout=5)
    assert time.perf_counter() - started < 2.0  # the 30 s retry wait ends at once
    assert sender.failures == 1 and sender.retries == 0 and handler.attempts == 1
    assert "the application is shutting down" in caplog.text
    # A sender used again after shutdown works (tests and CLI commands reuse one).
    handler.replies.clear()
    sender.send("a3e_test_welcome", TO, CONTEXT).result(timeout=WAIT)
    assert len(handler.messages) == 1


def test_the_app_has_a_sender_and_its_health(make_settings):
    from a3e.app import create_app

    app = create_app(make_settings())
    assert isinstance(app.state.email, EmailSender)
    report = app.state.email.health()
    assert report["backend"] == "development" and report["pending"] == 0 and report["failures"] == 0
    # The shipped templates are there (when this fails on an installed package, check package-data).
    assert app.state.email.templates_found and report["status"] == "ok"


def test_missing_templates_show_in_health(make_settings, tmp_path):
    sender = EmailSender(make_settings(), templates_dir=tmp_path / "not-there")
    report = sender.health()
    assert report["status"] == "failing" and report["detail"] == "no email templates are installed"


# The email.send job (email from background jobs)


def test_the_email_job_delivers_a_built_in_template_and_waits_for_the_outcome(make_settings, data_dir):
    from a3e.email.jobs import send_email
    from a3e.jobs.registry import JobContext, spec_for

    settings = make_settings(email_from=FROM)
    context = JobContext(settings, database=None, job="email.send", job_id="t1")  # type: ignore[arg-type]
    send_email(context, template="invitation_sent", to=TO, context_values={
        "inviter_name": "Ada", "inviter_email": "ada@example.edu", "workspace_name": "Example College",
        "role": "editor", "email": TO, "accept_url": "https://a3e.example.edu/accept", "expires_at": "1 Dec 2026",
    })
    [path] = list((data_dir / "outbox").glob("*.eml"))  # delivered before the job returned
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert message["To"] == TO and "Example College" in body_of(message, "plain")
    assert spec_for("email.send").retries == 0


def test_the_email_job_fails_at_once_on_a_bad_template_or_address(make_settings, data_dir):
    from jinja2 import TemplateNotFound

    from a3e.email.jobs import send_email
    from a3e.jobs.registry import JobContext

    context = JobContext(make_settings(email_from=FROM), database=None, job="email.send", job_id="t2")  # type: ignore[arg-type]
    with pytest.raises(TemplateNotFound):
        send_email(context, template="no_such_template", to=TO, context_values={})
    with pytest.raises(InvalidRecipient):
        send_email(context, template="invitation_sent", to="not an address\r\nBcc: x@y.z", context_values={})
    assert not (data_dir / "outbox").exists() or not list((data_dir / "outbox").glob("*.eml"))
