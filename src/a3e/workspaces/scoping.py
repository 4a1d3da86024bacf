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
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from a3e.auth.principal import Principal, get_principal, oauth2_scheme
from a3e.core.database import SessionDep
from a3e.core.errors import Forbidden, NotFound
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


def workspace_access(session: Session, principal: Principal, workspace_id: uuid.UUID, action: Action) -> WorkspaceAccess:
    if principal.api_key is not None:
        if principal.api_key.workspace_id != workspace_id:
            raise not_found()
        workspace = session.get(Workspace, workspace_id)
        if workspace is None:
            raise not_found()
        access = WorkspaceAccess(workspace, principal, None, None)
    else:
        assert principal.user is not None
        row = session.execute(
            select(Workspace, Membership)
            .join(Membership, Membership.workspace_id == Workspace.id)
            .where(Workspace.id == workspace_id, Membership.user_id == principal.user.id)
        ).first()
        if row is None:
            raise not_found()
        workspace, membership = row
        access = WorkspaceAccess(workspace, principal, Role(membership.role), membership)
    access.require(action)
    return access


def require(action: Action):
    """Dependency: the caller's access to the `{workspace_id}` in the path, for `action`.

    Authentication and the membership check run together, in one worker-thread hop: each hop
    costs more than the queries it carries.
    """

    def dependency(
        request: Request,
        session: SessionDep,
        _documented: Annotated[str | None, Depends(oauth2_scheme)],
        workspace_id: uuid.UUID = Path(description="The workspace's id"),
    ) -> WorkspaceAccess:
        principal = get_principal(request, session)
        return workspace_access(session, principal, workspace_id, action)

    dependency.__name__ = f"require_{action.value.replace('.', '_')}"
    return Depends(dependency)
