"""List endpoints answer `{"items": [...], "total": n, "limit": l, "offset": o}`."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

T = TypeVar("T")

MAX_LIMIT = 200


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class PageParams(BaseModel):
    limit: int
    offset: int


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="How many items at most")] = 50,
    offset: Annotated[int, Query(ge=0, description="How many items to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)
