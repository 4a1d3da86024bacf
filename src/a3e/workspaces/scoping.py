"""The one way into a workspace. Every workspace-scoped route and query goes through here.

A caller who is not a member gets 404 — the workspace's existence is not revealed — and a member
whose role lacks the permission gets 403. API keys reach only their own workspace, with the
permissions of their scope.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Request
from sqlalchemy import Select, and_, bindparam, select, update

from a3e.apikeys.models import ApiKey
from a3e.auth.models import User
from a3e.auth.principal import (
    API_KEY_PREFIX,
    Principal,
    Unauthorized,
    access_token_claims,
    api_key_needs_touch,
    bearer_token,
    check_api_key,
    check_token_user,
    oauth2_scheme,
)
from a3e.core.errors import Forbidden, NotFound
from a3e.core.models import UTCDateTime, column_attributes, detached, utcnow
from a3e.core.security import token_digest
from a3e.workspaces.models import Membership, Workspace
from a3e.workspaces.permissions import API_KEY_PERMISSIONS, PERMISSIONS, Action, Role

T = TypeVar("T", bound=Select[Any])


@dataclass(frozen=True)
class WorkspaceAccess:
    workspace: Workspace
    principal: Principal
    role: Role | None  # None for an API key
    membership: Membership | None

    @property
    def workspace_id(self) -> uuid.UUID:
        return self.workspace.id

    def allowed(self, action: Action) -> bool:
        if self.role is not None:
            return action in PERMISSIONS[self.role]
        assert self.principal.api_key is not None
        return action in API_KEY_PERMISSIONS[self.principal.api_key.scope]

    def require(self, action: Action) -> None:
        if not self.allowed(action):
            who = f"the {self.role.value} role" if self.role else f"a {self.principal.api_key.scope} API key"
            raise Forbidden(f"Not allowed: {action.value} needs more than {who}", details={"action": action.value})

    def scoped(self, statement: T, model: Any) -> T:
        """Restrict a query on a workspace-owned model to this workspace."""
        return statement.where(model.workspace_id == self.workspace.id)


def not_found() -> NotFound:
    return NotFound("Workspace not found")


# The caller and their access to one workspace, in one statement each (no row: the token names
# nobody; a row without membership: not a member). Built once, run by `Database.reads` on the
# event loop.
_USER_COLUMNS = len(column_attributes(User))
_MEMBERSHIP_COLUMNS = len(column_attributes(Membership))
_MEMBER_ACCESS = (
    select(*column_attributes(User), *column_attributes(Membership), *column_attributes(Workspace))
    .select_from(User)
    .outerjoin(Membership, and_(Membership.user_id == User.id, Membership.workspace_id == bindparam("workspace_id")))
    .outerjoin(Workspace, Workspace.id == Membership.workspace_id)
    .where(User.id == bindparam("user_id"))
)
_API_KEY_COLUMNS = len(column_attributes(ApiKey))
_API_KEY_ACCESS = (
    select(*column_attributes(ApiKey), *column_attributes(Workspace))
    .join(Workspace, Workspace.id == ApiKey.workspace_id)
    .where(ApiKey.key_hash == bindparam("key_hash"))
)
_TOUCH_API_KEY = (
    update(ApiKey).where(ApiKey.id == bindparam("key_id")).values(last_used_at=bindparam("now", type_=UTCDateTime()))
)


async def _member_access(request: Request, token: str, workspace_id: uuid.UUID) -> WorkspaceAccess:
    claims, user_id = access_token_claims(request, token)
    reads = request.app.state.database.reads
    row = await reads.fetch_one(_MEMBER_ACCESS, {"user_id": user_id, "workspace_id": workspace_id})
    user = detached(User, row[:_USER_COLUMNS]) if row is not None else None
    check_token_user(claims, user)
    membership_values = row[_USER_COLUMNS : _USER_COLUMNS + _MEMBERSHIP_COLUMNS]
    workspace_values = row[_USER_COLUMNS + _MEMBERSHIP_COLUMNS :]
    if membership_values[0] is None or workspace_values[0] is None:
        raise not_found()
    membership = detached(Membership, membership_values)
    return WorkspaceAccess(detached(Workspace, workspace_values), Principal(user=user), Role(membership.role), membership)


async def _api_key_access(request: Request, token: str, workspace_id: uuid.UUID) -> WorkspaceAccess:
    reads = request.app.state.database.reads
    row = await reads.fetch_one(_API_KEY_ACCESS, {"key_hash": token_digest(token)})
    key = check_api_key(detached(ApiKey, row[:_API_KEY_COLUMNS]) if row is not None else None)
    if key.workspace_id != workspace_id:
        raise not_found()
    now = utcnow()
    if api_key_needs_touch(key, now):
        await reads.execute(_TOUCH_API_KEY, {"key_id": key.id, "now": now})
        key.last_used_at = now
    return WorkspaceAccess(detached(Workspace, row[_API_KEY_COLUMNS:]), Principal(api_key=key), None, None)


def require(action: Action):
    """Dependency: the caller's access to the `{workspace_id}` in the path, for `action`.

    Authentication and the membership check are one statement, run on the event loop (see
    `Database.reads`): this runs on every workspace-scoped request. The workspace, user, key and
    membership it gives are detached from any session; a service that changes one merges it into
    its session first (`session.merge(access.workspace, load=False)`, no SELECT).
    """

    async def dependency(
        request: Request,
        _documented: Annotated[str | None, Depends(oauth2_scheme)],
        workspace_id: uuid.UUID = Path(description="The workspace's id"),
    ) -> WorkspaceAccess:
        token = bearer_token(request)
        if token is None:
            raise Unauthorized()
        if token.startswith(API_KEY_PREFIX):
            access = await _api_key_access(request, token, workspace_id)
        else:
            access = await _member_access(request, token, workspace_id)
        access.require(action)
        return access

    dependency.__name__ = f"require_{action.value.replace('.', '_')}"
    return Depends(dependency)
