"""Column types and mixins shared by every domain's models."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import BigInteger, DateTime, Integer, TypeDecorator, Uuid
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column

T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column; use a3e.core.models.utcnow()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# An auto-incrementing 64-bit key on PostgreSQL that SQLite accepts as its rowid alias.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UUIDPrimaryKey:
    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False)


def column_attributes(model: type[Any]) -> list[Any]:
    """Every mapped column of `model`, in a fixed order: select these to build `detached()`."""
    from sqlalchemy import inspect

    return [getattr(model, attribute.key) for attribute in inspect(model).column_attrs]


@cache
def _column_keys(model: type[Any]) -> tuple[str, ...]:
    from sqlalchemy import inspect

    return tuple(attribute.key for attribute in inspect(model).column_attrs)


def detached(model: type[T], values: Sequence[Any]) -> T:
    """An instance of `model` from a row of `column_attributes(model)`, as if it had been loaded by
    a session that has since closed: its attributes read without I/O, and
    `session.merge(instance, load=False)` puts it into a session without a SELECT."""
    from sqlalchemy.orm import make_transient_to_detached

    instance = model(**dict(zip(_column_keys(model), values, strict=True)))
    make_transient_to_detached(instance)
    return instance
