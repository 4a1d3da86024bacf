"""Who is calling: a user (access token) or an integration (workspace API key).

Every authenticated route depends on `get_principal`; routes for people only (`CurrentUser`)
refuse API keys.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import select, update

from a3e.apikeys.models import ApiKey
from a3e.auth.models import User
from a3e.core.database import SessionDep
from a3e.core.errors import AppError, Forbidden
from a3e.core.models import utcnow
from a3e.core.security import InvalidToken, token_digest

API_KEY_PREFIX = "a3e_"
# Writing last_used_at on every request would turn each read into a write; a minute is plenty.
_LAST_USED_RESOLUTION = timedelta(seconds=60)


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "Authentication required: send Authorization: Bearer <token>") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True)
class Principal:
    user: User | None = None
    api_key: ApiKey | None = None

    @property
    def label(self) -> str:
        if self.user is not None:
            return self.user.email
        assert self.api_key is not None
        return f"api key {self.api_key.name}"


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("The Authorization header must be: Bearer <token>")
    return token.strip()


def password_version(user: User) -> int:
    """Carried in each access token: a password change (or reset) invalidates every earlier token."""
    return int(user.password_changed_at.timestamp() * 1000)


def access_token_claims(request: Request, token: str) -> tuple[dict[str, Any], uuid.UUID]:
    """The verified claims of an access token and the user id they name (or 401)."""
    try:
        claims = request.app.state.access_tokens.claims(token)
        return claims, uuid.UUID(str(claims["sub"]))
    except InvalidToken as exc:
        raise Unauthorized(f"{str(exc).capitalize()}; log in again or refresh it") from None
    except ValueError:
        raise Unauthorized("The access token is invalid") from None


def check_token_user(claims: dict[str, Any], user: User | None) -> User:
    """The token's user, if it still exists, is active, and has not changed password since."""
    if user is None or not user.is_active:
        raise Unauthorized("The access token is invalid")
    if claims.get("pwd") != password_version(user):
        raise Unauthorized("The password was changed since this token was issued; log in again")
    return user


def check_api_key(key: ApiKey | None) -> ApiKey:
    if key is None or key.revoked_at is not None:
        raise Unauthorized("The API key is invalid or revoked")
    return key


def api_key_needs_touch(key: ApiKey, now: datetime) -> bool:
    return key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION


def _user_from_access_token(request: Request, session: SessionDep, token: str) -> User:
    claims, user_id = access_token_claims(request, token)
    return check_token_user(claims, session.get(User, user_id))


def _api_key(session: SessionDep, token: str) -> ApiKey:
    key = check_api_key(session.scalar(select(ApiKey).where(ApiKey.key_hash == token_digest(token))))
    now = utcnow()
    if api_key_needs_touch(key, now):
        session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        key.last_used_at = now
    return key


# Declared so that /docs shows every protected route with the padlock and the Authorize button
# logs in through the password form; the header itself is read by bearer_token().
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/login", auto_error=False)


def get_principal(
    request: Request, session: SessionDep, _documented: Annotated[str | None, Depends(oauth2_scheme)] = None
) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized()
    if token.startswith(API_KEY_PREFIX):
        return Principal(api_key=_api_key(session, token))
    return Principal(user=_user_from_access_token(request, session, token))


def get_current_user(principal: Annotated[Principal, Depends(get_principal)]) -> User:
    if principal.user is None:
        raise Forbidden("This endpoint is for people, not API keys", code="user_required")
    return principal.user


PrincipalDep = Annotated[Principal, Depends(get_principal)]
CurrentUser = Annotated[User, Depends(get_current_user)]
