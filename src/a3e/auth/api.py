"""The accounts API: /api/v1/auth/…

Every write commits before the endpoint returns: the request's session would otherwise commit only
after the response is sent, and a client acting on the response at once (logging in right after
registering, refreshing right after logging in) could find nothing yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from a3e.auth import service
from a3e.auth.principal import CurrentUser
from a3e.auth.schemas import (
    Accepted,
    ChangePasswordRequest,
    LoginForm,
    LoginRequest,
    LogoutRequest,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    RegisterRequest,
    TokenPair,
    UpdateMeRequest,
    UserOut,
    VerifyEmailConfirm,
)
from a3e.core.database import SessionDep

LOGIN_PATH = "/api/v1/auth/login"
router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

# Documents the bearer scheme (and the Authorize button of /docs) on the routes that need a user.
# It never refuses anything itself: `CurrentUser` does the checking.

_ERROR = {"description": 'An error, in the error envelope: {"error": {"code", "message", …}}'}
_INVALID = {422: {**_ERROR, "description": "Invalid request (unknown field, wrong type, weak password…)"}}
_NEEDS_USER = {401: {**_ERROR, "description": "Missing, expired or invalid access token"}}


# ---- login accepts JSON and the OAuth2 password form -----------------------------------------


@dataclass(frozen=True)
class Credentials:
    email: str
    password: str


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _validation_error(exc: ValidationError) -> RequestValidationError:
    errors = [
        {"loc": ("body", *error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    return RequestValidationError(errors)


def _parse(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None


async def login_credentials(request: Request) -> Credentials:
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type in _FORM_TYPES:
        form = await request.form()
        parsed = _parse(LoginForm, {key: form.get(key) for key in form.keys()})
        return Credentials(parsed.username, parsed.password)
    raw = await request.body()
    if not raw.strip():
        raise RequestValidationError([{"loc": ("body",), "msg": "Field required", "type": "missing"}])
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RequestValidationError([{"loc": ("body",), "msg": "JSON decode error", "type": "json_invalid"}]) from None
    parsed = _parse(LoginRequest, data)
    return Credentials(parsed.email, parsed.password)


_LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginRequest.model_json_schema()},
            "application/x-www-form-urlencoded": {"schema": LoginForm.model_json_schema()},
        },
    }
}


# ---- endpoints --------------------------------------------------------------------------------


@router.post(
    "/register",
    status_code=201,
    response_model=Accepted,
    responses=_INVALID,
    summary="Create an account",
    description=(
        "Creates the account and emails a verification link. The answer is the same whether or not "
        "the address was already registered (its owner is told by email instead), so it reveals "
        "nothing about who has an account. Log in with the email and password, then `GET /me`."
    ),
)
def register(body: RegisterRequest, request: Request, session: SessionDep) -> Accepted:
    answer = service.register(session, request, body)
    session.commit()
    return answer


@router.post(
    "/login",
    response_model=TokenPair,
    openapi_extra=_LOGIN_BODY,
    responses={
        401: {**_ERROR, "description": "Wrong email or password"},
        429: {**_ERROR, "description": "Too many failed attempts; see Retry-After"},
        **_INVALID,
    },
    summary="Log in: JSON {email, password} or the OAuth2 password form {username, password}",
)
def login(
    credentials: Annotated[Credentials, Depends(login_credentials)], request: Request, session: SessionDep
) -> TokenPair:
    tokens = service.login(session, request, credentials.email, credentials.password)
    session.commit()
    return tokens


@router.post(
    "/refresh",
    response_model=TokenPair,
    responses={401: {**_ERROR, "description": "Invalid, expired, revoked or reused refresh token"}, **_INVALID},
    summary="Exchange a refresh token for a new pair (the old refresh token stops working)",
)
def refresh(body: RefreshRequest, request: Request, session: SessionDep) -> TokenPair:
    tokens = service.refresh(session, request, body.refresh_token)
    session.commit()
    return tokens


@router.post(
    "/logout",
    status_code=204,
    response_class=Response,
    responses=_INVALID,
    summary="Sign out the session this refresh token belongs to (an access token is not needed)",
)
def logout(body: LogoutRequest, request: Request, session: SessionDep) -> None:
    service.logout(session, request, body.refresh_token)
    session.commit()


@router.get(
    "/me", response_model=UserOut, responses=_NEEDS_USER, summary="The current user"
)
def get_me(user: CurrentUser) -> UserOut:
    return service.user_out(user)


@router.patch(
    "/me",
    response_model=UserOut,
    responses={**_NEEDS_USER, **_INVALID},
    summary="Change the current user's name",
)
def update_me(body: UpdateMeRequest, user: CurrentUser, request: Request, session: SessionDep) -> UserOut:
    updated = service.update_me(session, request, user, body.name)
    session.commit()
    return updated


@router.post(
    "/password",
    status_code=204,
    response_class=Response,
    responses={
        **_NEEDS_USER,
        400: {**_ERROR, "description": "The current password is wrong"},
        429: {**_ERROR, "description": "Too many wrong passwords; see Retry-After"},
        **_INVALID,
    },
    summary="Change the password: every session is signed out, log in again",
)
def change_password(body: ChangePasswordRequest, user: CurrentUser, request: Request, session: SessionDep) -> None:
    service.change_password(session, request, user, body.current_password, body.new_password)
    session.commit()


@router.post(
    "/password-reset/request",
    status_code=202,
    response_model=Accepted,
    responses=_INVALID,
    summary="Email a password-reset link (the answer never says whether the address has an account)",
)
def request_password_reset(body: PasswordResetRequest, request: Request, session: SessionDep) -> Accepted:
    answer = service.request_password_reset(session, request, body.email)
    session.commit()
    return answer


@router.post(
    "/password-reset/confirm",
    status_code=204,
    response_class=Response,
    responses={400: {**_ERROR, "description": "Invalid, expired or used link (code invalid_token)"}, **_INVALID},
    summary="Set a new password with the emailed token: every session is signed out",
)
def confirm_password_reset(body: PasswordResetConfirm, request: Request, session: SessionDep) -> None:
    service.confirm_password_reset(session, request, body.token, body.new_password)
    session.commit()


@router.post(
    "/verify-email/confirm",
    status_code=204,
    response_class=Response,
    responses={400: {**_ERROR, "description": "Invalid, expired or used link (code invalid_token)"}, **_INVALID},
    summary="Verify the email address with the emailed token",
)
def confirm_email(body: VerifyEmailConfirm, request: Request, session: SessionDep) -> None:
    service.confirm_email(session, request, body.token)
    session.commit()


@router.post(
    "/verify-email/request",
    status_code=202,
    response_model=Accepted,
    responses={
        **_NEEDS_USER,
        409: {**_ERROR, "description": "Already verified"},
        429: {**_ERROR, "description": "Too many emails in the last hour"},
    },
    summary="Send a new verification link to the current user",
)
def request_email_verification(user: CurrentUser, request: Request, session: SessionDep) -> Accepted:
    answer = service.resend_verification(session, request, user)
    session.commit()
    return answer
