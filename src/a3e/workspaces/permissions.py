"""Who may do what in a workspace: the one permission table. Routes ask for an action, never a role."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    EDITOR = "editor"
    VIEWER = "viewer"


class Action(StrEnum):
    WORKSPACE_READ = "workspace.read"
    WORKSPACE_UPDATE = "workspace.update"
    WORKSPACE_DELETE = "workspace.delete"
    MEMBERS_READ = "members.read"
    MEMBERS_MANAGE = "members.manage"  # change roles, remove members
    OWNERS_MANAGE = "owners.manage"  # grant or take away the owner role
    INVITATIONS_MANAGE = "invitations.manage"
    API_KEYS_MANAGE = "api_keys.manage"
    AUDIT_READ = "audit.read"
    EVIDENCE_READ = "evidence.read"
    EVIDENCE_WRITE = "evidence.write"
    CATALOGS_MANAGE = "catalogs.manage"  # choose the catalogs the workspace is reviewed against, import custom ones
    STANDARDS_STATUS = "standards.status"  # move a standard's work along (not started → in review)
    STANDARDS_JUDGE = "standards.judge"  # judge compliance, and approve (or reopen) a standard's work
    LINKS_REVIEW = "links.review"  # accept or reject suggestions, link evidence to standards by hand
    BILLING_READ = "billing.read"  # see the plan, its limits and usage
    BILLING_MANAGE = "billing.manage"  # subscribe (checkout), open the customer portal
    WEBHOOKS_MANAGE = "webhooks.manage"  # register outgoing webhook endpoints, see and redeliver deliveries


_VIEWER = {Action.WORKSPACE_READ, Action.MEMBERS_READ, Action.EVIDENCE_READ}
_EDITOR = _VIEWER | {Action.EVIDENCE_WRITE, Action.STANDARDS_STATUS, Action.LINKS_REVIEW}
_ADMIN = _EDITOR | {
    Action.WORKSPACE_UPDATE,
    Action.MEMBERS_MANAGE,
    Action.INVITATIONS_MANAGE,
    Action.API_KEYS_MANAGE,
    Action.AUDIT_READ,
    Action.CATALOGS_MANAGE,
    Action.STANDARDS_JUDGE,
    Action.BILLING_READ,
    Action.BILLING_MANAGE,
    Action.WEBHOOKS_MANAGE,
}
_OWNER = _ADMIN | {Action.WORKSPACE_DELETE, Action.OWNERS_MANAGE}

PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.OWNER: frozenset(_OWNER),
    Role.ADMIN: frozenset(_ADMIN),
    Role.EDITOR: frozenset(_EDITOR),
    Role.VIEWER: frozenset(_VIEWER),
}

# What an API key may do, by its scope: never manage people, keys or the workspace itself.
API_KEY_PERMISSIONS: dict[str, frozenset[Action]] = {
    "read": frozenset({Action.WORKSPACE_READ, Action.EVIDENCE_READ}),
    "read_write": frozenset({Action.WORKSPACE_READ, Action.EVIDENCE_READ, Action.EVIDENCE_WRITE}),
}


def role_allows(role: str, action: Action) -> bool:
    return action in PERMISSIONS.get(Role(role), frozenset())
