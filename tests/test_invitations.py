"""Invitations: created by admins (owners for the owner role), emailed with a single-use link
that expires in 7 days, accepted by the person they were sent to, resent with a new token,
revoked; the token is shown once and stored only as a digest."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from a3e.core.models import utcnow
from a3e.core.security import token_digest
from a3e.workspaces.models import Invitation
from a3e.workspaces.service import after_commit
from tests.test_workspaces_support import (
    accept,
    audit_events,
    bearer,
    create_key,
    error_of,
    expire_invitation,
    html_of,
    invite,
    join,
    text_of,
    wait_for_emails,
)


def parse_time(value: str):
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_an_invitation_is_emailed_and_its_token_shown_once(api, make_person, make_workspace):
    alice = make_person(name="Alice Adams")
    workspace = make_workspace(alice, "Northfield College")
    before = utcnow()
    response = api.post(
        f"/api/v1/workspaces/{workspace['id']}/invitations",
        json={"email": "Bob@Example.EDU", "role": "editor"},
        headers=alice.headers,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    token = created["token"]
    app_url = api.app.state.settings.app_url
    assert created["accept_url"] == f"{app_url}/invitations/{token}"
    assert created["email"] == "bob@example.edu" and created["role"] == "editor" and created["status"] == "pending"
    assert created["invited_by_id"] == alice.id and created["send_count"] == 1
    expires = parse_time(created["expires_at"])
    assert timedelta(days=7) - timedelta(minutes=1) <= expires - before <= timedelta(days=7, minutes=1)

    # Stored as a digest, never in the clear.
    with api.app.state.database.session() as session:
        stored = session.get(Invitation, uuid.UUID(created["id"]))
        assert stored.token_hash == token_digest(token) and token not in stored.token_hash

    # Listed without the token.
    listed = api.get(f"/api/v1/workspaces/{workspace['id']}/invitations", headers=alice.headers).json()
    assert listed["total"] == 1
    (item,) = listed["items"]
    assert item["id"] == created["id"] and "token" not in item and "accept_url" not in item
    assert token not in str(listed)

    # The invitee gets the link by email (the development outbox), in text and HTML.
    (message,) = wait_for_emails(api, 1, to="bob@example.edu")
    assert "Alice Adams" in message["Subject"] and "Northfield College" in message["Subject"]
    assert created["accept_url"] in text_of(message)
    assert "editor" in text_of(message)
    assert f'href="{created["accept_url"]}"' in html_of(message)

    # Audited, without the token.
    (event,) = audit_events(api, workspace["id"], "invitation.created")
    assert (event.target_type, event.target_id) == ("invitation", created["id"])
    assert event.details == {"email": "bob@example.edu", "role": "editor"}
    for event in audit_events(api):
        assert token not in str(event.details)


def test_accepting_makes_a_member_once(api, make_person, make_workspace):
    alice, bob = make_person(), make_person(email=f"bob-{uuid.uuid4().hex[:6]}@example.edu")
    workspace = make_workspace(alice, "Northfield College")
    invitation = invite(api, alice, workspace["id"], bob.email.upper(), "editor")  # case-insensitive

    response = accept(api, bob, invitation["token"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["name"], body["role"]) == (workspace["id"], "Northfield College", "editor")
    members = api.get(f"/api/v1/workspaces/{workspace['id']}/members", headers=bob.headers).json()["items"]
    assert {m["user_id"]: m["role"] for m in members} == {alice.id: "owner", bob.id: "editor"}
    assert api.get(f"/api/v1/workspaces/{workspace['id']}/invitations", headers=alice.headers).json()["total"] == 0

    (accepted,) = audit_events(api, workspace["id"], "invitation.accepted")
    assert str(accepted.actor_user_id) == bob.id and accepted.target_id == invitation["id"]
    (joined,) = audit_events(api, workspace["id"], "member.joined")
    assert (joined.target_type, joined.target_id) == ("user", bob.id)
    assert joined.details == {"email": bob.email, "role": "editor", "invitation_id": invitation["id"]}
    with api.app.state.database.session() as session:
        stored = session.get(Invitation, uuid.UUID(invitation["id"]))
        assert stored.accepted_at is not None and str(stored.accepted_by_id) == bob.id

    # Single use: the same link, again, by anyone.
    again = accept(api, bob, invitation["token"])
    assert again.status_code == 400 and error_of(again)["code"] == "invalid_invitation"
    assert "already been used" in error_of(again)["message"]
    assert len(audit_events(api, workspace["id"], "member.joined")) == 1


def test_only_the_invited_address_may_accept(api, make_person, make_workspace):
    alice, bob, carol = make_person(), make_person(), make_person()
    workspace = make_workspace(alice, "Secret Project")
    invitation = invite(api, alice, workspace["id"], bob.email, "admin")

    response = accept(api, carol, invitation["token"])
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "invitation_email_mismatch"
    assert bob.email in error["message"]
    assert "Secret Project" not in response.text and "admin" not in error["message"]
    assert api.get(f"/api/v1/workspaces/{workspace['id']}", headers=carol.headers).status_code == 404
    # The mistake does not use the invitation up.
    assert accept(api, bob, invitation["token"]).status_code == 200


def test_expired_invitations_cannot_be_accepted_but_can_be_resent(api, make_person, make_workspace):
    alice, bob = make_person(), make_person()
    workspace = make_workspace(alice)
    invitation = invite(api, alice, workspace["id"], bob.email, "viewer")
    expire_invitation(api, invitation["id"])

    response = accept(api, bob, invitation["token"])
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_invitation"
    assert "expired" in error_of(response)["message"]
    (listed,) = api.get(f"/api/v1/workspaces/{workspace['id']}/invitations", headers=alice.headers).json()["items"]
    assert listed["status"] == "expired"

    resent = api.post(f"/api/v1/workspaces/{workspace['id']}/invitations/{invitation['id']}/resend", headers=alice.headers)
    assert resent.status_code == 200, resent.text
    assert resent.json()["status"] == "pending"
    assert accept(api, bob, invitation["token"]).status_code == 400  # the old link stays dead
    assert accept(api, bob, resent.json()["token"]).status_code == 200


def test_resending_replaces_the_token_and_emails_again(api, make_person, make_workspace):
    alice, bob = make_person(), make_person()
    workspace = make_workspace(alice)
    invitation = invite(api, alice, workspace["id"], bob.email, "viewer")
    wait_for_emails(api, 1, to=bob.email)

    response = api.post(f"/api/v1/workspaces/{workspace['id']}/invitations/{invitation['id']}/resend", headers=alice.headers)
    assert response.status_code == 200, response.text
    resent = response.json()
    assert resent["id"] == invitation["id"] and resent["send_count"] == 2
    assert resent["token"] != invitation["token"]
    assert resent["accept_url"].endswith(f"/invitations/{resent['token']}")
    assert parse_time(resent["expires_at"]) >= parse_time(invitation["expires_at"])

    messages = wait_for_emails(api, 2, to=bob.email)
    assert len(messages) == 2
    assert any(resent["accept_url"] in text_of(m) for m in messages)

    (event,) = audit_events(api, workspace["id"], "invitation.resent")
    assert event.details == {"email": bob.email, "role": "viewer", "send_count": 2}

    old = accept(api, bob, invitation["token"])
    assert old.status_code == 400 and error_of(old)["code"] == "invalid_invitation"
    assert accept(api, bob, resent["token"]).status_code == 200

    # Accepted: no more resending or revoking.
    closed = api.post(f"/api/v1/workspaces/{workspace['id']}/invitations/{invitation['id']}/resend", headers=alice.headers)
    assert closed.status_code == 409
    assert api.delete(f"/api/v1/workspaces/{workspace['id']}/invitations/{invitation['id']}", headers=alice.headers).status_code == 409


def test_a_revoked_invitation_is_dead(api, make_person, make_workspace):
    alice, bob = make_person(), make_person()
    workspace = make_workspace(alice)
    ws = f"/api/v1/workspaces/{workspace['id']}"
    invitation = invite(api, alice, workspace["id"], bob.email, "viewer")

    assert api.delete(f"{ws}/invitations/{invitation['id']}", headers=alice.headers).status_code == 204
    response = accept(api, bob, invitation["token"])
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_invitation"
    assert api.get(f"{ws}/invitations", headers=alice.headers).json()["total"] == 0
    (event,) = audit_events(api, workspace["id"], "invitation.revoked")
    assert event.target_id == invitation["id"] and event.details == {"email": bob.email, "role": "viewer"}

    assert api.delete(f"{ws}/invitations/{invitation['id']}", headers=alice.headers).status_code == 204  # idempotent
    assert len(audit_events(api, workspace["id"], "invitation.revoked")) == 1
    assert api.post(f"{ws}/invitations/{invitation['id']}/resend", headers=alice.headers).status_code == 409
    missing = api.delete(f"{ws}/invitations/{uuid.uuid4()}", headers=alice.headers)
    assert missing.status_code == 404 and error_of(missing)["message"] == "Invitation not found"


def test_a_second_invitation_to_the_same_address_replaces_the_first(api, make_person, make_workspace):
    alice, bob = make_person(), make_person()
    workspace = make_workspace(alice)
    first = invite(api, alice, workspace["id"], bob.email, "viewer")
    second = invite(api, alice, workspace["id"], bob.email.upper(), "editor")
    listed = api.get(f"/api/v1/workspaces/{workspace['id']}/invitations", headers=alice.headers).json()
    assert [i["id"] for i in listed["items"]] == [second["id"]]
    assert accept(api, bob, first["token"]).status_code == 400
    assert accept(api, bob, second["token"]).json()["role"] == "editor"
    events = audit_events(api, workspace["id"], "invitation.created")
    assert events[-1].details == {"email": bob.email, "role": "editor", "replaced": [first["id"]]}


def test_invitations_from_another_workspace_are_kept(api, make_person, make_workspace):
    alice, bob = make_person(), make_person()
    one, two = make_workspace(alice, "One"), make_workspace(alice, "Two")
    first = invite(api, alice, one["id"], bob.email, "viewer")
    second = invite(api, alice, two["id"], bob.email, "viewer")
    assert accept(api, bob, first["token"]).status_code == 200
    assert accept(api, bob, second["token"]).status_code == 200
    # An invitation id of one workspace is not found through another.
    third = invite(api, alice, one["id"], "carol@example.edu", "viewer")
    response = api.delete(f"/api/v1/workspaces/{two['id']}/invitations/{third['id']}", headers=alice.headers)
    assert response.status_code == 404


def test_members_cannot_be_invited_again(api, make_person, make_workspace):
    alice, bob = make_person(), make_person()
    workspace = make_workspace(alice)
    join(api, alice, workspace["id"], bob, "viewer")
    for address in (bob.email, bob.email.upper(), alice.email):
        response = api.post(
            f"/api/v1/workspaces/{workspace['id']}/invitations", json={"email": address, "role": "admin"}, headers=alice.headers
        )
        assert response.status_code == 409, response.text
        assert error_of(response)["code"] == "already_member"


def test_accepting_when_already_a_member_is_a_conflict(api, make_person, make_workspace):
    alice, bob = make_person(), make_person()
    workspace = make_workspace(alice)
    pending = invite(api, alice, workspace["id"], bob.email, "viewer")
    # Bob joins by another way meanwhile (here: an invitation in the database, accepted).
    with api.app.state.database.session() as session:
        from a3e.workspaces.models import Membership

        session.add(Membership(workspace_id=uuid.UUID(workspace["id"]), user_id=uuid.UUID(bob.id), role="editor"))
        session.commit()
    response = accept(api, bob, pending["token"])
    assert response.status_code == 409 and error_of(response)["code"] == "already_member"
    with api.app.state.database.session() as session:
        assert session.get(Invitation, uuid.UUID(pending["id"])).accepted_at is None  # rolled back


def test_who_may_invite_whom(api, make_person, make_workspace):
    owner, admin, editor = make_person(), make_person(), make_person()
    workspace = make_workspace(owner)
    url = f"/api/v1/workspaces/{workspace['id']}/invitations"
    join(api, owner, workspace["id"], admin, "admin")
    join(api, owner, workspace["id"], editor, "editor")

    def post(person, role):
        return api.post(url, json={"email": f"{uuid.uuid4().hex[:8]}@example.edu", "role": role}, headers=person.headers)

    for role in ("admin", "editor", "viewer"):
        assert post(admin, role).status_code == 201
    denied = post(admin, "owner")
    assert denied.status_code == 403 and error_of(denied)["details"] == {"action": "owners.manage"}
    assert post(owner, "owner").status_code == 201
    assert post(editor, "viewer").status_code == 403
    assert api.get(url, headers=editor.headers).status_code == 403

    # An admin cannot resend or revoke an invitation to the owner role either.
    owner_invitation = invite(api, owner, workspace["id"], "future-owner@example.edu", "owner")
    assert api.post(f"{url}/{owner_invitation['id']}/resend", headers=admin.headers).status_code == 403
    assert api.delete(f"{url}/{owner_invitation['id']}", headers=admin.headers).status_code == 403
    assert api.delete(f"{url}/{owner_invitation['id']}", headers=owner.headers).status_code == 204


def test_accept_requires_a_person_and_a_known_token(api, make_person, make_workspace):
    alice, bob = make_person(), make_person()
    workspace = make_workspace(alice)
    invitation = invite(api, alice, workspace["id"], bob.email, "viewer")
    assert api.post(f"/api/v1/invitations/{invitation['token']}/accept").status_code == 401
    key = create_key(api, alice, workspace["id"], "read_write")
    by_key = api.post(f"/api/v1/invitations/{invitation['token']}/accept", headers=bearer(key["key"]))
    assert by_key.status_code == 403
    unknown = accept(api, bob, "not-a-real-token")
    assert unknown.status_code == 400 and error_of(unknown)["code"] == "invalid_invitation"
    assert accept(api, bob, invitation["token"]).status_code == 200


def test_invitation_input_is_validated(api, make_person, make_workspace):
    alice = make_person()
    workspace = make_workspace(alice)
    url = f"/api/v1/workspaces/{workspace['id']}/invitations"
    for body in (
        {"email": "not-an-email", "role": "viewer"},
        {"email": "a@example.edu", "role": "superuser"},
        {"email": "a@example.edu"},
        {"email": "a@example.edu", "role": "viewer", "token": "mine"},
    ):
        assert api.post(url, json=body, headers=alice.headers).status_code == 422, body
    assert wait_for_emails(api, 1, to="a@example.edu", timeout=0.3) == []


def test_emails_go_out_only_after_the_commit(api):
    """The email of an invitation whose transaction rolls back is never sent."""
    sent: list[str] = []
    with api.app.state.database.session() as session:
        session.add(Invitation(workspace_id=uuid.uuid4(), email="x@example.edu", role="viewer", token_hash="0" * 64,
                               expires_at=utcnow()))
        after_commit(session, lambda: sent.append("rolled back"))
        with pytest.raises(Exception):
            session.flush()  # no such workspace: the transaction fails, as a request's would
        session.rollback()
        session.commit()
        assert sent == []
        after_commit(session, lambda: sent.append("committed"))
        assert sent == []
        session.commit()
        assert sent == ["committed"]
        session.commit()
        assert sent == ["committed"]  # once


@pytest.mark.parametrize("status", ["revoked", "accepted"])
def test_closed_invitations_never_come_back(api, make_person, make_workspace, status):
    alice, bob = make_person(), make_person()
    workspace = make_workspace(alice)
    invitation = invite(api, alice, workspace["id"], bob.email, "viewer")
    if status == "revoked":
        api.delete(f"/api/v1/workspaces/{workspace['id']}/invitations/{invitation['id']}", headers=alice.headers)
    else:
        accept(api, bob, invitation["token"])
        api.post(f"/api/v1/workspaces/{workspace['id']}/leave", headers=bob.headers)
    assert accept(api, bob, invitation["token"]).status_code == 400
    with api.app.state.database.session() as session:
        rows = session.scalars(select(Invitation).where(Invitation.workspace_id == uuid.UUID(workspace["id"]))).all()
        assert len(rows) == 1


def test_an_invitation_accepted_twice_at_once_makes_one_member(api, make_person, make_workspace):
    alice, bob = make_person(), make_person()
    workspace = make_workspace(alice)
    invitation = invite(api, alice, workspace["id"], bob.email, "viewer")
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def attempt() -> None:
        barrier.wait()
        statuses.append(accept(api, bob, invitation["token"]).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [200, 400, 400, 400], statuses
    assert len(audit_events(api, workspace["id"], "member.joined")) == 1
    members = api.get(f"/api/v1/workspaces/{workspace['id']}/members", headers=alice.headers).json()
    assert members["total"] == 2
