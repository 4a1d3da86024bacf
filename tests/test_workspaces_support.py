"""Helpers shared by the workspace, invitation, API key and isolation tests (no tests here).

Kept in a `test_workspaces*` module because those are the test files this part of the code owns.
"""

from __future__ import annotations

import email
import email.policy
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from a3e.audit.models import AuditEvent
from a3e.core.models import utcnow
from a3e.workspaces.models import Invitation


def invite(api, inviter, workspace_id: str, email_address: str, role: str = "viewer") -> dict:
    response = api.post(
        f"/api/v1/workspaces/{workspace_id}/invitations", json={"email": email_address, "role": role}, headers=inviter.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def accept(api, person, token: str):
    return api.post(f"/api/v1/invitations/{token}/accept", headers=person.headers)


def join(api, inviter, workspace_id: str, person, role: str) -> None:
    """`person` becomes a member with `role`, the way people do: invited, then accepting."""
    invitation = invite(api, inviter, workspace_id, person.email, role)
    response = accept(api, person, invitation["token"])
    assert response.status_code == 200, response.text
    assert response.json()["role"] == role


def create_key(api, person, workspace_id: str, scope: str = "read", name: str = "integration") -> dict:
    response = api.post(
        f"/api/v1/workspaces/{workspace_id}/api-keys", json={"name": name, "scope": scope}, headers=person.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response) -> dict:
    return response.json()["error"]


def audit_events(api, workspace_id: str | uuid.UUID | None = None, action: str | None = None) -> list[AuditEvent]:
    """The audit_events rows, read from the table directly (oldest first)."""
    statement = select(AuditEvent).order_by(AuditEvent.id)
    if workspace_id is not None:
        statement = statement.where(AuditEvent.workspace_id == uuid.UUID(str(workspace_id)))
    if action is not None:
        statement = statement.where(AuditEvent.action == action)
    with api.app.state.database.session() as session:
        return list(session.scalars(statement))


def expire_invitation(api, invitation_id: str) -> None:
    with api.app.state.database.session() as session:
        invitation = session.get(Invitation, uuid.UUID(invitation_id))
        invitation.expires_at = utcnow() - timedelta(minutes=1)
        session.commit()


def outbox_dir(api) -> Path:
    return Path(api.app.state.settings.data_dir) / "outbox"


def read_outbox(api) -> list[email.message.EmailMessage]:
    directory = outbox_dir(api)
    if not directory.exists():
        return []
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted(directory.glob("*.eml"))
    ]


INVITATION_SUBJECT = "invited you"


def wait_for_emails(
    api, count: int, *, to: str | None = None, subject: str | None = INVITATION_SUBJECT, timeout: float = 10.0
) -> list[Any]:
    """The outbox's messages (to `to`, with `subject` in their subject: by default invitations)
    once there are at least `count` of them, or after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        messages = [
            m
            for m in read_outbox(api)
            if m["To"] and m["Subject"]  # a message still being written is read on the next round
            and (to is None or m["To"].lower() == to.lower()) and (subject is None or subject in m["Subject"])
        ]
        if len(messages) >= count or time.monotonic() > deadline:
            return messages
        time.sleep(0.05)


def text_of(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def html_of(message) -> str | None:
    part = message.get_body(preferencelist=("html",))
    return part.get_content() if part is not None else None
