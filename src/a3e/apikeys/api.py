"""A workspace's API keys (admins and owners). The key is shown once, in the create response."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from a3e.apikeys import service
from a3e.apikeys.models import ApiKey
from a3e.apikeys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut
from a3e.core.database import SessionDep
from a3e.core.pagination import Page, PageParams, page_params
from a3e.workspaces.permissions import Action
from a3e.workspaces.scoping import WorkspaceAccess, require

router = APIRouter(prefix="/api/v1/workspaces/{workspace_id}/api-keys", tags=["api keys"])

ManageKeys = Annotated[WorkspaceAccess, require(Action.API_KEYS_MANAGE)]


def _out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut.model_validate(key, from_attributes=True)


@router.get("", summary="The workspace's API keys, revoked ones included (never the keys themselves)")
def list_api_keys(
    session: SessionDep, page: Annotated[PageParams, Depends(page_params)], access: ManageKeys
) -> Page[ApiKeyOut]:
    keys, total = service.list_keys(session, access, page)
    return Page(items=[_out(k) for k in keys], total=total, **page.model_dump())


@router.post("", status_code=201, summary="Create an API key; the key is shown only in this response")
def create_api_key(body: ApiKeyCreate, request: Request, session: SessionDep, access: ManageKeys) -> ApiKeyCreated:
    key, secret = service.create_key(session, access, body.name, body.scope, request=request)
    return ApiKeyCreated(**_out(key).model_dump(), key=secret)


@router.delete("/{key_id}", status_code=204, response_class=Response, summary="Revoke an API key")
def revoke_api_key(
    key_id: Annotated[uuid.UUID, Path(description="The API key's id")],
    request: Request,
    session: SessionDep,
    access: ManageKeys,
) -> Response:
    service.revoke_key(session, access, key_id, request=request)
    return Response(status_code=204)
