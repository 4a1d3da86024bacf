"""API keys: created by admins and owners (shown once, stored as a digest), used as
`Authorization: Bearer a3e_…` to reach their own workspace only, with their scope's permissions,
and revoked."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from a3e.apikeys.models import ApiKey
from a3e.core.models import utcnow
from a3e.core.security import token_digest
from tests.test_workspaces_support import (
    audit_events,
    bearer,
    create_key,
    error_of,
    join,
)


def test_a_key_is_shown_once_and_stored_as_a_digest(api, make_person, make_workspace):
    alice = make_person()
    workspace = make_workspace(alice)
    url = f"/api/v1/workspaces/{workspace['id']}/api-keys"
    response = api.post(url, json={"name": "Canvas sync", "scope": "read"}, headers=alice.headers)
    assert response.status_code == 201, response.text
    created = response.json()
    key = created["key"]
    assert key.startswith("a3e_") and len(key) >= 40
    assert created["prefix"] == key[:12]
    assert (created["name"], created["scope"], created["created_by_id"]) == ("Canvas sync", "read", alice.id)
    assert created["last_used_at"] is None and created["revoked_at"] is None

    with api.app.state.database.session() as session:
        stored = session.get(ApiKey, uuid.UUID(created["id"]))
        assert stored.key_hash == token_digest(key) and stored.prefix == key[:12]

    listed = api.get(url, headers=alice.headers).json()
    assert listed["total"] == 1
    (item,) = listed["items"]
    assert set(item) == {"id", "name", "scope", "prefix", "created_by_id", "created_at", "last_used_at", "revoked_at"}
    assert key not in str(listed)

    (event,) = audit_events(api, workspace["id"], "api_key.created")
    assert (event.target_type, event.target_id) == ("api_key", created["id"])
    assert event.details == {"name": "Canvas sync", "scope": "read", "prefix": key[:12]}
    for event in audit_events(api):
        assert key not in str(event.details)


def test_a_key_reads_its_workspace_and_records_when_it_was_used(api, make_person, make_workspace):
    alice = make_person()
    workspace = make_workspace(alice, "Northfield College")
    created = create_key(api, alice, workspace["id"])
    response = api.get(f"/api/v1/workspaces/{workspace['id']}", headers=bearer(created["key"]))
    assert response.status_code == 200
    assert response.json()["name"] == "Northfield College" and response.json()["role"] is None

    # A key lists exactly its own workspace.
    listed = api.get("/api/v1/workspaces", headers=bearer(created["key"])).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == workspace["id"]

    (item,) = api.get(f"/api/v1/workspaces/{workspace['id']}/api-keys", headers=alice.headers).json()["items"]
    assert item["last_used_at"] is not None
    used_at = item["last_used_at"]

    # Recorded at most once a minute; an older mark is moved forward on the next use.
    api.get(f"/api/v1/workspaces/{workspace['id']}", headers=bearer(created["key"]))
    (item,) = api.get(f"/api/v1/workspaces/{workspace['id']}/api-keys", headers=alice.headers).json()["items"]
    assert item["last_used_at"] == used_at
    with api.app.state.database.session() as session:
        session.execute(
            update(ApiKey).where(ApiKey.id == uuid.UUID(created["id"])).values(last_used_at=utcnow() - timedelta(hours=1))
        )
        session.commit()
    api.get(f"/api/v1/workspaces/{workspace['id']}", headers=bearer(created["key"]))
    (item,) = api.get(f"/api/v1/workspaces/{workspace['id']}/api-keys", headers=alice.headers).json()["items"]
    assert item["last_used_at"] > used_at


@pytest.mark.parametrize("scope", ["read", "read_write"])
def test_no_key_manages_the_workspace_its_people_or_its_keys(api, make_person, make_workspace, scope):
    alice, bob = make_person(), make_person()
    workspace = make_workspace(alice)
    ws = f"/api/v1/workspaces/{workspace['id']}"
    join(api, alice, workspace["id"], bob, "viewer")
    other_key = create_key(api, alice, workspace["id"], "read")
    invitation = api.post(f"{ws}/invitations", json={"email": "x@example.edu", "role": "viewer"}, headers=alice.headers).json()
    key = bearer(create_key(api, alice, workspace["id"], scope)["key"])

    assert api.get(ws, headers=key).status_code == 200
    refused = [
        api.patch(ws, json={"name": "Renamed by a key"}, headers=key),
        api.delete(ws, headers=key),
        api.get(f"{ws}/members", headers=key),
        api.patch(f"{ws}/members/{bob.id}", json={"role": "admin"}, headers=key),
        api.delete(f"{ws}/members/{bob.id}", headers=key),
        api.post(f"{ws}/leave", headers=key),
        api.get(f"{ws}/invitations", headers=key),
        api.post(f"{ws}/invitations", json={"email": "y@example.edu", "role": "admin"}, headers=key),
        api.post(f"{ws}/invitations/{invitation['id']}/resend", headers=key),
        api.delete(f"{ws}/invitations/{invitation['id']}", headers=key),
        api.get(f"{ws}/api-keys", headers=key),
        api.post(f"{ws}/api-keys", json={"name": "more", "scope": "read_write"}, headers=key),
        api.delete(f"{ws}/api-keys/{other_key['id']}", headers=key),
        api.get(f"{ws}/audit-log", headers=key),
        api.post("/api/v1/workspaces", json={"name": "By a key"}, headers=key),
    ]
    for response in refused:
        assert response.status_code == 403, (response.request.method, response.request.url, response.text)
    assert api.get(ws, headers=alice.headers).json()["name"] == workspace["name"]
    assert api.get(f"{ws}/members", headers=alice.headers).json()["total"] == 2
    assert api.get(f"{ws}/api-keys", headers=alice.headers).json()["total"] == 2


def test_a_key_never_reaches_another_workspace(api, make_person, make_workspace):
    alice, bob = make_person(), make_person()
    mine, theirs = make_workspace(alice, "Mine"), make_workspace(bob, "Theirs")
    also_mine = make_workspace(alice, "Also mine")
    key = bearer(create_key(api, alice, mine["id"], "read_write")["key"])
    for workspace in (theirs, also_mine):  # another tenant's, and another of the same owner's
        for method, path in (("GET", ""), ("GET", "/members"), ("GET", "/api-keys"), ("DELETE", "")):
            response = api.request(method, f"/api/v1/workspaces/{workspace['id']}{path}", headers=key)
            assert response.status_code == 404, (workspace["name"], method, path)
            assert error_of(response)["message"] == "Workspace not found"


def test_revoking_a_key_stops_it(api, make_person, make_workspace):
    alice = make_person()
    workspace = make_workspace(alice)
    url = f"/api/v1/workspaces/{workspace['id']}/api-keys"
    created = create_key(api, alice, workspace["id"], "read_write", name="Old integration")
    kept = create_key(api, alice, workspace["id"], "read", name="Kept")
    assert api.get(f"/api/v1/workspaces/{workspace['id']}", headers=bearer(created["key"])).status_code == 200

    assert api.delete(f"{url}/{created['id']}", headers=alice.headers).status_code == 204
    response = api.get(f"/api/v1/workspaces/{workspace['id']}", headers=bearer(created["key"]))
    assert response.status_code == 401 and error_of(response)["code"] == "unauthorized"
    assert api.get(f"/api/v1/workspaces/{workspace['id']}", headers=bearer(kept["key"])).status_code == 200

    items = {k["id"]: k for k in api.get(url, headers=alice.headers).json()["items"]}
    assert items[created["id"]]["revoked_at"] is not None and items[kept["id"]]["revoked_at"] is None
    (event,) = audit_events(api, workspace["id"], "api_key.revoked")
    assert event.target_id == created["id"] and event.details["name"] == "Old integration"

    assert api.delete(f"{url}/{created['id']}", headers=alice.headers).status_code == 204  # idempotent
    assert len(audit_events(api, workspace["id"], "api_key.revoked")) == 1
    missing = api.delete(f"{url}/{uuid.uuid4()}", headers=alice.headers)
    assert missing.status_code == 404 and error_of(missing)["message"] == "API key not found"


def test_a_key_id_of_another_workspace_is_not_found(api, make_person, make_workspace):
    alice = make_person()
    one, two = make_workspace(alice, "One"), make_workspace(alice, "Two")
    key = create_key(api, alice, one["id"])
    response = api.delete(f"/api/v1/workspaces/{two['id']}/api-keys/{key['id']}", headers=alice.headers)
    assert response.status_code == 404
    assert api.get(f"/api/v1/workspaces/{one['id']}", headers=bearer(key["key"])).status_code == 200


def test_keys_are_managed_by_admins_and_owners_only(api, make_person, make_workspace):
    owner, admin, editor, viewer = (make_person() for _ in range(4))
    workspace = make_workspace(owner)
    url = f"/api/v1/workspaces/{workspace['id']}/api-keys"
    join(api, owner, workspace["id"], admin, "admin")
    join(api, owner, workspace["id"], editor, "editor")
    join(api, owner, workspace["id"], viewer, "viewer")
    assert api.post(url, json={"name": "by admin", "scope": "read"}, headers=admin.headers).status_code == 201
    for person in (editor, viewer):
        assert api.post(url, json={"name": "no", "scope": "read"}, headers=person.headers).status_code == 403
        assert api.get(url, headers=person.headers).status_code == 403


def test_key_input_is_validated(api, make_person, make_workspace):
    alice = make_person()
    workspace = make_workspace(alice)
    url = f"/api/v1/workspaces/{workspace['id']}/api-keys"
    for body in (
        {"name": "x", "scope": "admin"},
        {"name": "", "scope": "read"},
        {"scope": "read"},
        {"name": "x", "scope": "read", "key": "a3e_mine"},
    ):
        assert api.post(url, json=body, headers=alice.headers).status_code == 422, body
    assert api.get(url, headers=alice.headers).json()["total"] == 0


def test_unknown_and_malformed_keys_are_refused(api, make_person, make_workspace):
    alice = make_person()
    workspace = make_workspace(alice)
    for token in ("a3e_" + "x" * 43, "a3e_"):
        response = api.get(f"/api/v1/workspaces/{workspace['id']}", headers=bearer(token))
        assert response.status_code == 401, token
