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
