"""What the workspace, member and invitation endpoints accept and answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator

from a3e.workspaces.permissions import Role

WorkspaceName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkspaceCreate(_Input):
    name: WorkspaceName


class WorkspaceUpdate(_Input):
    name: WorkspaceName


class WorkspaceOut(BaseModel):
    id: uuid.UUID
    name: str
    role: Role | None = Field(description="The caller's role; null when the caller is an API key")
    created_at: datetime
    updated_at: datetime


class MemberOut(BaseModel):
    user_id: uuid.UUID
    email: str
    name: str
    role: Role
    joined_at: datetime


class MemberUpdate(_Input):
    role: Role


class InvitationCreate(_Input):
    email: EmailStr
    role: Role

    @field_validator("email")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()


class InvitationOut(BaseModel):
    id: uuid.UUID
    email: str
    role: Role
    status: Literal["pending", "expired"] = Field(
        description="pending until expires_at; an expired invitation can be resent"
    )
    invited_by_id: uuid.UUID | None
    created_at: datetime
    expires_at: datetime
    last_sent_at: datetime
    send_count: int


class InvitationCreated(InvitationOut):
    token: str = Field(description="Shown only in this response; the invitee receives it by email")
    accept_url: str
