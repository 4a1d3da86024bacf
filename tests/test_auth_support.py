"""Helpers shared by the accounts tests (no tests here).

Kept in a `test_auth*` module because those are the test files the accounts code owns.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from a3e.audit.models import AuditEvent
from tests.conftest import CHEAP_ARGON2, DEFAULT_PASSWORD, wait_ready

AUTH = "/api/v1/auth"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


def new_email(prefix: str = "person") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.edu"


@dataclass
class Account:
    id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.access_token)


def register(client, email_address: str, password: str = DEFAULT_PASSWORD, name: str = "Test Person", **headers):
    return client.post(
        f"{AUTH}/register", json={"email": email_address, "password": password, "name": name}, headers=headers
    )


def login(client, email_address: str, password: str = DEFAULT_PASSWORD, **headers):
    return client.post(f"{AUTH}/login", json={"email": email_address, "password": password}, headers=headers)


def sign_up(
    client, email_address: str | None = None, password: str = DEFAULT_PASSWORD, name: str = "Test Person"
) -> Account:
    """Register, log in and read the id from GET /me (registration never returns it)."""
    email_address = email_address or new_email()
    registered = register(client, email_address, password, name)
    assert registered.status_code == 201, registered.text
    tokens = login(client, email_address, password)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    me = client.get(f"{AUTH}/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    return Account(
        me.json()["id"], email_address.strip().lower(), password, body["access_token"], body["refresh_token"]
    )


# ---- the development outbox ----------------------------------------------------------------


def _messages(outbox: Path) -> list[EmailMessage]:
    if not outbox.is_dir():
        return []
    found = []
    for path in sorted(outbox.glob("*.eml")):
        try:
            found.append(email.message_from_bytes(path.read_bytes(), policy=email.policy.default))
        except OSError:  # pragma: no cover - being written
            continue
    return found


def outbox_messages(
    data_dir: Path, *, to: str | None = None, subject: str | None = None, count: int = 1, timeout: float = 10.0
) -> list[EmailMessage]:
    """Wait until at least `count` matching messages are in the outbox (delivery is in the
    background), then return every matching one."""
    deadline = time.monotonic() + timeout
    while True:
        matching = [
            message
            for message in _messages(data_dir / "outbox")
            if (to is None or message["To"] == to)
            and (subject is None or subject.lower() in message["Subject"].lower())
        ]
        if len(matching) >= count or time.monotonic() > deadline:
            return matching
        time.sleep(0.02)


def settle_outbox(data_dir: Path, pause: float = 0.3) -> None:
    """Give background delivery a moment, for tests asserting that nothing (more) was sent."""
    time.sleep(pause)


def text_of(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def html_of(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("html",)).get_content()


def token_from(message: EmailMessage, path: str) -> str:
    match = re.search(re.escape(path) + r"\?token=([A-Za-z0-9_\-%.~]+)", text_of(message))
    assert match, text_of(message)
    return match.group(1)


# ---- the database --------------------------------------------------------------------------


def db(client):
    return client.app.state.database.session()


def audit_events(client, action: str | None = None) -> list[AuditEvent]:
    with db(client) as session:
        statement = select(AuditEvent).order_by(AuditEvent.id)
        if action:
            statement = statement.where(AuditEvent.action == action)
        return list(session.scalars(statement))


# ---- apps with their own settings ----------------------------------------------------------


@pytest.fixture
def make_client(make_settings, database_url):
    """`make_client(peer=("127.0.0.1", 50000), **settings)`: a ready TestClient on this test's
    database, whose peer address is `peer` (the default TestClient peer is "testclient")."""
    from fastapi.testclient import TestClient

    from a3e.app import create_app

    opened: list[Any] = []

    def make(*, peer: tuple[str, int] | None = ("127.0.0.1", 50000), **overrides):
        settings = make_settings(database_url=database_url, **{**CHEAP_ARGON2, **overrides})
        app = create_app(settings)
        kwargs = {"client": peer} if peer is not None else {}
        client = TestClient(app, raise_server_exceptions=False, **kwargs)
        client.__enter__()
        opened.append(client)
        wait_ready(client)
        return client

    yield make
    for client in reversed(opened):
        client.__exit__(None, None, None)
