"""What the catalog endpoints accept and answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from a3e.standards.validator import MAX_ITEMS, MAX_NAME_LENGTH, MAX_VERSION_LENGTH

# ---- built-in accreditors -----------------------------------------------------------------------


class EditionOut(BaseModel):
    edition: str = Field(description="The edition's label, e.g. 2018 or 14; pass it as ?edition=")
    title: str
    effective: str | None = Field(description="The date the edition took effect, where known")
    default: bool = Field(description="The edition used when none is named")
    standard_count: int = Field(description="Every node of the tree: sections, standards and their parts")
    top_level_count: int
    numbering: str | None
    notes: str | None = Field(description="What this catalog includes and leaves out")


class AccreditorOut(BaseModel):
    code: str = Field(description="SACSCOC, HLC, MSCHE, NECHE, NWCCU or WSCUC")
    name: str
    default_edition: str
    standard_count: int = Field(description="Nodes in the default edition")
    editions: list[EditionOut]


class AccreditorList(BaseModel):
    items: list[AccreditorOut]
    total: int


class StandardNode(BaseModel):
    code: str = Field(description="The id as the accreditor (or the framework) numbers it, e.g. 8.2.a")
    parent: str | None
    title: str
    kind: str | None = Field(description="section, standard, part, criterion, core_component, cfr, …")
    description: str | None = Field(
        description="Built-in catalogs: A3E's own short summary of what the standard asks for. "
        "Custom catalogs: the text given at import."
    )
    typical_evidence: list[str] = Field(description="Documents that typically demonstrate it (built-in catalogs)")
    edition: str | None
    children: list[StandardNode]


class AccreditorRef(BaseModel):
    code: str
    name: str


class AccreditorStandards(BaseModel):
    accreditor: AccreditorRef
    edition: EditionOut
    standard_count: int
    items: list[StandardNode] = Field(description="The top-level nodes, each with its children")


# ---- a workspace's catalogs ---------------------------------------------------------------------


class CatalogSelect(BaseModel):
    """Select a built-in catalog."""

    model_config = ConfigDict(extra="forbid")

    accreditor: str = Field(min_length=1, max_length=16, description="SACSCOC, HLC, MSCHE, NECHE, NWCCU or WSCUC")
    edition: str | None = Field(None, max_length=32, description="Omitted: the accreditor's default edition")


class CustomCatalogIn(BaseModel):
    """Import a custom catalog given as JSON (for larger files, upload them as multipart)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, description="e.g. ABET Criteria for Accrediting Engineering Programs")
    version: str | None = Field(None, max_length=MAX_VERSION_LENGTH, description="e.g. 2025-2026")
    description: str | None = Field(None, max_length=20_000)
    items: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_ITEMS,
        description="Each item: id, title, parent (optional), text (optional); or nest sub-items in children",
    )


class CatalogOut(BaseModel):
    id: uuid.UUID = Field(description="The selection's id: use it as {catalog_id}")
    kind: Literal["builtin", "custom"]
    name: str = Field(description="The accreditor's or the framework's name")
    title: str = Field(description="The catalog's full title, with its edition or version")
    accreditor: str | None = Field(description="Built-in: the accreditor's code")
    edition: str | None = Field(description="Built-in: the edition; custom: the version, if any")
    standard_count: int
    max_depth: int | None = None
    custom_catalog_id: uuid.UUID | None = None
    description: str | None = None
    source_format: Literal["csv", "json", "yaml"] | None = None
    source_filename: str | None = None
    content_sha256: str | None = Field(None, description="Custom: SHA-256 of the imported file")
    selected_at: datetime
    selected_by_id: uuid.UUID | None


class CatalogStandards(BaseModel):
    catalog: CatalogOut
    standard_count: int
    items: list[StandardNode]


class CatalogProblem(BaseModel):
    location: str = Field(description="e.g. line 7, or item 3 (id '1.2')")
    message: str
    line: int | None = None
    item: int | None = None
