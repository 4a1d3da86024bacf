"""Standards catalogs over HTTP.

`/api/v1/accreditors…` serves the built-in catalogs. They are public — no login — because they
hold no tenant data: accreditors' ids and titles are public facts, the rest is our own summary,
and an institution choosing A3E (or a front end before sign-in) should be able to browse them. The
answers are serialized once and carry an ETag, so a repeat request costs a dictionary lookup (or
a 304).

`/api/v1/workspaces/{workspace_id}/catalogs…` is the workspace's selection: members read it,
admins and owners change it (`Action.CATALOGS_MANAGE`), and every change is audited.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from a3e.core.database import SessionDep
from a3e.core.errors import AppError
from a3e.core.pagination import Page, PageParams, page_params
from a3e.standards import service
from a3e.standards.catalogs import registry
from a3e.standards.schemas import (
    AccreditorList,
    AccreditorOut,
    AccreditorStandards,
    CatalogOut,
    CatalogSelect,
    CatalogStandards,
    CustomCatalogIn,
)
from a3e.standards.validator import MAX_FILE_BYTES, CatalogInvalid, detect_format, parse_catalog, parse_items
from a3e.workspaces.permissions import Action
from a3e.workspaces.scoping import WorkspaceAccess, require

accreditors_router = APIRouter(prefix="/api/v1/accreditors", tags=["standards"])
catalogs_router = APIRouter(prefix="/api/v1/workspaces/{workspace_id}/catalogs", tags=["standards"])

_JSON = "application/json"
_CACHE = "public, max-age=300"


def _cached_json(request: Request, body: bytes, etag: str) -> Response:
    if etag and etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": _CACHE})
    return Response(body, media_type=_JSON, headers={"ETag": etag, "Cache-Control": _CACHE})


@accreditors_router.get("", response_model=AccreditorList, summary="The built-in accreditor catalogs and their editions")
def list_accreditors(request: Request) -> Response:
    reg = registry()
    return _cached_json(request, reg.list_json, reg.list_etag)


@accreditors_router.get("/{code}", response_model=AccreditorOut, summary="One accreditor and its editions")
def get_accreditor(code: Annotated[str, Path(max_length=32, description="e.g. SACSCOC")]) -> dict[str, Any]:
    return service.accreditor_or_404(code).summary()


@accreditors_router.get(
    "/{code}/standards",
    response_model=AccreditorStandards,
    summary="An accreditor's standards as a tree (each node's code is the accreditor's own id, e.g. 8.2.a)",
)
def accreditor_standards(
    request: Request,
    code: Annotated[str, Path(max_length=32, description="e.g. SACSCOC")],
    edition: Annotated[str | None, Query(max_length=32, description="Omitted: the default edition")] = None,
) -> Response:
    accreditor = service.accreditor_or_404(code)
    found = service.edition_or_404(accreditor, edition)
    head = json.dumps(
        {"accreditor": {"code": accreditor.code, "name": accreditor.name}, "edition": found.summary(), "standard_count": found.standard_count},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    body = head[:-1] + b',"items":' + found.tree_json + b"}"
    return _cached_json(request, body, found.etag)


# ---- a workspace's catalogs ---------------------------------------------------------------------

ReadCatalogs = Annotated[WorkspaceAccess, require(Action.WORKSPACE_READ)]
ManageCatalogs = Annotated[WorkspaceAccess, require(Action.CATALOGS_MANAGE)]


@dataclass
class CatalogPayload:
    """What POST …/catalogs was given: a selection, custom items as JSON, or an uploaded file."""

    select: CatalogSelect | None = None
    custom_json: CustomCatalogIn | None = None
    data: bytes | None = None
    filename: str | None = None
    content_type: str | None = None
    name: str | None = None
    version: str | None = None
    description: str | None = None
    format: str | None = None


def _invalid(message: str, location: tuple[str, ...] = ("body",), kind: str = "value_error") -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": location, "msg": message, "input": None}])


def _pydantic_errors(exc: ValidationError) -> RequestValidationError:
    return RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)])


async def catalog_payload(request: Request) -> CatalogPayload:
    """Read the POST body after the scoping check (declared after it), so that someone outside the
    workspace learns nothing from validation errors."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _multipart_payload(request)
    if content_type not in ("application/json", ""):
        raise AppError(
            f"Send JSON, or a multipart form with a file; not {content_type}",
            code="unsupported_media_type",
            status_code=415,
        )
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError:
        raise _invalid("the body is not valid JSON", kind="json_invalid") from None
    if not isinstance(body, dict):
        raise _invalid("expected a JSON object: {\"accreditor\": …} or {\"name\": …, \"items\": […]}")
    try:
        if "accreditor" in body:
            return CatalogPayload(select=CatalogSelect.model_validate(body))
        if "items" in body:
            return CatalogPayload(custom_json=CustomCatalogIn.model_validate(body))
    except ValidationError as exc:
        raise _pydantic_errors(exc) from None
    raise _invalid(
        "give accreditor (and optionally edition) to select a built-in catalog, or name and items to import a custom one",
        kind="missing",
    )


