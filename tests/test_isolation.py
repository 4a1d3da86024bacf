"""Tenant isolation, proven over every route the app has.

The walker reads the app's OpenAPI schema, takes every operation whose path holds
`{workspace_id}`, and calls it against a victim's workspace:

- without credentials → 401;
- as a person who is not a member (and owns a workspace of their own) → 404 "Workspace not found";
- with an API key of another workspace → 404 "Workspace not found".

404 must be the scoping helper's own ("Workspace not found"): a route's own 404 for a random
sub-resource id, a 403, a 422 or a 200 would tell the caller that the workspace exists, or worse.
Each operation is called with a minimal valid JSON body built from its schema and again with `{}`,
with random ids and with the victim's real ones, and the victim's workspace must be unchanged.

A route added later that forgets `a3e.workspaces.scoping.require(...)` fails here; the self-check
below plants such routes and shows that the walker catches each of them.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from a3e.auth.principal import PrincipalDep
from a3e.core.database import SessionDep
from a3e.core.errors import Forbidden, NotFound
from a3e.workspaces.models import Membership
from tests.test_workspaces_support import (
    bearer,
    create_key,
    invite,
    join,
)

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
NOT_FOUND = "Workspace not found"


# ---------------------------------------------------------------------------------------------
# Minimal valid values from an OpenAPI schema.


def _resolve(schema: dict, components: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = components["schemas"][name]
    return schema


def minimal_value(schema: dict, components: dict) -> Any:
    schema = _resolve(schema, components)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            options = [s for s in schema[combinator] if _resolve(s, components).get("type") != "null"]
            return minimal_value(options[0] if options else schema[combinator][0], components)
    if "allOf" in schema:
        merged: dict = {}
        for part in schema["allOf"]:
            merged.update(_resolve(part, components))
        return minimal_value(merged, components)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        return {name: minimal_value(properties.get(name, {}), components) for name in schema.get("required", [])}
    if kind == "array":
        return [minimal_value(schema.get("items", {}), components) for _ in range(schema.get("minItems", 0))]
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), 1 if "exclusiveMinimum" not in schema else int(schema["exclusiveMinimum"]) + 1)
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    fmt = schema.get("format")
    if fmt == "email":
        return f"walker-{secrets.token_hex(4)}@example.edu"
    if fmt == "uuid":
        return str(uuid.uuid4())
    if fmt == "date-time":
        return datetime.now(UTC).isoformat()
    if fmt == "date":
        return datetime.now(UTC).date().isoformat()
    if fmt in ("uri", "url"):
        return "https://example.edu/"
    return "x" * max(int(schema.get("minLength", 1)), 1)


def json_body(operation: dict, components: dict) -> Any | None:
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    return minimal_value(content["application/json"].get("schema", {}), components)


# ---------------------------------------------------------------------------------------------
# The walker.


@dataclass
class Walk:
    operations: list[tuple[str, str]] = field(default_factory=list)  # (METHOD, path template)
    problems: list[str] = field(default_factory=list)

    def flagged(self, path: str) -> list[str]:
        return [p for p in self.problems if f" {path} " in p]


def walk_workspace_routes(
    api,
    workspace_id: str,
    callers: dict[str, dict[str, str] | None],
    real_ids: dict[str, str] | None = None,
) -> Walk:
    """Call every `{workspace_id}` operation of the app as each caller; report what was wrong.

    `callers`: name → headers (None: no credentials, expecting 401; otherwise expecting the
    scoping helper's 404). `real_ids`: values for other path parameters (e.g. the victim's real
    `user_id`) to use in a second pass after random ones."""
    schema = api.app.openapi()
    components = schema.get("components", {})
    walk = Walk()
    for template, item in sorted(schema["paths"].items()):
        if "{workspace_id}" not in template:
            continue
        for method in HTTP_METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            walk.operations.append((method.upper(), template))
            parameters = [*item.get("parameters", []), *operation.get("parameters", [])]
            path_names = [p["name"] for p in parameters if p.get("in") == "path"]
            query = {
                p["name"]: minimal_value(p.get("schema", {}), components)
                for p in parameters
                if p.get("in") == "query" and p.get("required")
            }
            id_sets = [
                {name: (secrets.token_urlsafe(24) if "token" in name else str(uuid.uuid4())) for name in path_names}
            ]
            if real_ids and any(name in real_ids for name in path_names if name != "workspace_id"):
                id_sets.append({name: real_ids.get(name, id_sets[0][name]) for name in path_names})
            body = json_body(operation, components)
            bodies: list[Any] = [body, {}] if body is not None else [None]
            for ids in id_sets:
                ids = {**ids, "workspace_id": workspace_id}
                url = template.format(**ids)
                for payload in bodies:
                    for name, headers in callers.items():
                        kwargs: dict[str, Any] = {"params": query, "headers": headers or {}}
                        if payload is not None:
                            kwargs["json"] = payload
                        response = api.request(method.upper(), url, **kwargs)
                        problem = _judge(response, expect_401=headers is None)
                        if problem:
                            walk.problems.append(
                                f"{method.upper()} {template} as {name} (body {payload!r}): {problem}"
                            )
    return walk


def _judge(response, *, expect_401: bool) -> str | None:
    status = response.status_code
    if expect_401:
        return None if status == 401 else f"expected 401 without credentials, got {status}: {response.text[:200]}"
    if status != 404:
        return f"expected 404, got {status}: {response.text[:200]}"
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = None
    if message != NOT_FOUND:
        return f"expected the scoping helper's 404 ({NOT_FOUND!r}), got {message!r}"
    return None


# ---------------------------------------------------------------------------------------------
# Two tenants.


@dataclass
class Tenants:
    victim: Any
    victim_workspace: dict
    victim_member: Any
    victim_invitation: dict
    victim_key: dict
    attacker: Any
    attacker_workspace: dict
    attacker_key: dict

    @property
    def callers(self) -> dict[str, dict[str, str] | None]:
        return {
            "anonymous": None,
            "a person of another workspace": self.attacker.headers,
            "an API key of another workspace": bearer(self.attacker_key["key"]),
        }

    @property
    def real_ids(self) -> dict[str, str]:
        return {
            "user_id": self.victim_member.id,
            "invitation_id": self.victim_invitation["id"],
            "key_id": self.victim_key["id"],
        }


def two_tenants(api, make_person, make_workspace) -> Tenants:
    victim, member, attacker = make_person(), make_person(), make_person()
    victim_workspace = make_workspace(victim, "Victim College")
    join(api, victim, victim_workspace["id"], member, "editor")
    attacker_workspace = make_workspace(attacker, "Attacker University")
    victim_key = create_key(api, victim, victim_workspace["id"], "read_write")
    # Used once now, so that its last_used_at is already set when the walk's snapshots are taken.
    assert api.get(f"/api/v1/workspaces/{victim_workspace['id']}", headers=bearer(victim_key["key"])).status_code == 200
    return Tenants(
        victim=victim,
        victim_workspace=victim_workspace,
        victim_member=member,
        victim_invitation=invite(api, victim, victim_workspace["id"], "pending@example.edu", "admin"),
        victim_key=victim_key,
        attacker=attacker,
        attacker_workspace=attacker_workspace,
        attacker_key=create_key(api, attacker, attacker_workspace["id"], "read_write"),
    )


def snapshot(api, tenants: Tenants) -> dict:
    ws = f"/api/v1/workspaces/{tenants.victim_workspace['id']}"
    headers = tenants.victim.headers
    return {
        "workspace": api.get(ws, headers=headers).json(),
        "members": api.get(f"{ws}/members", headers=headers).json()["items"],
        "invitations": api.get(f"{ws}/invitations", headers=headers).json()["items"],
        "keys": api.get(f"{ws}/api-keys", headers=headers).json()["items"],
        "key works": api.get(ws, headers=bearer(tenants.victim_key["key"])).status_code,
    }


# ---------------------------------------------------------------------------------------------
# The tests.


def test_every_workspace_route_hides_other_tenants_workspaces(api, make_person, make_workspace):
    tenants = two_tenants(api, make_person, make_workspace)
    before = snapshot(api, tenants)

    walk = walk_workspace_routes(api, tenants.victim_workspace["id"], tenants.callers, tenants.real_ids)

    assert not walk.problems, "\n".join(walk.problems)
    templates = {template for _, template in walk.operations}
    assert walk.operations, "no route with {workspace_id} was walked"
    for expected in (
        ("GET", "/api/v1/workspaces/{workspace_id}"),
        ("DELETE", "/api/v1/workspaces/{workspace_id}"),
        ("GET", "/api/v1/workspaces/{workspace_id}/members"),
        ("PATCH", "/api/v1/workspaces/{workspace_id}/members/{user_id}"),
        ("DELETE", "/api/v1/workspaces/{workspace_id}/members/{user_id}"),
        ("POST", "/api/v1/workspaces/{workspace_id}/leave"),
        ("POST", "/api/v1/workspaces/{workspace_id}/invitations"),
        ("GET", "/api/v1/workspaces/{workspace_id}/invitations"),
        ("POST", "/api/v1/workspaces/{workspace_id}/invitations/{invitation_id}/resend"),
        ("DELETE", "/api/v1/workspaces/{workspace_id}/invitations/{invitation_id}"),
        ("GET", "/api/v1/workspaces/{workspace_id}/api-keys"),
        ("POST", "/api/v1/workspaces/{workspace_id}/api-keys"),
        ("DELETE", "/api/v1/workspaces/{workspace_id}/api-keys/{key_id}"),
    ):
        assert expected in walk.operations, expected
    assert any("/audit-log" in template for template in templates), f"no audit-log route walked: {sorted(templates)}"

    # Nothing of the victim's changed, and the attacker still has their own workspace.
    assert snapshot(api, tenants) == before
    own = api.get(f"/api/v1/workspaces/{tenants.attacker_workspace['id']}", headers=tenants.attacker.headers)
    assert own.status_code == 200


class LeakBody(BaseModel):
    title: str


def test_the_walker_catches_a_route_that_forgets_scoping(api, make_person, make_workspace):
    """Plant routes that get isolation wrong in each way we know, and watch the walker flag them."""
    leaky = APIRouter(prefix="/api/v1/workspaces/{workspace_id}")

    @leaky.get("/leak-open")
    def leak_open(workspace_id: uuid.UUID) -> dict:
        return {"workspace_id": str(workspace_id)}  # no authentication at all

    @leaky.get("/leak-any-person")
    def leak_any_person(workspace_id: uuid.UUID, principal: PrincipalDep) -> dict:
        return {"workspace_id": str(workspace_id)}  # authenticated, but never asks about membership

    @leaky.delete("/leak-forbidden")
    def leak_forbidden(workspace_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> dict:
        user_id = principal.user.id if principal.user else None
        member = session.scalar(
            select(Membership).where(Membership.workspace_id == workspace_id, Membership.user_id == user_id)
        )
        if member is None:
            raise Forbidden("Not a member")  # 403: tells the caller the workspace exists
        return {}

    @leaky.get("/leak-things/{thing_id}")
    def leak_own_not_found(workspace_id: uuid.UUID, thing_id: uuid.UUID, principal: PrincipalDep) -> dict:
        raise NotFound("Thing not found")  # a 404, but not the scoping helper's: membership never checked

    @leaky.post("/leak-validates-first")
    def leak_validates_first(workspace_id: uuid.UUID, body: LeakBody, principal: PrincipalDep, session: SessionDep) -> dict:
        # The membership check runs after the body's validation: a stranger learns 422 first.
        user_id = principal.user.id if principal.user else None
        if session.scalar(select(Membership).where(Membership.workspace_id == workspace_id, Membership.user_id == user_id)) is None:
            raise NotFound("Workspace not found")
        return {}

    api.app.include_router(leaky)
    api.app.openapi_schema = None  # let the schema see the planted routes

    tenants = two_tenants(api, make_person, make_workspace)
    walk = walk_workspace_routes(api, tenants.victim_workspace["id"], tenants.callers, tenants.real_ids)

    prefix = "/api/v1/workspaces/{workspace_id}"
    assert walk.flagged(f"{prefix}/leak-open")
    assert any("anonymous" in p and "expected 401" in p for p in walk.flagged(f"{prefix}/leak-open"))
    assert any("got 200" in p for p in walk.flagged(f"{prefix}/leak-any-person"))
    assert any("got 403" in p for p in walk.flagged(f"{prefix}/leak-forbidden"))
    assert any("'Thing not found'" in p for p in walk.flagged(f"{prefix}/leak-things/{{thing_id}}"))
    assert any("got 422" in p and "body {}" in p for p in walk.flagged(f"{prefix}/leak-validates-first"))
    # …and only those: every real route is still clean.
    planted = {f"{prefix}/leak-open", f"{prefix}/leak-any-person", f"{prefix}/leak-forbidden",
               f"{prefix}/leak-things/{{thing_id}}", f"{prefix}/leak-validates-first"}
    assert all(any(f" {path} " in p for path in planted) for p in walk.problems), walk.problems


def test_minimal_bodies_are_valid(api, make_person, make_workspace):
    """The walker's bodies pass validation, so the 404s above are not validation errors in disguise."""
    alice = make_person()
    workspace = make_workspace(alice)
    schema = api.app.openapi()
    components = schema["components"]
    invitation_body = json_body(schema["paths"]["/api/v1/workspaces/{workspace_id}/invitations"]["post"], components)
    response = api.post(f"/api/v1/workspaces/{workspace['id']}/invitations", json=invitation_body, headers=alice.headers)
    assert response.status_code == 201, response.text
    key_body = json_body(schema["paths"]["/api/v1/workspaces/{workspace_id}/api-keys"]["post"], components)
    assert api.post(f"/api/v1/workspaces/{workspace['id']}/api-keys", json=key_body, headers=alice.headers).status_code == 201
    rename = json_body(schema["paths"]["/api/v1/workspaces/{workspace_id}"]["patch"], components)
    assert api.patch(f"/api/v1/workspaces/{workspace['id']}", json=rename, headers=alice.headers).status_code == 200
