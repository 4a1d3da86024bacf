"""A workspace's API keys: created (the key shown once), listed, revoked.

A key is `a3e_` followed by 43 random URL-safe characters; only its SHA-256 digest and its first
characters (`prefix`, to tell keys apart) are stored. Authentication is in `a3e.auth.principal`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from a3e.apikeys.models import ApiKey
from a3e.audit.service import record_event
from a3e.auth.principal import API_KEY_PREFIX
from a3e.core.errors import NotFound
from a3e.core.models import utcnow
from a3e.core.pagination import PageParams
from a3e.core.security import new_token, token_digest
from a3e.workspaces.scoping import WorkspaceAccess

if TYPE_CHECKING:
    from starlette.requests import Request

PREFIX_LENGTH = 12


def create_key(
    session: Session, access: WorkspaceAccess, name: str, scope: str, *, request: Request | None = None
) -> tuple[ApiKey, str]:
    assert access.principal.user is not None
    secret = new_token(API_KEY_PREFIX)
    key = ApiKey(
        id=uuid.uuid4(),
        workspace_id=access.workspace_id,
        name=name,
        scope=scope,
        prefix=secret[:PREFIX_LENGTH],
        key_hash=token_digest(secret),
        created_by_id=access.principal.user.id,
        created_at=utcnow(),
    )
    session.add(key)
    record_event(
        session,
        "api_key.created",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="api_key",
        target_id=key.id,
        details={"name": name, "scope": scope, "prefix": key.prefix},
    )
    session.flush()
    return key, secret


def list_keys(session: Session, access: WorkspaceAccess, page: PageParams) -> tuple[list[ApiKey], int]:
    """Every key of the workspace, revoked ones included (with revoked_at), newest first."""
    items = list(
        session.scalars(
            access.scoped(select(ApiKey), ApiKey)
            .order_by(ApiKey.created_at.desc(), ApiKey.id)
            .limit(page.limit)
            .offset(page.offset)
        )
    )
    total = session.scalar(access.scoped(select(func.count()).select_from(ApiKey), ApiKey)) or 0
    return items, total


def revoke_key(session: Session, access: WorkspaceAccess, key_id: uuid.UUID, *, request: Request | None = None) -> ApiKey:
    key = session.scalar(access.scoped(select(ApiKey).where(ApiKey.id == key_id), ApiKey).with_for_update())
    if key is None:
        raise NotFound("API key not found", details={"key_id": str(key_id)})
    if key.revoked_at is not None:
        return key  # revoking twice is the same as once
    key.revoked_at = utcnow()
    record_event(
        session,
        "api_key.revoked",
        request=request,
        principal=access.principal,
        workspace_id=access.workspace_id,
        target_type="api_key",
        target_id=key.id,
        details={"name": key.name, "scope": key.scope, "prefix": key.prefix},
    )
    session.flush()
    return key