async def _multipart_payload(request: Request) -> CatalogPayload:
    form = await request.form(max_files=1, max_fields=8)
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise _invalid("a multipart upload needs a file field", ("body", "file"), "missing")
        data = await upload.read(MAX_FILE_BYTES + 1)

        def text(field: str, limit: int) -> str | None:
            value = form.get(field)
            if value is None:
                return None
            if not isinstance(value, str):
                raise _invalid(f"{field} must be a text field", ("body", field))
            value = value.strip()
            if len(value) > limit:
                raise _invalid(f"{field} is longer than {limit} characters", ("body", field), "string_too_long")
            return value or None

        return CatalogPayload(
            data=data,
            filename=upload.filename,
            content_type=upload.content_type,
            name=text("name", 200),
            version=text("version", 64),
            description=text("description", 20_000),
            format=text("format", 8),
        )
    finally:
        await form.close()


Payload = Annotated[CatalogPayload, Depends(catalog_payload)]

_SELECT_SCHEMA = CatalogSelect.model_json_schema()
_CUSTOM_SCHEMA = CustomCatalogIn.model_json_schema()
_POST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"oneOf": [_SELECT_SCHEMA, _CUSTOM_SCHEMA]}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "CSV (id, parent, title, text), JSON or YAML; at most 5 MB"},
                        "name": {"type": "string", "maxLength": 200, "description": "Default: the file's name, or the name inside a JSON/YAML file"},
                        "version": {"type": "string", "maxLength": 64},
                        "description": {"type": "string"},
                        "format": {"type": "string", "enum": ["csv", "json", "yaml"], "description": "Default: from the file's extension or content"},
                    },
                }
            },
        },
    }
}


def _out(view: service.CatalogView) -> CatalogOut:
    return CatalogOut.model_validate(view.as_dict())


@catalogs_router.get("", summary="The catalogs this workspace is reviewed against")
def list_catalogs(session: SessionDep, access: ReadCatalogs, page: Annotated[PageParams, Depends(page_params)]) -> Page[CatalogOut]:
    views, total = service.list_catalogs(session, access, page)
    return Page(items=[_out(v) for v in views], total=total, **page.model_dump())


@catalogs_router.post(
    "",
    status_code=201,
    summary="Select a built-in catalog ({\"accreditor\": \"SACSCOC\"}) or import a custom one (JSON items, or a multipart file)",
    openapi_extra=_POST_BODY,
    responses={200: {"description": "The built-in catalog was already selected", "model": CatalogOut}},
)
def add_catalog(request: Request, response: Response, session: SessionDep, access: ManageCatalogs, payload: Payload) -> CatalogOut:
    if payload.select is not None:
        view, created = service.select_builtin(
            session, access, payload.select.accreditor, payload.select.edition, request=request
        )
        if not created:
            response.status_code = 200
        return _out(view)
    if payload.custom_json is not None:
        body = payload.custom_json
        try:
            parsed = parse_items(body.items)
        except CatalogInvalid as exc:
            raise service.InvalidCatalog.from_error(exc) from None
        view = service.import_custom(
            session,
            access,
            parsed,
            name=body.name,
            version=body.version,
            description=body.description,
            source_format="json",
            source_filename=None,
            sha256=service.items_digest(body.items),
            request=request,
        )
        return _out(view)
    assert payload.data is not None
    fmt = (payload.format or detect_format(payload.filename, payload.content_type, payload.data)).lower()
    fmt = "yaml" if fmt == "yml" else fmt
    try:
        parsed = parse_catalog(payload.data, fmt, filename=payload.filename)
    except CatalogInvalid as exc:
        raise service.InvalidCatalog.from_error(exc) from None
    name = payload.name or parsed.name or (PurePath(payload.filename).stem if payload.filename else None)
    if not name:
        raise _invalid("name the catalog: a name field (the file gives none)", ("body", "name"), "missing")
    view = service.import_custom(
        session,
        access,
        parsed,
        name=name[:200],
        version=payload.version or parsed.version,
        description=payload.description or parsed.description,
        source_format=fmt,
        source_filename=PurePath(payload.filename).name if payload.filename else None,
        sha256=service.content_digest(payload.data),
        request=request,
    )
    return _out(view)


CatalogId = Annotated[uuid.UUID, Path(description="The catalog's id in this workspace (from the list)")]


@catalogs_router.get("/{catalog_id}", summary="One selected catalog")
def get_catalog(catalog_id: CatalogId, session: SessionDep, access: ReadCatalogs) -> CatalogOut:
    return _out(service.get_catalog(session, access, catalog_id))


@catalogs_router.delete(
    "/{catalog_id}",
    status_code=204,
    response_class=Response,
    summary="Stop reviewing against a catalog (a custom catalog is deleted with its standards)",
)
def remove_catalog(catalog_id: CatalogId, request: Request, session: SessionDep, access: ManageCatalogs) -> Response:
    service.remove_catalog(session, access, catalog_id, request=request)
    return Response(status_code=204)


@catalogs_router.get(
    "/{catalog_id}/standards",
    response_model=CatalogStandards,
    summary="A selected catalog's standards as a tree, custom catalogs included",
)
def catalog_standards(catalog_id: CatalogId, session: SessionDep, access: ReadCatalogs) -> Response:
    view = service.get_catalog(session, access, catalog_id)
    catalog = _out(view).model_dump_json().encode("utf-8")
    if view.custom is not None:
        items = json.dumps(service.custom_tree(session, access, view.custom), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        count = view.custom.item_count
    elif view.edition is not None:
        items, count = view.edition.tree_json, view.edition.standard_count
    else:  # an edition this release no longer ships
        items, count = b"[]", 0
    body = b'{"catalog":' + catalog + b',"standard_count":' + str(count).encode() + b',"items":' + items + b"}"
    return Response(body, media_type=_JSON)


routers = [accreditors_router, catalogs_router]
