"""What the API key endpoints accept and answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

KeyName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: KeyName
    scope: Literal["read", "read_write"]


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    scope: Literal["read", "read_write"]
    prefix: str = Field(description="The key's first characters, to tell keys apart")
    created_by_id: uuid.UUID | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself, shown only in this response: send it as Authorization: Bearer <key>")
