from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from a3e.core.database import Base
from a3e.core.models import BigIntPK, Timestamps, UTCDateTime, UUIDPrimaryKey, utcnow


class User(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)  # stored lower-cased
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Access tokens issued before this moment are no longer accepted.
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class RefreshToken(UUIDPrimaryKey, Base):
    """One link in a rotation chain. Every refresh replaces the token with a new one of the same
    family; presenting a replaced token again means it was stolen, and the family is revoked."""

    __tablename__ = "refresh_tokens"

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid(), ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False)
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid(), index=True, nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_reason: Mapped[str | None] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(64))


class OneTimeToken(UUIDPrimaryKey, Base):
    """Emailed single-use tokens: password reset and email verification."""

    __tablename__ = "one_time_tokens"

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid(), ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False)
    purpose: Mapped[str] = mapped_column(String(32), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class LoginAttempt(Base):
    """A password check that has begun (`pending`) or failed (`failed`); a successful one is deleted.

    Counting recent rows per account and address, and per address, throttles guessing across every
    worker process and replica that shares the database (see a3e.auth.throttle).
    """

    __tablename__ = "login_attempts"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'failed')", name="state"),
        Index("ix_login_attempts_account_attempted_at", "account", "attempted_at"),
        Index("ix_login_attempts_client_ip_attempted_at", "client_ip", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(320), nullable=False)
    client_ip: Mapped[str] = mapped_column(String(64), nullable=False)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    state: Mapped[str] = mapped_column(String(8), nullable=False)
