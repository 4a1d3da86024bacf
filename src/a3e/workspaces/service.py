"""Workspaces, their members and invitations.

Every function runs inside the request's transaction: it flushes, never commits, and records its
audit event in that same transaction. Emails go out only once the transaction has committed.

Changes to who is an owner are serialised per workspace (`lock_owners`), so that two concurrent
requests cannot each remove "one of two" owners and leave the workspace with none.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from a3e.audit.service import record_event
from a3e.auth.models import User
from a3e.core.errors import AppError, Conflict, NotFound
from a3e.core.models import utcnow
from a3e.core.pagination import PageParams
from a3e.core.security import new_token, token_digest
from a3e.webhooks import events as webhook_events
from a3e.webhooks.publish import publish
from a3e.workspaces.models import Invitation, Membership, Workspace
from a3e.workspaces.permissions import Action, Role
from a3e.workspaces.scoping import WorkspaceAccess, not_found

if TYPE_CHECKING:
    from starlette.requests import Request

    from a3e.auth.principal import Principal
    from a3e.email.service import EmailSender

logger = logging.getLogger("a3e.workspaces")

INVITATION_TTL = timedelta(days=7)
INVITATION_TEMPLATE = "invitation_sent"


class LastOwner(Conflict):
    code = "last_owner"


class InvalidInvitation(AppError):
    status_code = 400
    code = "invalid_invitation"


# ---------------------------------------------------------------------------------------------
# Work to do once the transaction has committed (emails): never for a change that rolled back.

_CALLBACKS = "a3e.after_commit"
_LISTENING = "a3e.after_commit.listening"


def after_commit(session: Session, callback: Callable[[], Any]) -> None:
    if not session.info.get(_LISTENING):
        event.listen(session, "after_commit", _run_after_commit)
        event.listen(session, "after_soft_rollback", _drop_after_commit)
        session.info[_LISTENING] = True
    session.info.setdefault(_CALLBACKS, []).append(callback)


def _run_after_commit(session: Session) -> None:
    for callback in session.info.pop(_CALLBACKS, []):
        try:
            callback()
        except Exception:  # the change is committed; a failed notification must not undo the answer
            logger.exception("a post-commit action failed")


def _drop_after_commit(session: Session, previous_transaction: Any = None) -> None:
    session.info.pop(_CALLBACKS, None)


def send_email_after_commit(
    session: Session, mailer: EmailSender, template: str, to: str, context: dict[str, Any]
) -> None:
    from a3e.email.service import InvalidRecipient

    try:
        mailer.render(template, to, context)  # a template error is a bug: surface it before committing
    except InvalidRecipient as exc:
        raise AppError(f"Cannot send email to {to!r}: {exc}", status_code=422, code="invalid_email") from None
    after_commit(session, lambda: mailer.send(template, to, context))


# ---------------------------------------------------------------------------------------------
# Workspaces


def _total(session: Session, statement: Any, key: Any) -> int:
    """How many rows `statement` matches, counting `key` (one column, so no names collide)."""
    counted = statement.order_by(None).with_only_columns(key, maintain_column_froms=True).subquery()
    return session.scalar(select(func.count()).select_from(counted)) or 0


def list_for_user(session: Session, user: User, page: PageParams) -> tuple[list[tuple[Workspace, str]], int]:
    statement = (
        select(Workspace, Membership.role)
        .join(Membership, Membership.workspace_id == Workspace.id)
        .where(Membership.user_id == user.id)
        .order_by(Workspace.created_at, Workspace.id)
    )
    rows = session.execute(statement.limit(page.limit).offset(page.offset)).all()
    return [(workspace, role) for workspace, role in rows], _total(session, statement, Workspace.id)


def create_workspace(session: Session, principal: Principal, name: str, *, request: Request | None = None) -> Workspace:
    assert principal.user is not None
    workspace = Workspace(id=uuid.uuid4(), name=name, created_by_id=principal.user.id)
    session.add(workspace)
    session.flush()
    session.add(Membership(workspace_id=workspace.id, user_id=principal.user.id, role=Role.OWNER.value))
    record_event(
        session,
        "workspace.created",
        request=request,
        principal=principal,
        workspace_id=workspace.id,
        target_type="workspace",
        target_id=workspace.id,
        details={"name": name},
    )
    session.flush()
    return workspace


def rename_workspace(session: Session, access: WorkspaceAccess, name: str, *, request: Request | None = None) -> Workspace:
    workspace = session.merge(access.workspace, load=False)
    old = workspace.name
    if old != name:
        workspace.name = name
        record_event(
            session,
            "workspace.renamed",
            request=request,
            principal=access.principal,
            workspace_id=workspace.id,
            target_type="workspace",
            target_id=workspace.id,
            details={"from": old, "to": name},
        )
        session.flush()
    return workspace


def delete_workspace(session: Session, access: WorkspaceAccess, *, request: Request | None = None) -> None:
    """Members, invitations and API keys go with it (ON DELETE CASCADE); the audit log stays."""
    # Owner rows first, in the same order as every member change: a concurrent change waits for
    # the deletion (then finds nothing) instead of deadlocking with the cascade.
    lock_owners(session, access.workspace_id)
    workspace = session.merge(access.workspace, load=False)
    record_event(
        session,
        "workspace.deleted",
        request=request,
        principal=access.principal,
        workspace_id=workspace.id,
        target_type="workspace",
        target_id=workspace.id,
        details={"name": workspace.name},
    )
    session.delete(workspace)
    session.flush()


# ---------------------------------------------------------------------------------------------
# Members


@dataclass(frozen=True)
class MemberView:
    user_id: uuid.UUID
    email: str
    name: str
    role: str
    joined_at: datetime


def _member_view(membership: Membership, user: User) -> MemberView:
    return MemberView(user.id, user.email, user.name, membership.role, membership.created_at)


def list_members(session: Session, access: WorkspaceAccess, page: PageParams) -> tuple[list[MemberView], int]:
    statement = access.scoped(
        select(Membership, User).join(User, User.id == Membership.user_id), Membership
    ).order_by(Membership.created_at, Membership.id)
    rows = session.execute(statement.limit(page.limit).offset(page.offset)).all()
    return [_member_view(m, u) for m, u in rows], _total(session, statement, Membership.id)


def lock_owners(session: Session, workspace_id: uuid.UUID) -> list[Membership]:
    """The workspace's owners, locked until the transaction ends, freshly read.

    PostgreSQL: SELECT … FOR UPDATE on the owner rows; a concurrent change waits, then sees the
    committed result (a row no longer an owner drops out). SQLite has no row locks: a no-op write
    first takes the database's write lock, so nothing read from here on can change before commit.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            update(Workspace)
            .where(Workspace.id == workspace_id)
            .values(updated_at=Workspace.updated_at)
            .execution_options(synchronize_session=False)
        )
    return list(
        session.scalars(
            select(Membership)
            .where(Membership.workspace_id == workspace_id, Membership.role == Role.OWNER.value)
            .order_by(Membership.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


def _membership(session: Session, workspace_id: uuid.UUID, user_id: uuid.UUID) -> Membership | None:
    return session.scalar(
        select(Membership)
        .where(Membership.workspace_id == workspace_id, Membership.user_id == user_id)
        .execution_options(populate_existing=True)
    )


def _recheck(session: Session, access: WorkspaceAccess, action: Action) -> WorkspaceAccess:
    """The caller's access read again under the lock: their role may have changed meanwhile."""
    assert access.principal.user is not None
    membership = _membership(session, access.workspace_id, access.principal.user.id)
    if membership is None:
        raise not_found()
    fresh = WorkspaceAccess(access.workspace, access.principal, Role(membership.role), membership)
    fresh.require(action)
    return fresh


def _target(session: Session, access: WorkspaceAccess, user_id: uuid.UUID) -> tuple[Membership, User]:
    row = session.execute(
        access.scoped(select(Membership, User).join(User, User.id == Membership.user_id), Membership)
        .where(Membership.user_id == user_id)
        .execution_options(populate_existing=True)
    ).first()
    if row is None:
        raise NotFound("Member not found", details={"user_id": str(user_id)})
    return row[0], row[1]


def _guard_last_owner(owners: list[Membership], leaving: Membership, message: str) -> None:
    if leaving.role == Role.OWNER.value and not any(owner.id != leaving.id for owner in owners):
        raise LastOwner(message)


def change_role(
    session: Session, access: WorkspaceAccess, user_id: uuid.UUID, role: Role, *, request: Request | None = None
) -> MemberView:
    owners = lock_owners(session, access.workspace_id)
    actor = _recheck(session, access, Action.MEMBERS_MANAGE)
    membership, user = _target(session, access, user_id)
    old = Role(membership.role)
    if old == role:
        return _member_view(membership, user)
    if Role.OWNER in (old, role):
        actor.require(Action.OWNERS_MANAGE)
    _guard_last_owner(
        owners,
        membership,
        f"{user.email} is the only owner of this workspace, and a workspace must keep at least one owner: "
        "make another member an owner first.",
    )
    membership.role = role.value
    record_event(
        session,
        "member.role_changed",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="user",
        target_id=user.id,
        details={"email": user.email, "from": old.value, "to": role.value},
    )
    session.flush()
    return _member_view(membership, user)


def remove_member(session: Session, access: WorkspaceAccess, user_id: uuid.UUID, *, request: Request | None = None) -> None:
    owners = lock_owners(session, access.workspace_id)
    actor = _recheck(session, access, Action.MEMBERS_MANAGE)
    membership, user = _target(session, access, user_id)
    if membership.role == Role.OWNER.value:
        actor.require(Action.OWNERS_MANAGE)
    _guard_last_owner(
        owners,
        membership,
        f"{user.email} is the only owner of this workspace, and a workspace must keep at least one owner: "
        "make another member an owner first.",
    )
    session.delete(membership)
    record_event(
        session,
        "member.removed",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="user",
        target_id=user.id,
        details={"email": user.email, "role": membership.role},
    )
    session.flush()


def leave(session: Session, access: WorkspaceAccess, *, request: Request | None = None) -> None:
    assert access.principal.user is not None
    owners = lock_owners(session, access.workspace_id)
    membership = _membership(session, access.workspace_id, access.principal.user.id)
    if membership is None:
        raise not_found()
    _guard_last_owner(
        owners,
        membership,
        "You are the only owner of this workspace, and a workspace must keep at least one owner: "
        "make another member an owner before leaving, or delete the workspace.",
    )
    session.delete(membership)
    record_event(
        session,
        "member.left",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="user",
        target_id=access.principal.user.id,
        details={"role": membership.role},
    )
    session.flush()


# ---------------------------------------------------------------------------------------------
# Invitations


def invitation_status(invitation: Invitation, now: datetime | None = None) -> str:
    if invitation.accepted_at is not None:
        return "accepted"
    if invitation.revoked_at is not None:
        return "revoked"
    return "expired" if invitation.expires_at <= (now or utcnow()) else "pending"


def accept_url(app_url: str, token: str) -> str:
    return f"{app_url.rstrip('/')}/invitations/{token}"


def _send_invitation(
    session: Session, mailer: EmailSender, access: WorkspaceAccess, invitation: Invitation, token: str
) -> None:
    inviter = access.principal.user
    assert inviter is not None
    send_email_after_commit(
        session,
        mailer,
        INVITATION_TEMPLATE,
        invitation.email,
        {
            "email": invitation.email,
            "workspace_name": access.workspace.name,
            "inviter_name": inviter.name,
            "inviter_email": inviter.email,
            "role": invitation.role,
            "accept_url": accept_url(mailer.settings.app_url, token),
            "expires_at": invitation.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
        },
    )


def _require_for_role(access: WorkspaceAccess, role: str) -> None:
    """Managing an invitation to the owner role takes an owner."""
    if role == Role.OWNER.value:
        access.require(Action.OWNERS_MANAGE)


def create_invitation(
    session: Session,
    access: WorkspaceAccess,
    email: str,
    role: Role,
    *,
    mailer: EmailSender,
    request: Request | None = None,
) -> tuple[Invitation, str]:
    assert access.principal.user is not None
    email = email.strip().lower()
    _require_for_role(access, role.value)
    already = session.scalar(
        access.scoped(select(Membership.id).join(User, User.id == Membership.user_id), Membership).where(
            func.lower(User.email) == email
        )
    )
    if already is not None:
        raise Conflict(f"{email} is already a member of this workspace", code="already_member")
    from a3e.billing.service import enforce_seat_limit

    enforce_seat_limit(session, mailer.settings, access.workspace_id, invitee_email=email)  # 402 over the plan's seats
    now = utcnow()
    # A new invitation to the same address replaces any outstanding one: only the newest link works.
    replaced = list(
        session.scalars(
            access.scoped(select(Invitation), Invitation).where(
                Invitation.email == email, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None)
            )
        )
    )
    for old in replaced:
        old.revoked_at = now
    token = new_token()
    invitation = Invitation(
        id=uuid.uuid4(),
        workspace_id=access.workspace_id,
        email=email,
        role=role.value,
        token_hash=token_digest(token),
        invited_by_id=access.principal.user.id,
        created_at=now,
        expires_at=now + INVITATION_TTL,
        last_sent_at=now,
        send_count=1,
    )
    session.add(invitation)
    details: dict[str, Any] = {"email": email, "role": role.value}
    if replaced:
        details["replaced"] = [str(old.id) for old in replaced]
    record_event(
        session,
        "invitation.created",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="invitation",
        target_id=invitation.id,
        details=details,
    )
    session.flush()
    _send_invitation(session, mailer, access, invitation, token)
    return invitation, token


def list_invitations(session: Session, access: WorkspaceAccess, page: PageParams) -> tuple[list[Invitation], int]:
    """Outstanding invitations (not accepted, not revoked), newest first; expired ones included."""
    statement = access.scoped(
        select(Invitation).where(Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None)), Invitation
    ).order_by(Invitation.created_at.desc(), Invitation.id)
    items = list(session.scalars(statement.limit(page.limit).offset(page.offset)))
    return items, _total(session, statement, Invitation.id)


def _invitation(session: Session, access: WorkspaceAccess, invitation_id: uuid.UUID) -> Invitation:
    invitation = session.scalar(
        access.scoped(select(Invitation).where(Invitation.id == invitation_id), Invitation).with_for_update()
    )
    if invitation is None:
        raise NotFound("Invitation not found", details={"invitation_id": str(invitation_id)})
    return invitation


def resend_invitation(
    session: Session,
    access: WorkspaceAccess,
    invitation_id: uuid.UUID,
    *,
    mailer: EmailSender,
    request: Request | None = None,
) -> tuple[Invitation, str]:
    """A new token (the old link stops working), a new expiry, and the email again."""
    invitation = _invitation(session, access, invitation_id)
    _require_for_role(access, invitation.role)
    status = invitation_status(invitation)
    if status in ("accepted", "revoked"):
        raise Conflict(f"This invitation was {status}; invite {invitation.email} again instead", code="invitation_closed")
    now = utcnow()
    token = new_token()
    invitation.token_hash = token_digest(token)
    invitation.expires_at = now + INVITATION_TTL
    invitation.last_sent_at = now
    invitation.send_count += 1
    record_event(
        session,
        "invitation.resent",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="invitation",
        target_id=invitation.id,
        details={"email": invitation.email, "role": invitation.role, "send_count": invitation.send_count},
    )
    session.flush()
    _send_invitation(session, mailer, access, invitation, token)
    return invitation, token


def revoke_invitation(
    session: Session, access: WorkspaceAccess, invitation_id: uuid.UUID, *, request: Request | None = None
) -> None:
    invitation = _invitation(session, access, invitation_id)
    _require_for_role(access, invitation.role)
    if invitation.accepted_at is not None:
        raise Conflict("This invitation has already been accepted; remove the member instead", code="invitation_closed")
    if invitation.revoked_at is not None:
        return  # revoking twice is the same as once
    invitation.revoked_at = utcnow()
    record_event(
        session,
        "invitation.revoked",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="invitation",
        target_id=invitation.id,
        details={"email": invitation.email, "role": invitation.role},
    )
    session.flush()


def accept_invitation(
    session: Session, principal: Principal, token: str, *, request: Request | None = None
) -> tuple[Workspace, Membership]:
    user = principal.user
    assert user is not None
    invitation = session.scalar(select(Invitation).where(Invitation.token_hash == token_digest(token)))
    if invitation is None:
        raise InvalidInvitation("This invitation link is not valid; ask for a new invitation")
    status = invitation_status(invitation)
    if status == "accepted":
        raise InvalidInvitation("This invitation has already been used")
    if status == "revoked":
        raise InvalidInvitation("This invitation was withdrawn; ask for a new invitation")
    if status == "expired":
        raise InvalidInvitation("This invitation has expired; ask for it to be sent again")
    if user.email.lower() != invitation.email.lower():
        raise AppError(
            f"This invitation is for {invitation.email}; log in with that address to accept it",
            status_code=403,
            code="invitation_email_mismatch",
        )
    now = utcnow()
    # Single use even under concurrency: only one request can move it out of "pending".
    claimed = session.execute(
        update(Invitation)
        .where(
            Invitation.id == invitation.id,
            Invitation.token_hash == invitation.token_hash,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > now,
        )
        .values(accepted_at=now, accepted_by_id=user.id)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        raise InvalidInvitation("This invitation has already been used")
    if _membership(session, invitation.workspace_id, user.id) is not None:
        raise Conflict("You are already a member of this workspace", code="already_member")
    workspace = session.get(Workspace, invitation.workspace_id)
    if workspace is None:  # pragma: no cover - the invitation goes with its workspace
        raise InvalidInvitation("This invitation link is not valid; ask for a new invitation")
    membership = Membership(workspace_id=workspace.id, user_id=user.id, role=invitation.role)
    session.add(membership)
    try:
        session.flush()
    except IntegrityError:  # joined by another request at the same moment
        raise Conflict("You are already a member of this workspace", code="already_member") from None
    common = {"request": request, "principal": principal, "workspace_id": workspace.id}
    record_event(
        session,
        "invitation.accepted",
        target_type="invitation",
        target_id=invitation.id,
        details={"email": invitation.email, "role": invitation.role},
        **common,
    )
    record_event(
        session,
        "member.joined",
        target_type="user",
        target_id=user.id,
        details={"email": user.email, "role": invitation.role, "invitation_id": str(invitation.id)},
        **common,
    )
    publish(session, workspace.id, "member.joined",
            lambda: webhook_events.member_joined(workspace.id, user.id, user.email, invitation.role))
    session.flush()
    return workspace, membership
