"""Request and response bodies of the accounts API. Requests refuse unknown fields (422)."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, EmailStr, Field, StringConstraints

from a3e.auth.policy import MAX_LENGTH as PASSWORD_MAX_LENGTH


def _plain_address(value: object) -> object:
    # EmailStr also accepts "Name <address>"; an account's email is the bare address.
    if isinstance(value, str):
        value = value.strip()
        if "<" in value or ">" in value:
            raise ValueError("value is not a valid email address: write the bare address, e.g. name@example.edu")
    return value


def _lower(value: str) -> str:
    return value.lower()


def _printable(value: str) -> str:
    # Control characters (NUL above all: PostgreSQL refuses it in text) have no place in a name
    # or an address; refuse them here rather than fail in the database.
    if any(unicodedata.category(character) == "Cc" for character in value):
        raise ValueError("must not contain control characters")
    return value


# Validated by email-validator, stripped and lower-cased: the form stored in users.email.
Email = Annotated[EmailStr, BeforeValidator(_plain_address), AfterValidator(_lower)]
# Any password is accepted here; the policy (length, common, email) is checked by the service,
# so that its violations name the rule. The bound keeps hashing work bounded.
Password = Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX_LENGTH)]
OpaqueToken = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=512)]
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_printable)
]
# Login takes whatever was typed: an unknown or malformed address is just a failed login.
LoginEmail = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=320),
    AfterValidator(_printable),
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(StrictModel):
    email: Email
    password: Password
    name: Name


class LoginRequest(StrictModel):
    email: LoginEmail
    password: Password


class LoginForm(BaseModel):
    """The OAuth2 password grant (what the Authorize button of /docs sends)."""

    model_config = ConfigDict(extra="ignore")  # scope, client_id, client_secret: not used

    grant_type: Literal["password"] | None = None
    username: LoginEmail = Field(description="The account's email address")
    password: Password


class RefreshRequest(StrictModel):
    refresh_token: OpaqueToken


class LogoutRequest(StrictModel):
    refresh_token: OpaqueToken


class UpdateMeRequest(StrictModel):
    name: Name


class ChangePasswordRequest(StrictModel):
    current_password: Password
    new_password: Password


class PasswordResetRequest(StrictModel):
    email: Email


class PasswordResetConfirm(StrictModel):
    token: OpaqueToken
    new_password: Password


class VerifyEmailConfirm(StrictModel):
    token: OpaqueToken


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    email_verified: bool
    created_at: datetime


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires")


class Accepted(BaseModel):
    """The same answer whatever the outcome, so that it reveals nothing about other people."""

    status: str
    message: str
