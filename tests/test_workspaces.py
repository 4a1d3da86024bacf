"""Workspaces and members: create, list, read, rename, delete; roles and what each may do; the
last-owner guard (also under concurrency); every change audited."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import func, select

from a3e.apikeys.models import ApiKey
from a3e.workspaces.models import Invitation, Membership, Workspace
from a3e.workspaces.service import lock_owners
from tests.test_workspaces_support import (
    audit_events,
    bearer,
    create_key,
    error_of,
    invite,
    join,
)

# ---------------------------------------------------------------------------------------------
# Workspaces


def test_create_list_and_read_workspaces(api, make_person, make_workspace):
    alice, bob = make_person(), make_person()
    first = make_workspace(alice, "Northfield College")
    second = make_workspace(alice, "  Northfield — Nursing  ")
    make_workspace(bob, "Bob's")
    assert first["role"] == "owner" and first["name"] == "Northfield College"
    assert second["name"] == "Northfield — Nursing"  # trimmed
    assert set(first) == {"id", "name", "role", "created_at", "updated_at"}

    listed = api.get("/api/v1/workspaces", headers=alice.headers)
    assert listed.status_code == 200
    body = listed.json()
    assert body["total"] == 2 and body["limit"] == 50 and body["offset"] == 0
    assert [(w["id"], w["role"]) for w in body["items"]] == [(first["id"], "owner"), (second["id"], "owner")]

    page = api.get("/api/v1/workspaces?limit=1&offset=1", headers=alice.headers).json()
    assert page["total"] == 2 and [w["id"] for w in page["items"]] == [second["id"]]

    read = api.get(f"/api/v1/workspaces/{first['id']}", headers=alice.headers)
    assert read.status_code == 200 and read.json()["role"] == "owner"

    # The creator is the owner, in the database too; the creation is audited.
    with api.app.state.database.session() as session:
        membership = session.scalar(select(Membership).where(Membership.workspace_id == uuid.UUID(first["id"])))
        assert (str(membership.user_id), membership.role) == (alice.id, "owner")
    (created,) = audit_events(api, first["id"], "workspace.created")
    assert str(created.actor_user_id) == alice.id and created.actor_label == alice.email
    assert (created.target_type, created.target_id) == ("workspace", first["id"])
    assert created.details == {"name": "Northfield College"}
    assert created.request_id and created.client_ip


def test_a_workspace_is_invisible_to_non_members(api, make_person, make_workspace):
    alice, mallory = make_person(), make_person()
    workspace = make_workspace(alice)
    assert api.get("/api/v1/workspaces", headers=mallory.headers).json()["total"] == 0
    for method, path in [
        ("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/members"), ("POST", "/leave"), ("GET", "/invitations"),
    ]:
        response = api.request(method, f"/api/v1/workspaces/{workspace['id']}{path}", json={"name": "x"}, headers=mallory.headers)
        assert response.status_code == 404, (method, path, response.text)
        assert error_of(response) == {**error_of(response), "code": "not_found", "message": "Workspace not found"}
    # Same answer as for a workspace that does not exist at all.
    missing = api.get(f"/api/v1/workspaces/{uuid.uuid4()}", headers=mallory.headers)
    assert missing.status_code == 404 and error_of(missing)["message"] == "Workspace not found"


def test_workspace_input_is_validated(api, make_person, make_workspace):
    alice = make_person()
    assert api.post("/api/v1/workspaces", json={"name": "x"}).status_code == 401
    for body in ({}, {"name": ""}, {"name": "   "}, {"name": "x" * 201}, {"name": "ok", "owner": alice.id}):
        response = api.post("/api/v1/workspaces", json=body, headers=alice.headers)
        assert response.status_code == 422, (body, response.text)
    workspace = make_workspace(alice)
    response = api.patch(f"/api/v1/workspaces/{workspace['id']}", json={"name": "New", "id": "x"}, headers=alice.headers)
    assert response.status_code == 422
    assert api.get("/api/v1/workspaces/not-a-uuid", headers=alice.headers).status_code == 422


def test_rename_is_audited(api, make_person, make_workspace):
    alice = make_person()
    workspace = make_workspace(alice, "Old name")
    response = api.patch(f"/api/v1/workspaces/{workspace['id']}", json={"name": "New name"}, headers=alice.headers)
    assert response.status_code == 200 and response.json()["name"] == "New name"
    assert api.get(f"/api/v1/workspaces/{workspace['id']}", headers=alice.headers).json()["name"] == "New name"
    (renamed,) = audit_events(api, workspace["id"], "workspace.renamed")
    assert renamed.details == {"from": "Old name", "to": "New name"}
    # The same name again changes nothing and records nothing.
    api.patch(f"/api/v1/workspaces/{workspace['id']}", json={"name": "New name"}, headers=alice.headers)
    assert len(audit_events(api, workspace["id"], "workspace.renamed")) == 1


def test_delete_cascades_and_keeps_the_audit_log(api, make_person, make_workspace):
    alice, bob = make_person(), make_person()
    workspace = make_workspace(alice)
    other = make_workspace(alice, "Kept")
    join(api, alice, workspace["id"], bob, "editor")
    invite(api, alice, workspace["id"], "someone@example.edu", "viewer")
    key = create_key(api, alice, workspace["id"])
    workspace_id = uuid.UUID(workspace["id"])

    response = api.delete(f"/api/v1/workspaces/{workspace['id']}", headers=alice.headers)
    assert response.status_code == 204 and response.content == b""
    assert api.get(f"/api/v1/workspaces/{workspace['id']}", headers=alice.headers).status_code == 404
    assert api.get(f"/api/v1/workspaces/{workspace['id']}", headers=bob.headers).status_code == 404
    assert [w["id"] for w in api.get("/api/v1/workspaces", headers=alice.headers).json()["items"]] == [other["id"]]
    assert api.get(f"/api/v1/workspaces/{workspace['id']}", headers=bearer(key["key"])).status_code == 401

    with api.app.state.database.session() as session:
        for model in (Membership, Invitation, ApiKey):
            count = session.scalar(select(func.count()).select_from(model).where(model.workspace_id == workspace_id))
            assert count == 0, model
        assert session.get(Workspace, workspace_id) is None
    (deleted,) = audit_events(api, workspace_id, "workspace.deleted")
    assert str(deleted.actor_user_id) == alice.id and deleted.details == {"name": workspace["name"]}
    assert audit_events(api, workspace_id, "workspace.created")  # history outlives the workspace


# ---------------------------------------------------------------------------------------------
# Members


def test_members_are_listed_with_their_roles(api, make_person, make_workspace):
    alice, bob = make_person(name="Alice Adams"), make_person(name="Bob Brown")
    workspace = make_workspace(alice)
    join(api, alice, workspace["id"], bob, "viewer")
    response = api.get(f"/api/v1/workspaces/{workspace['id']}/members", headers=bob.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 2
    assert [(m["user_id"], m["email"], m["name"], m["role"]) for m in body["items"]] == [
        (alice.id, alice.email, "Alice Adams", "owner"),
        (bob.id, bob.email, "Bob Brown", "viewer"),
    ]
    assert set(body["items"][0]) == {"user_id", "email", "name", "role", "joined_at"}
    page = api.get(f"/api/v1/workspaces/{workspace['id']}/members?limit=1&offset=1", headers=bob.headers).json()
    assert page["total"] == 2 and [m["user_id"] for m in page["items"]] == [bob.id]


def test_role_changes_and_removals_are_audited(api, make_person, make_workspace):
    alice, bob, carol = make_person(), make_person(), make_person()
    workspace = make_workspace(alice)
    base = f"/api/v1/workspaces/{workspace['id']}/members"
    join(api, alice, workspace["id"], bob, "viewer")
    join(api, alice, workspace["id"], carol, "editor")

    response = api.patch(f"{base}/{bob.id}", json={"role": "admin"}, headers=alice.headers)
    assert response.status_code == 200 and response.json()["role"] == "admin"
    assert api.get(f"/api/v1/workspaces/{workspace['id']}", headers=bob.headers).json()["role"] == "admin"
    (changed,) = audit_events(api, workspace["id"], "member.role_changed")
    assert (changed.target_type, changed.target_id) == ("user", bob.id)
    assert changed.details == {"email": bob.email, "from": "viewer", "to": "admin"}

    assert api.delete(f"{base}/{carol.id}", headers=bob.headers).status_code == 204
    assert api.get(f"/api/v1/workspaces/{workspace['id']}", headers=carol.headers).status_code == 404
    (removed,) = audit_events(api, workspace["id"], "member.removed")
    assert str(removed.actor_user_id) == bob.id and removed.target_id == carol.id
    assert removed.details == {"email": carol.email, "role": "editor"}

    assert api.post(f"/api/v1/workspaces/{workspace['id']}/leave", headers=bob.headers).status_code == 204
    (left,) = audit_events(api, workspace["id"], "member.left")
    assert str(left.actor_user_id) == bob.id and left.details == {"role": "admin"}

    missing = api.patch(f"{base}/{uuid.uuid4()}", json={"role": "viewer"}, headers=alice.headers)
    assert missing.status_code == 404 and error_of(missing)["message"] == "Member not found"
    assert api.delete(f"{base}/{carol.id}", headers=alice.headers).status_code == 404
    assert api.patch(f"{base}/{alice.id}", json={"role": "superuser"}, headers=alice.headers).status_code == 422


def test_admins_manage_admins_editors_and_viewers_but_not_owners(api, make_person, make_workspace):
    owner, co_owner, admin, other_admin, viewer = (make_person() for _ in range(5))
    workspace = make_workspace(owner)
    base = f"/api/v1/workspaces/{workspace['id']}/members"
    join(api, owner, workspace["id"], co_owner, "owner")
    join(api, owner, workspace["id"], admin, "admin")
    join(api, owner, workspace["id"], other_admin, "admin")
    join(api, owner, workspace["id"], viewer, "viewer")

    # Admins: promote a viewer up to admin, demote an admin, remove an admin.
    assert api.patch(f"{base}/{viewer.id}", json={"role": "admin"}, headers=admin.headers).status_code == 200
    assert api.patch(f"{base}/{viewer.id}", json={"role": "viewer"}, headers=admin.headers).status_code == 200
    assert api.patch(f"{base}/{other_admin.id}", json={"role": "editor"}, headers=admin.headers).status_code == 200
    assert api.patch(f"{base}/{other_admin.id}", json={"role": "admin"}, headers=admin.headers).status_code == 200
    # …but never grant the owner role, take it away, or remove an owner.
    for response in (
        api.patch(f"{base}/{viewer.id}", json={"role": "owner"}, headers=admin.headers),
        api.patch(f"{base}/{admin.id}", json={"role": "owner"}, headers=admin.headers),
        api.patch(f"{base}/{co_owner.id}", json={"role": "viewer"}, headers=admin.headers),
        api.delete(f"{base}/{co_owner.id}", headers=admin.headers),
    ):
        assert response.status_code == 403, response.text
        assert error_of(response)["details"] == {"action": "owners.manage"}
    assert api.delete(f"{base}/{other_admin.id}", headers=admin.headers).status_code == 204

    # Owners do all of it.
    assert api.patch(f"{base}/{viewer.id}", json={"role": "owner"}, headers=owner.headers).status_code == 200
    assert api.patch(f"{base}/{co_owner.id}", json={"role": "admin"}, headers=owner.headers).status_code == 200
    assert api.delete(f"{base}/{viewer.id}", headers=owner.headers).status_code == 204
    roles = {m["user_id"]: m["role"] for m in api.get(base, headers=owner.headers).json()["items"]}
    assert roles == {owner.id: "owner", co_owner.id: "admin", admin.id: "admin"}


# ---------------------------------------------------------------------------------------------
# Each role × each action, through the API.

ALLOWED = {
    "read workspace": {"owner", "admin", "editor", "viewer"},
    "list members": {"owner", "admin", "editor", "viewer"},
    "rename workspace": {"owner", "admin"},
    "change a viewer's role": {"owner", "admin"},
    "make a viewer admin": {"owner", "admin"},
    "make a viewer owner": {"owner"},
    "demote an owner": {"owner"},
    "remove a viewer": {"owner", "admin"},
    "remove an admin": {"owner", "admin"},
    "remove an owner": {"owner"},
    "invite an editor": {"owner", "admin"},
    "invite an owner": {"owner"},
    "list invitations": {"owner", "admin"},
    "resend an invitation": {"owner", "admin"},
    "revoke an invitation": {"owner", "admin"},
    "list API keys": {"owner", "admin"},
    "create an API key": {"owner", "admin"},
    "revoke an API key": {"owner", "admin"},
    "read the audit log": {"owner", "admin"},
    "delete workspace": {"owner"},
    "leave": {"owner", "admin", "editor", "viewer"},
}


@pytest.mark.parametrize("role", ["owner", "admin", "editor", "viewer"])
def test_what_each_role_may_do(api, make_person, make_workspace, role):
    owner = make_person()
    workspace = make_workspace(owner)
    ws = f"/api/v1/workspaces/{workspace['id']}"
    if role == "owner":
        actor = owner
    else:
        actor = make_person()
        join(api, owner, workspace["id"], actor, role)

    def member(member_role: str):
        person = make_person()
        join(api, owner, workspace["id"], person, member_role)
        return person

    def invitation() -> str:
        return invite(api, owner, workspace["id"], f"invitee-{uuid.uuid4().hex[:8]}@example.edu", "viewer")["id"]

    def key() -> str:
        return create_key(api, owner, workspace["id"])["id"]

    def separate_workspace() -> str:
        other = make_workspace(owner, "Separate")
        if actor is not owner:
            join(api, owner, other["id"], actor, role)
        return f"/api/v1/workspaces/{other['id']}"

    def leave():
        if role == "owner":
            member("owner")  # the last owner may not leave: that has its own test
        return api.post(f"{ws}/leave", headers=actor.headers)

    h = actor.headers
    actions = {
        "read workspace": lambda: api.get(ws, headers=h),
        "list members": lambda: api.get(f"{ws}/members", headers=h),
        "rename workspace": lambda: api.patch(ws, json={"name": "Renamed"}, headers=h),
        "change a viewer's role": lambda: api.patch(f"{ws}/members/{member('viewer').id}", json={"role": "editor"}, headers=h),
        "make a viewer admin": lambda: api.patch(f"{ws}/members/{member('viewer').id}", json={"role": "admin"}, headers=h),
        "make a viewer owner": lambda: api.patch(f"{ws}/members/{member('viewer').id}", json={"role": "owner"}, headers=h),
        "demote an owner": lambda: api.patch(f"{ws}/members/{member('owner').id}", json={"role": "admin"}, headers=h),
        "remove a viewer": lambda: api.delete(f"{ws}/members/{member('viewer').id}", headers=h),
        "remove an admin": lambda: api.delete(f"{ws}/members/{member('admin').id}", headers=h),
        "remove an owner": lambda: api.delete(f"{ws}/members/{member('owner').id}", headers=h),
        "invite an editor": lambda: api.post(f"{ws}/invitations", json={"email": "e@example.edu", "role": "editor"}, headers=h),
        "invite an owner": lambda: api.post(f"{ws}/invitations", json={"email": "o@example.edu", "role": "owner"}, headers=h),
        "list invitations": lambda: api.get(f"{ws}/invitations", headers=h),
        "resend an invitation": lambda: api.post(f"{ws}/invitations/{invitation()}/resend", headers=h),
        "revoke an invitation": lambda: api.delete(f"{ws}/invitations/{invitation()}", headers=h),
        "list API keys": lambda: api.get(f"{ws}/api-keys", headers=h),
        "create an API key": lambda: api.post(f"{ws}/api-keys", json={"name": "k", "scope": "read"}, headers=h),
        "revoke an API key": lambda: api.delete(f"{ws}/api-keys/{key()}", headers=h),
        "read the audit log": lambda: api.get(f"{ws}/audit-log", headers=h),
        "delete workspace": lambda: api.delete(separate_workspace(), headers=h),
        "leave": leave,  # last: the actor is no longer a member afterwards
    }
    assert list(actions) == list(ALLOWED)
    outcomes = {}
    for name, action in actions.items():
        response = action()
        outcomes[name] = response.status_code
        if role in ALLOWED[name]:
            assert response.status_code in (200, 201, 204), (name, response.text)
        else:
            assert response.status_code == 403, (name, response.text)
            assert error_of(response)["code"] == "forbidden"
    assert all(status != 404 for status in outcomes.values()), outcomes


# ---------------------------------------------------------------------------------------------
# A workspace always keeps an owner.


def test_the_last_owner_can_be_neither_demoted_nor_removed_nor_leave(api, make_person, make_workspace):
    alice, bob = make_person(), make_person()
    workspace = make_workspace(alice)
    ws = f"/api/v1/workspaces/{workspace['id']}"
    join(api, alice, workspace["id"], bob, "admin")

    for response in (
        api.patch(f"{ws}/members/{alice.id}", json={"role": "admin"}, headers=alice.headers),
        api.delete(f"{ws}/members/{alice.id}", headers=alice.headers),
        api.post(f"{ws}/leave", headers=alice.headers),
    ):
        assert response.status_code == 409, response.text
        error = error_of(response)
        assert error["code"] == "last_owner"
        assert "at least one owner" in error["message"] and "owner" in error["message"]
    assert "before leaving" in error_of(api.post(f"{ws}/leave", headers=alice.headers))["message"]
    # The admin is refused for lack of the permission, before any question of counting owners.
    assert api.delete(f"{ws}/members/{alice.id}", headers=bob.headers).status_code == 403
    assert api.get(ws, headers=alice.headers).json()["role"] == "owner"

    # With a second owner, the first may step down, and then the second is the last.
    assert api.patch(f"{ws}/members/{bob.id}", json={"role": "owner"}, headers=alice.headers).status_code == 200
    assert api.patch(f"{ws}/members/{alice.id}", json={"role": "viewer"}, headers=alice.headers).status_code == 200
    assert api.patch(f"{ws}/members/{bob.id}", json={"role": "admin"}, headers=bob.headers).status_code == 409
    assert api.post(f"{ws}/leave", headers=bob.headers).status_code == 409
    assert api.post(f"{ws}/leave", headers=alice.headers).status_code == 204
    members = api.get(f"{ws}/members", headers=bob.headers).json()["items"]
    assert [(m["user_id"], m["role"]) for m in members] == [(bob.id, "owner")]
    assert not audit_events(api, workspace["id"], "member.removed")  # refusals change nothing


def test_an_owner_can_remove_another_owner_but_not_the_last(api, make_person, make_workspace):
    alice, bob = make_person(), make_person()
    workspace = make_workspace(alice)
    ws = f"/api/v1/workspaces/{workspace['id']}"
    join(api, alice, workspace["id"], bob, "owner")
    assert api.delete(f"{ws}/members/{alice.id}", headers=bob.headers).status_code == 204
    response = api.delete(f"{ws}/members/{bob.id}", headers=bob.headers)
    assert response.status_code == 409 and bob.email in error_of(response)["message"]


def test_owner_changes_are_serialised_so_that_one_owner_always_remains(api, make_person, make_workspace):
    """Two transactions each take away "one of two" owners: the second waits for the first and
    then sees a single owner left (PostgreSQL: SELECT … FOR UPDATE; SQLite: the write lock)."""
    alice, bob = make_person(), make_person()
    workspace = make_workspace(alice)
    join(api, alice, workspace["id"], bob, "owner")
    workspace_id = uuid.UUID(workspace["id"])
    database = api.app.state.database

    first = database.session()
    owners = lock_owners(first, workspace_id)
    assert {str(m.user_id) for m in owners} == {alice.id, bob.id}

    seen: dict[str, object] = {}

    def second_transaction() -> None:
        with database.session() as second:
            try:
                started = time.monotonic()
                seen["owners"] = {str(m.user_id) for m in lock_owners(second, workspace_id)}
                seen["waited"] = time.monotonic() - started
            except Exception as exc:  # pragma: no cover - reported below
                seen["error"] = exc
            finally:
                second.rollback()

    thread = threading.Thread(target=second_transaction)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive(), f"the second transaction did not wait for the first: {seen}"
    alice_membership = next(m for m in owners if str(m.user_id) == alice.id)
    alice_membership.role = "admin"
    first.commit()
    first.close()
    thread.join(10)
    assert not thread.is_alive() and "error" not in seen, seen
    assert seen["owners"] == {bob.id}
    assert seen["waited"] >= 0.4


def test_concurrent_demotions_through_the_api_leave_an_owner(api, make_person, make_workspace):
    """Each of two owners demotes the other at the same moment: one wins, the other gets 409."""
    alice, bob = make_person(), make_person()
    workspace = make_workspace(alice)
    ws = f"/api/v1/workspaces/{workspace['id']}"
    join(api, alice, workspace["id"], bob, "owner")
    barrier = threading.Barrier(2)
    results: dict[str, int] = {}

    def demote(actor, target) -> None:
        barrier.wait()
        results[actor.id] = api.patch(f"{ws}/members/{target.id}", json={"role": "admin"}, headers=actor.headers).status_code

    threads = [threading.Thread(target=demote, args=pair) for pair in ((alice, bob), (bob, alice))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results.values()) in ([200, 403], [200, 409]), results
    owners = [m for m in api.get(f"{ws}/members", headers=alice.headers).json()["items"] if m["role"] == "owner"]
    assert len(owners) == 1


def test_changes_are_committed_before_the_answer_is_sent(api, make_person):
    """A client told 201 can use what it created at once: the row is committed (visible to
    another connection) by the time the response starts."""
    from fastapi.testclient import TestClient

    alice = make_person()
    name = f"Committed {uuid.uuid4().hex[:6]}"
    visible_at_response_start: list[int] = []

    def count() -> int:
        with api.app.state.database.session() as session:
            return session.scalar(select(func.count()).select_from(Workspace).where(Workspace.name == name))

    async def spying_app(scope, receive, send):
        async def spy(message):
            if message["type"] == "http.response.start" and scope.get("method") == "POST":
                visible_at_response_start.append(count())
            await send(message)

        await api.app(scope, receive, spy)

    response = TestClient(spying_app).post("/api/v1/workspaces", json={"name": name}, headers=alice.headers)
    assert response.status_code == 201
    assert visible_at_response_start == [1]
