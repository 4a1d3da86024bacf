"""Workspaces, members, invitations.

Every route under /workspaces/{workspace_id} gets the caller's access from
`a3e.workspaces.scoping.require(...)`: a non-member gets 404, a member without the permission 403.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from a3e.auth.principal import CurrentUser, Principal, PrincipalDep
from a3e.core.database import SessionDep
from a3e.core.errors import Forbidden
from a3e.core.pagination import Page, PageParams, page_params
from a3e.workspaces import service
from a3e.workspaces.models import Invitation, Workspace
from a3e.workspaces.permissions import Action, Role
from a3e.workspaces.schemas import (
    InvitationCreate,
    InvitationCreated,
    InvitationOut,
    MemberOut,
    MemberUpdate,
    WorkspaceCreate,
    WorkspaceOut,
    WorkspaceUpdate,
)
from a3e.workspaces.scoping import WorkspaceAccess, require

router = APIRouter(prefix="/api/v1")

Paging = Annotated[PageParams, Depends(page_params)]
UserId = Annotated[uuid.UUID, Path(description="The member's user id")]
InvitationId = Annotated[uuid.UUID, Path(description="The invitation's id")]


def _workspace_out(workspace: Workspace, role: str | Role | None) -> WorkspaceOut:
    return WorkspaceOut(
        id=workspace.id,
        name=workspace.name,
        role=Role(role) if role is not None else None,
        created_at=workspace.created_at,
        updated_at=workspace.updated_at,
    )


def _invitation_out(invitation: Invitation) -> InvitationOut:
    return InvitationOut(
        id=invitation.id,
        email=invitation.email,
        role=Role(invitation.role),
        status=service.invitation_status(invitation),  # type: ignore[arg-type]
        invited_by_id=invitation.invited_by_id,
        created_at=invitation.created_at,
        expires_at=invitation.expires_at,
        last_sent_at=invitation.last_sent_at,
        send_count=invitation.send_count,
    )


def _invitation_created(request: Request, invitation: Invitation, token: str) -> InvitationCreated:
    return InvitationCreated(
        **_invitation_out(invitation).model_dump(),
        token=token,
        accept_url=service.accept_url(request.app.state.settings.app_url, token),
    )


def _people_only(principal: Principal) -> None:
    if principal.user is None:
        raise Forbidden("This endpoint is for people, not API keys", code="user_required")


# ---------------------------------------------------------------------------------------------
# Workspaces


@router.get("/workspaces", tags=["workspaces"], summary="The workspaces I belong to, with my role")
def list_workspaces(session: SessionDep, principal: PrincipalDep, page: Paging) -> Page[WorkspaceOut]:
    if principal.api_key is not None:  # a key belongs to exactly one workspace
        workspace = session.get(Workspace, principal.api_key.workspace_id)
        items = [_workspace_out(workspace, None)] if workspace is not None else []
        return Page(items=items[page.offset : page.offset + page.limit], total=len(items), **page.model_dump())
    assert principal.user is not None
    rows, total = service.list_for_user(session, principal.user, page)
    return Page(items=[_workspace_out(w, role) for w, role in rows], total=total, **page.model_dump())


@router.post("/workspaces", status_code=201, tags=["workspaces"], summary="Create a workspace; I become its owner")
def create_workspace(
    body: WorkspaceCreate, request: Request, session: SessionDep, user: CurrentUser, principal: PrincipalDep
) -> WorkspaceOut:
    workspace = service.create_workspace(session, principal, body.name, request=request)
    return _workspace_out(workspace, Role.OWNER)


@router.get("/workspaces/{workspace_id}", tags=["workspaces"], summary="A workspace, with my role")
async def get_workspace(access: Annotated[WorkspaceAccess, require(Action.WORKSPACE_READ)]) -> WorkspaceOut:
    # No I/O here (the access check loaded the workspace), so no worker-thread hop either.
    return _workspace_out(access.workspace, access.role)


@router.patch("/workspaces/{workspace_id}", tags=["workspaces"], summary="Rename a workspace (admins and owners)")
def update_workspace(
    body: WorkspaceUpdate,
    request: Request,
    session: SessionDep,
    access: Annotated[WorkspaceAccess, require(Action.WORKSPACE_UPDATE)],
) -> WorkspaceOut:
    workspace = service.rename_workspace(session, access, body.name, request=request)
    return _workspace_out(workspace, access.role)


@router.delete(
    "/workspaces/{workspace_id}",
    status_code=204,
    response_class=Response,
    tags=["workspaces"],
    summary="Delete a workspace with its members, invitations and API keys (owners)",
)
def delete_workspace(
    request: Request, session: SessionDep, access: Annotated[WorkspaceAccess, require(Action.WORKSPACE_DELETE)]
) -> Response:
    service.delete_workspace(session, access, request=request)
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------
# Members


@router.get("/workspaces/{workspace_id}/members", tags=["members"], summary="The workspace's members")
def list_members(
    session: SessionDep, page: Paging, access: Annotated[WorkspaceAccess, require(Action.MEMBERS_READ)]
) -> Page[MemberOut]:
    members, total = service.list_members(session, access, page)
    return Page(
        items=[MemberOut.model_validate(m, from_attributes=True) for m in members], total=total, **page.model_dump()
    )


@router.patch(
    "/workspaces/{workspace_id}/members/{user_id}",
    tags=["members"],
    summary="Change a member's role (admins; granting or taking the owner role: owners)",
)
def update_member(
    user_id: UserId,
    body: MemberUpdate,
    request: Request,
    session: SessionDep,
    access: Annotated[WorkspaceAccess, require(Action.MEMBERS_MANAGE)],
) -> MemberOut:
    member = service.change_role(session, access, user_id, body.role, request=request)
    return MemberOut.model_validate(member, from_attributes=True)


@router.delete(
    "/workspaces/{workspace_id}/members/{user_id}",
    status_code=204,
    response_class=Response,
    tags=["members"],
    summary="Remove a member (admins; removing an owner: owners)",
)
def remove_member(
    user_id: UserId,
    request: Request,
    session: SessionDep,
    access: Annotated[WorkspaceAccess, require(Action.MEMBERS_MANAGE)],
) -> Response:
    service.remove_member(session, access, user_id, request=request)
    return Response(status_code=204)


@router.post(
    "/workspaces/{workspace_id}/leave",
    status_code=204,
    response_class=Response,
    tags=["members"],
    summary="Leave a workspace (the last owner cannot)",
)
def leave_workspace(
    request: Request, session: SessionDep, access: Annotated[WorkspaceAccess, require(Action.WORKSPACE_READ)]
) -> Response:
    _people_only(access.principal)
    service.leave(session, access, request=request)
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------
# Invitations


@router.post(
    "/workspaces/{workspace_id}/invitations",
    status_code=201,
    tags=["invitations"],
    summary="Invite someone by email (admins; inviting an owner: owners). The token is shown once.",
)
def create_invitation(
    body: InvitationCreate,
    request: Request,
    session: SessionDep,
    access: Annotated[WorkspaceAccess, require(Action.INVITATIONS_MANAGE)],
) -> InvitationCreated:
    invitation, token = service.create_invitation(
        session, access, body.email, body.role, mailer=request.app.state.email, request=request
    )
    return _invitation_created(request, invitation, token)


@router.get(
    "/workspaces/{workspace_id}/invitations",
    tags=["invitations"],
    summary="Outstanding invitations (pending or expired), newest first",
)
def list_invitations(
    session: SessionDep, page: Paging, access: Annotated[WorkspaceAccess, require(Action.INVITATIONS_MANAGE)]
) -> Page[InvitationOut]:
    items, total = service.list_invitations(session, access, page)
    return Page(items=[_invitation_out(i) for i in items], total=total, **page.model_dump())


@router.post(
    "/workspaces/{workspace_id}/invitations/{invitation_id}/resend",
    tags=["invitations"],
    summary="Send an invitation again with a new token and expiry; the old link stops working",
)
def resend_invitation(
    invitation_id: InvitationId,
    request: Request,
    session: SessionDep,
    access: Annotated[WorkspaceAccess, require(Action.INVITATIONS_MANAGE)],
) -> InvitationCreated:
    invitation, token = service.resend_invitation(
        session, access, invitation_id, mailer=request.app.state.email, request=request
    )
    return _invitation_created(request, invitation, token)


@router.delete(
    "/workspaces/{workspace_id}/invitations/{invitation_id}",
    status_code=204,
    response_class=Response,
    tags=["invitations"],
    summary="Revoke an invitation",
)
def revoke_invitation(
    invitation_id: InvitationId,
    request: Request,
    session: SessionDep,
    access: Annotated[WorkspaceAccess, require(Action.INVITATIONS_MANAGE)],
) -> Response:
    service.revoke_invitation(session, access, invitation_id, request=request)
    return Response(status_code=204)


@router.post(
    "/invitations/{token}/accept",
    tags=["invitations"],
    summary="Accept an invitation as the logged-in person it was sent to",
)
def accept_invitation(
    token: Annotated[str, Path(min_length=1, max_length=200, description="The token from the invitation link")],
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    principal: PrincipalDep,
) -> WorkspaceOut:
    workspace, membership = service.accept_invitation(session, principal, token, request=request)
    return _workspace_out(workspace, membership.role)
