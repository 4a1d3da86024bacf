"""What the evidence endpoints accept and answer."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from a3e.evidence.models import RevisionStatus

MAX_TAGS = 20
MAX_TAG_LENGTH = 64

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]


def normalize_tags(value: Any) -> list[str] | None:
    """Tags from a list or a comma-separated string: trimmed, lower-cased, without duplicates."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple):
        raise ValueError("tags must be a list of strings or a comma-separated string")
    tags: list[str] = []
    for raw in value:
        if not isinstance(raw, str):
            raise ValueError("each tag must be a string")
        tag = " ".join(raw.split()).lower()
        if not tag:
            continue
        if len(tag) > MAX_TAG_LENGTH:
            raise ValueError(f"a tag has at most {MAX_TAG_LENGTH} characters: {tag[:20]}…")
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags per document")
    return tags


class DocumentMetadata(BaseModel):
    """Metadata sent with an upload (as form fields) or changed later (as JSON)."""

    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    description: LongText | None = None
    document_date: date | None = Field(None, description="When the document was issued (YYYY-MM-DD)")
    effective_date: date | None = Field(None, description="When it took effect")
    review_date: date | None = Field(None, description="When it is due for review, or expires")
    owner: ShortText | None = Field(None, description="The office or person responsible for it")
    tags: list[str] | None = Field(None, description="Labels; a comma-separated string is accepted in forms")

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> list[str] | None:
        return normalize_tags(value)

    @field_validator("description", "owner", mode="after")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


class UploadFields(DocumentMetadata):
    """The form fields of an upload: the metadata, plus nothing else (unknown fields are refused)."""

    @model_validator(mode="before")
    @classmethod
    def _blank_fields_are_unset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if not (isinstance(value, str) and not value.strip())}
        return data


class RevisionOut(BaseModel):
    id: uuid.UUID
    number: int
    filename: str
    kind: str
    media_type: str
    size_bytes: int
    sha256: str
    status: RevisionStatus
    status_detail: str | None = Field(description="Why processing failed, or a note such as a scanned PDF")
    attempts: int
    page_count: int | None
    passage_count: int | None
    created_at: datetime
    created_by_id: uuid.UUID | None
    processed_at: datetime | None


class DocumentOut(BaseModel):
    id: uuid.UUID
    workspace_id: uuid.UUID
    title: str
    description: str | None
    document_date: date | None
    effective_date: date | None
    review_date: date | None
    owner: str | None
    tags: list[str]
    status: RevisionStatus | None = Field(description="The current revision's processing state")
    status_detail: str | None
    revision_count: int
    current_revision: RevisionOut | None
    created_at: datetime
    updated_at: datetime
    created_by_id: uuid.UUID | None


class UploadOut(DocumentOut):
    duplicate: bool = Field(
        False, description="True when this content was already in the workspace: the existing document is returned"
    )


class DocumentDetail(DocumentOut):
    revisions: list[RevisionOut]


class SkippedFile(BaseModel):
    name: str
    reason: str


class BulkUploadOut(BaseModel):
    documents: list[UploadOut]
    skipped: list[SkippedFile]


class PassageOut(BaseModel):
    id: int
    revision_id: uuid.UUID
    ordinal: int
    text: str
    page: int | None
    char_start: int
    char_end: int
    heading: str | None
    location: str | None
