"""Accounts: registration, login, token rotation, passwords, email verification.

Each function works in the request's session. Where a failure must leave a trace that outlives
the request (a failed login, a detected refresh-token reuse) the function commits before raising,
since the request's session rolls back on an error.

Nothing here logs or audits a password or a token: audit details carry ids and reasons only.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request

from a3e.audit.models import AuditEvent
from a3e.audit.service import record_event
from a3e.auth.models import OneTimeToken, RefreshToken, User
from a3e.auth.policy import check_password
from a3e.auth.schemas import Accepted, RegisterRequest, TokenPair, UserOut
from a3e.auth.throttle import throttle_for
from a3e.core.clientip import client_ip
from a3e.core.errors import AppError, Conflict, RateLimited
from a3e.core.models import utcnow
from a3e.auth.principal import password_version
from a3e.core.security import Passwords, create_access_token, new_token, token_digest
from a3e.core.settings import Settings

logger = logging.getLogger("a3e.auth")

EMAIL_VERIFICATION = "email_verification"
PASSWORD_RESET = "password_reset"
VERIFICATION_TTL = timedelta(hours=24)
RESET_TTL = timedelta(hours=1)
# Emails anyone can trigger for someone else's address, at most this many an hour per account.
MAX_RESET_EMAILS_PER_HOUR = 5
MAX_VERIFICATION_EMAILS_PER_HOUR = 5
MAX_EXISTING_ACCOUNT_NOTICES_PER_HOUR = 3

REGISTERED = Accepted(
    status="registered",
    message="Check your inbox: we sent a message to this address. Follow its link to verify the address, then log in.",
)
RESET_REQUESTED = Accepted(
    status="accepted",
    message="If an account uses this address, we sent it a link to reset the password. The link is valid for one hour.",
)
VERIFICATION_SENT = Accepted(status="sent", message="We sent a new verification link to your address.")


class InvalidCredentials(AppError):
    status_code = 401
    code = "invalid_credentials"

    def __init__(self) -> None:
        super().__init__("Wrong email or password", headers={"WWW-Authenticate": "Bearer"})


class InvalidRefreshToken(AppError):
    status_code = 401
    code = "invalid_refresh_token"

    def __init__(self, message: str = "The refresh token is invalid, expired or revoked; log in again") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class InvalidOneTimeToken(AppError):
    status_code = 400
    code = "invalid_token"

    def __init__(self, what: str) -> None:
        super().__init__(f"This {what} link is invalid, expired or already used; ask for a new one")


class WrongCurrentPassword(AppError):
    status_code = 400
    code = "invalid_password"

    def __init__(self) -> None:
        super().__init__("The current password is wrong", details={"field": "current_password"})


# ---- helpers -------------------------------------------------------------------------------


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _passwords(request: Request) -> Passwords:
    return request.app.state.passwords


def _send(request: Request, template: str, to: str, context: dict[str, Any]) -> None:
    request.app.state.email.send(template, to, context)


def _link(request: Request, path: str, token: str) -> str:
    return f"{_settings(request).app_url}{path}?token={quote(token, safe='')}"


def _address(request: Request) -> str:
    return client_ip(request)[:64]


def user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        name=user.name,
        email_verified=user.email_verified_at is not None,
        created_at=user.created_at,
    )


def find_user(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email))


def _set_password(request: Request, user: User, password: str) -> None:
    """Store a new password. Access tokens issued before now stop working: each carries the
    password's version (`pwd`), which the principal compares with `password_changed_at`."""
    user.password_hash = _passwords(request).hash(password)
    user.password_changed_at = utcnow()


def _issue_tokens(session: Session, request: Request, user: User, family_id: uuid.UUID | None = None) -> TokenPair:
    settings = _settings(request)
    ttl = timedelta(minutes=settings.access_token_minutes)
    access_token, _ = create_access_token(
        settings.jwt_secret_key.get_secret_value(), str(user.id), ttl, pwd=password_version(user)
    )
    refresh_token = new_token()
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id or uuid.uuid4(),
            token_hash=token_digest(refresh_token),
            expires_at=utcnow() + timedelta(days=settings.refresh_token_days),
            client_ip=_address(request),
        )
    )
    return TokenPair(access_token=access_token, refresh_token=refresh_token, expires_in=int(ttl.total_seconds()))


