"""What the standard-status endpoints accept and answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from a3e.review.models import Judgment, Workflow


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow: Workflow | None = None
    judgment: Judgment | None = None
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)] | None = Field(
        None, description="Why, or what is left to do; an empty string clears it"
    )


class StandardStatusOut(BaseModel):
    catalog_id: uuid.UUID = Field(description="The workspace's catalog (selection) the standard belongs to")
    code: str
    title: str
    workflow: Workflow
    judgment: Judgment
    note: str | None
    updated_by_id: uuid.UUID | None
    updated_at: datetime | None = Field(description="Null while the standard was never touched")


class PassageRef(BaseModel):
    id: int
    document_id: uuid.UUID
    document_title: str
    revision_id: uuid.UUID
    page: int | None
    location: str | None
    char_start: int
    char_end: int
    text: str


class SuggestionOut(BaseModel):
    id: int
    catalog_id: uuid.UUID
    standard: str = Field(description="The standard's code")
    confidence: float = Field(ge=0, le=1)
    rank: int
    status: str
    reason: str | None
    decided_by_id: uuid.UUID | None
    decided_at: datetime | None
    created_at: datetime
    passage: PassageRef


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] | None = None


class LinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    standard: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] = Field(
        description="The standard's code"
    )
    catalog: uuid.UUID | None = Field(None, description="The workspace catalog's id; needed only when codes are shared")
    document_id: uuid.UUID
    passage_id: int | None = Field(None, description="A passage of the document; none links the whole document")
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] | None = None


class LinkOut(BaseModel):
    id: uuid.UUID
    catalog_id: uuid.UUID
    standard: str
    document_id: uuid.UUID
    passage_id: int | None
    origin: str = Field(description="manual, or suggested (accepted from the engine's suggestion)")
    confidence: float | None = Field(description="The suggestion's confidence, for a suggested link")
    suggestion_id: int | None
    note: str | None
    created_by_id: uuid.UUID | None
    created_at: datetime