def _revoke_all_sessions(session: Session, user: User, reason: str) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )


def _new_one_time_token(session: Session, user: User, purpose: str, ttl: timedelta) -> str:
    token = new_token()
    session.add(
        OneTimeToken(user_id=user.id, purpose=purpose, token_hash=token_digest(token), expires_at=utcnow() + ttl)
    )
    return token


def _recent_one_time_tokens(session: Session, user: User, purpose: str, since: datetime) -> list[datetime]:
    return list(
        session.scalars(
            select(OneTimeToken.created_at)
            .where(OneTimeToken.user_id == user.id, OneTimeToken.purpose == purpose, OneTimeToken.created_at > since)
            .order_by(OneTimeToken.created_at)
        )
    )


def _valid_one_time_token(session: Session, token: str, purpose: str, what: str) -> OneTimeToken:
    row = session.scalar(
        select(OneTimeToken).where(OneTimeToken.token_hash == token_digest(token), OneTimeToken.purpose == purpose)
    )
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        raise InvalidOneTimeToken(what)
    return row


def _consume(session: Session, row: OneTimeToken, what: str) -> None:
    """Mark the token used, once: of two requests racing with it, one wins and the other gets 400."""
    result = session.execute(
        update(OneTimeToken)
        .where(OneTimeToken.id == row.id, OneTimeToken.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise InvalidOneTimeToken(what)


def _send_verification(session: Session, request: Request, user: User) -> None:
    token = _new_one_time_token(session, user, EMAIL_VERIFICATION, VERIFICATION_TTL)
    session.commit()  # the link must work the moment it arrives
    _send(request, "auth_verify_email", user.email, {"name": user.name, "link": _link(request, "/verify-email", token)})


# ---- registration ----------------------------------------------------------------------------


def register(session: Session, request: Request, body: RegisterRequest) -> Accepted:
    """Create the account, or — when the address is taken — tell its owner, and answer the same.

    Both paths hash the password and send one email, so neither the answer nor its timing says
    whether the address was registered.
    """
    check_password(body.password, email=body.email)
    password_hash = _passwords(request).hash(body.password)
    existing = find_user(session, body.email)
    if existing is None:
        user = User(email=body.email, name=body.name, password_hash=password_hash)
        session.add(user)
        try:
            session.flush()
        except IntegrityError:  # registered in parallel, between our look-up and our insert
            session.rollback()
            existing = find_user(session, body.email)
            if existing is None:
                raise
        else:
            record_event(
                session,
                "auth.registered",
                request=request,
                actor_user_id=user.id,
                actor_label=user.email,
                target_type="user",
                target_id=user.id,
            )
            _send_verification(session, request, user)
            return REGISTERED
    _notify_existing_account(session, request, existing)
    return REGISTERED


def _notify_existing_account(session: Session, request: Request, user: User) -> None:
    since = utcnow() - timedelta(hours=1)
    recent = session.scalar(
        select(func.count())
        .select_from(AuditEvent)
        .where(
            AuditEvent.action == "auth.registration_existing_email",
            AuditEvent.target_id == str(user.id),
            AuditEvent.occurred_at > since,
        )
    )
    if (recent or 0) >= MAX_EXISTING_ACCOUNT_NOTICES_PER_HOUR:
        return  # enough notices for now; the answer stays the same
    record_event(
        session,
        "auth.registration_existing_email",
        request=request,
        actor_label=user.email,
        target_type="user",
        target_id=user.id,
    )
    session.commit()
    settings = _settings(request)
    _send(
        request,
        "auth_account_exists",
        user.email,
        {
            "name": user.name,
            "login_link": f"{settings.app_url}/login",
            "reset_link": f"{settings.app_url}/reset-password",
        },
    )


# ---- login and sessions ----------------------------------------------------------------------


def login(session: Session, request: Request, email: str, password: str) -> TokenPair:
    passwords = _passwords(request)
    throttle = throttle_for(session, _settings(request))
    # 429 when over a limit; may wait briefly for attempts in flight; commits a pending attempt.
    attempt = throttle.begin(email, _address(request))
    user = find_user(session, email)
    # verify(None, …) spends a hash's time, so an unknown address answers as slowly as a known one.
    correct = passwords.verify(user.password_hash if user is not None else None, password)
    if user is None or not correct or not user.is_active:
        reason = "unknown_account" if user is None else "wrong_password" if not correct else "inactive_account"
        record_event(
            session,
            "auth.login_failed",
            request=request,
            actor_label=email,
            target_type="user" if user is not None else None,
            target_id=user.id if user is not None else None,
            details={"reason": reason},
        )
        throttle.failed(attempt)
        session.commit()  # the failure and its audit record stay
        raise InvalidCredentials()
    throttle.succeeded(attempt)
    details = None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash(password)
        details = {"rehashed": True}
    record_event(
        session,
        "auth.login_succeeded",
        request=request,
        actor_user_id=user.id,
        actor_label=user.email,
        target_type="user",
        target_id=user.id,
        details=details,
    )
    return _issue_tokens(session, request, user)


def _reuse_detected(session: Session, request: Request, row: RefreshToken) -> InvalidRefreshToken:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == row.family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason="reuse_detected")
        .execution_options(synchronize_session=False)
    )
    user = session.get(User, row.user_id)
    record_event(
        session,
        "auth.refresh_token_reuse_detected",
        request=request,
        actor_user_id=row.user_id,
        actor_label=user.email if user is not None else None,
        target_type="user",
        target_id=row.user_id,
        details={"family_id": str(row.family_id)},
    )
    session.commit()
    logger.warning("refresh token reuse detected for user %s: its sessions are revoked", row.user_id)
    return InvalidRefreshToken(
        "This refresh token was already used, so it may have been stolen: its session is signed out; log in again"
    )


def refresh(session: Session, request: Request, token: str) -> TokenPair:
    row = session.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_digest(token)))
    if row is None or row.revoked_at is not None:
        raise InvalidRefreshToken()
    if row.rotated_at is not None:
        raise _reuse_detected(session, request, row)
    now = utcnow()
    if row.expires_at <= now:
        raise InvalidRefreshToken("The refresh token has expired; log in again")
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise InvalidRefreshToken()
    rotated = session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.rotated_at.is_(None), RefreshToken.revoked_at.is_(None))
        .values(rotated_at=now)
        .execution_options(synchronize_session=False)
    )
    if rotated.rowcount != 1:  # presented twice at the same moment: one of the two is a copy
        raise _reuse_detected(session, request, row)
    return _issue_tokens(session, request, user, family_id=row.family_id)


def logout(session: Session, request: Request, token: str) -> None:
    """Revoke the token's whole family (this session on this device). Unknown tokens: nothing to do."""
    row = session.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_digest(token)))
    if row is None:
        return
    revoked = session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == row.family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason="logout")
        .execution_options(synchronize_session=False)
    )
    if revoked.rowcount:
        user = session.get(User, row.user_id)
        record_event(
            session,
            "auth.logout",
            request=request,
            actor_user_id=row.user_id,
            actor_label=user.email if user is not None else None,
            target_type="user",
            target_id=row.user_id,
        )


# ---- the account -----------------------------------------------------------------------------


def update_me(session: Session, request: Request, user: User, name: str) -> UserOut:
    if name != user.name:
        user.name = name
        record_event(
            session,
            "auth.profile_updated",
            request=request,
            actor_user_id=user.id,
            actor_label=user.email,
            target_type="user",
            target_id=user.id,
            details={"fields": ["name"]},
        )
        session.flush()
    return user_out(user)


def change_password(session: Session, request: Request, user: User, current_password: str, new_password: str) -> None:
    check_password(new_password, email=user.email, field="new_password")
    # Guessing the current password with a stolen access token is throttled like a login.
    throttle = throttle_for(session, _settings(request))
    attempt = throttle.begin(user.email, _address(request))
    if not _passwords(request).verify(user.password_hash, current_password):
        record_event(
            session,
            "auth.password_change_failed",
            request=request,
            actor_user_id=user.id,
            actor_label=user.email,
            target_type="user",
            target_id=user.id,
            details={"reason": "wrong_current_password"},
        )
        throttle.failed(attempt)
        session.commit()
        raise WrongCurrentPassword()
    throttle.succeeded(attempt)
    _replace_password(session, request, user, new_password, "password_changed")


def _replace_password(session: Session, request: Request, user: User, new_password: str, reason: str) -> None:
    """Store the new password, end every session, audit `auth.<reason>`, commit, tell the owner."""
    _set_password(request, user, new_password)
    _revoke_all_sessions(session, user, reason)
    record_event(
        session,
        f"auth.{reason}",
        request=request,
        actor_user_id=user.id,
        actor_label=user.email,
        target_type="user",
        target_id=user.id,
    )
    session.commit()
    _notify_password_changed(request, user)


def _notify_password_changed(request: Request, user: User) -> None:
    settings = _settings(request)
    _send(
        request,
        "auth_password_changed",
        user.email,
        {"name": user.name, "reset_link": f"{settings.app_url}/reset-password"},
    )


# ---- password reset --------------------------------------------------------------------------


def request_password_reset(session: Session, request: Request, email: str) -> Accepted:
    """Email a reset link when the account exists; answer the same either way."""
    user = find_user(session, email)
    if user is None or not user.is_active:
        return RESET_REQUESTED
    recent = _recent_one_time_tokens(session, user, PASSWORD_RESET, utcnow() - timedelta(hours=1))
    if len(recent) >= MAX_RESET_EMAILS_PER_HOUR:
        return RESET_REQUESTED  # the owner's inbox is not a target; earlier links still work
    token = _new_one_time_token(session, user, PASSWORD_RESET, RESET_TTL)
    record_event(
        session,
        "auth.password_reset_requested",
        request=request,
        actor_label=user.email,
        target_type="user",
        target_id=user.id,
    )
    session.commit()
    _send(
        request,
        "auth_password_reset",
        user.email,
        {"name": user.name, "link": _link(request, "/reset-password", token)},
    )
    return RESET_REQUESTED


def confirm_password_reset(session: Session, request: Request, token: str, new_password: str) -> None:
    row = _valid_one_time_token(session, token, PASSWORD_RESET, "password reset")
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise InvalidOneTimeToken("password reset")
    check_password(new_password, email=user.email, field="new_password")  # before the token is spent
    _consume(session, row, "password reset")
    now = utcnow()
    # Other reset links sent before this one stop working too.
    session.execute(
        update(OneTimeToken)
        .where(OneTimeToken.user_id == user.id, OneTimeToken.purpose == PASSWORD_RESET, OneTimeToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if user.email_verified_at is None:  # following the emailed link proves the address
        user.email_verified_at = now
    _replace_password(session, request, user, new_password, "password_reset")


# ---- email verification ----------------------------------------------------------------------


def confirm_email(session: Session, request: Request, token: str) -> None:
    row = _valid_one_time_token(session, token, EMAIL_VERIFICATION, "email verification")
    user = session.get(User, row.user_id)
    if user is None:
        raise InvalidOneTimeToken("email verification")
    _consume(session, row, "email verification")
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
        record_event(
            session,
            "auth.email_verified",
            request=request,
            actor_user_id=user.id,
            actor_label=user.email,
            target_type="user",
            target_id=user.id,
        )


def resend_verification(session: Session, request: Request, user: User) -> Accepted:
    if user.email_verified_at is not None:
        raise Conflict("Your email address is already verified", code="already_verified")
    now = utcnow()
    recent = _recent_one_time_tokens(session, user, EMAIL_VERIFICATION, now - timedelta(hours=1))
    if len(recent) >= MAX_VERIFICATION_EMAILS_PER_HOUR:
        oldest = recent[len(recent) - MAX_VERIFICATION_EMAILS_PER_HOUR]
        retry = max(1, int((oldest + timedelta(hours=1) - now).total_seconds()) + 1)
        raise RateLimited("Too many verification emails in the last hour; try again later", retry_after=retry)
    _send_verification(session, request, user)
    return VERIFICATION_SENT
