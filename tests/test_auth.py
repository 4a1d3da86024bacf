"""Accounts: registration, login, tokens, passwords and email verification, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import func, select, update

from a3e.auth.models import OneTimeToken, RefreshToken, User
from a3e.core.models import utcnow
from a3e.core.security import PasswordHasherConfig, Passwords, token_digest
from tests.conftest import DEFAULT_PASSWORD
from tests.test_auth_support import (
    AUTH,
    audit_events,
    bearer,
    db,
    error_of,
    html_of,
    login,
    new_email,
    outbox_messages,
    register,
    settle_outbox,
    sign_up,
    text_of,
    token_from,
)

NEW_PASSWORD = "a different passphrase entirely"


def user_row(api, email_address: str) -> User:
    with db(api) as session:
        return session.scalar(select(User).where(User.email == email_address))


# ---- registration --------------------------------------------------------------------------


def test_register_creates_the_account_and_emails_a_verification_link(api, data_dir):
    address = new_email("alice")
    response = register(api, address, name="Alice Example")
    assert response.status_code == 201
    assert response.json() == {
        "status": "registered",
        "message": "Check your inbox: we sent a message to this address. Follow its link to verify the address, then log in.",
    }

    tokens = login(api, address)
    assert tokens.status_code == 200
    me = api.get(f"{AUTH}/me", headers=bearer(tokens.json()["access_token"]))
    assert me.status_code == 200
    body = me.json()
    assert set(body) == {"id", "email", "name", "email_verified", "created_at"}
    assert body["email"] == address and body["name"] == "Alice Example" and body["email_verified"] is False
    uuid.UUID(body["id"])
    datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))

    [message] = outbox_messages(data_dir, to=address, subject="verify")
    token = token_from(message, f"{api.app.state.settings.app_url}/verify-email")
    assert token in html_of(message)
    assert DEFAULT_PASSWORD not in message.as_string()
    assert [event.actor_label for event in audit_events(api, "auth.registered")] == [address]

    confirmed = api.post(f"{AUTH}/verify-email/confirm", json={"token": token})
    assert confirmed.status_code == 204 and confirmed.content == b""
    assert api.get(f"{AUTH}/me", headers=bearer(tokens.json()["access_token"])).json()["email_verified"] is True


def test_emails_are_stripped_and_lower_cased(api):
    address = new_email("Mixed.Case").replace("example.edu", "Example.EDU")
    assert register(api, f"  {address}  ").status_code == 201
    stored = address.lower()
    assert user_row(api, stored) is not None
    # Logging in is case-insensitive too, and the same address differently typed is not a new account.
    assert login(api, f" {address.upper()} ").status_code == 200
    assert register(api, address.upper()).status_code == 201
    with db(api) as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1


@pytest.mark.parametrize(
    "address",
    [
        "not-an-email",
        "a@b",
        "two@@example.edu",
        "Alice <alice@example.edu>",
        "spaces in@example.edu",
        "nul\x00@example.edu",
        "someone@example.test",
        "",
        "x" * 300 + "@example.edu",
        42,
        None,
        ["alice@example.edu"],
    ],
)
def test_malformed_emails_are_refused(api, address):
    response = api.post(f"{AUTH}/register", json={"email": address, "password": DEFAULT_PASSWORD, "name": "X"})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert any(detail["location"][:2] == ["body", "email"] for detail in error["details"])
    with db(api) as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0


@pytest.mark.parametrize(
    ("email_address", "password", "rule", "words"),
    [
        ("policy-a@example.edu", "short", "min_length", "at least 10 characters"),
        ("policy-b@example.edu", "nine char", "min_length", "at least 10 characters"),
        ("policy-c@example.edu", "1234567890", "common_password", "too common"),
        ("policy-d@example.edu", "qwertyuiop", "common_password", "too common"),
        ("policy-e@example.edu", "PassWord123", "common_password", "too common"),
        ("policy-f@example.edu", "iloveyou123", "common_password", "too common"),
        ("dolores.haze@example.edu", "dolores.haze@example.edu", "contains_email", "email address"),
        ("dolores.haze@example.edu", "DOLORES.HAZE@EXAMPLE.EDU", "contains_email", "email address"),
        ("dolores.haze@example.edu", "my Dolores.Haze password", "contains_email", "email address"),
        ("dolores.haze@example.edu", "doloreshaze-forever", "contains_email", "email address"),
        ("longlocalpart@example.edu", "longlocalpart", "contains_email", "email address"),
    ],
)
def test_password_policy_violations_name_the_rule(api, email_address, password, rule, words):
    response = register(api, email_address, password)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "weak_password"
    assert error["details"] == {"field": "password", "rule": rule}
    assert words in error["message"]
    assert password not in response.text  # never echoed
    assert login(api, email_address, password).status_code == 401  # nothing was created


def test_a_long_password_is_bounded(api):
    response = register(api, new_email(), "x" * 1025)
    assert response.status_code == 422
    assert error_of(response)["code"] == "validation_error"
    assert register(api, new_email(), "long enough and fine " * 40).status_code == 201


def test_registering_a_taken_address_reveals_nothing(api, data_dir):
    address = new_email("owner")
    first = register(api, address, DEFAULT_PASSWORD, name="The Owner")
    second = register(api, address, "an attackers chosen password", name="Someone Else")
    assert (second.status_code, second.json()) == (first.status_code, first.json())
    assert second.headers["content-type"] == first.headers["content-type"]
    assert set(second.headers) - {"x-request-id", "content-length", "date"} == set(first.headers) - {
        "x-request-id",
        "content-length",
        "date",
    }

    with db(api) as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1
    assert user_row(api, address).name == "The Owner"
    assert login(api, address, DEFAULT_PASSWORD).status_code == 200
    assert login(api, address, "an attackers chosen password").status_code == 401

    # The owner is told, with a way in, and no token that would let the other party act.
    [notice] = outbox_messages(data_dir, to=address, subject="tried to register")
    text = text_of(notice)
    app_url = api.app.state.settings.app_url
    assert f"{app_url}/login" in text and f"{app_url}/reset-password" in text and "token=" not in text
    assert "an attackers chosen password" not in notice.as_string()
    assert len(outbox_messages(data_dir, to=address, subject="verify")) == 1
    assert len(audit_events(api, "auth.registration_existing_email")) == 1


def test_a_registration_racing_another_for_the_same_address_answers_the_same(api, data_dir, monkeypatch):
    from a3e.auth import service

    address = new_email("racer")
    first = register(api, address, name="First")
    real_find_user = service.find_user
    calls: list[str] = []

    def blind_once(session, email_address):
        # The other registration commits between our look-up and our insert.
        calls.append(email_address)
        return None if len(calls) == 1 else real_find_user(session, email_address)

    monkeypatch.setattr(service, "find_user", blind_once)
    second = register(api, address, "another long passphrase", name="Second")
    assert (second.status_code, second.json()) == (first.status_code, first.json())
    assert len(calls) == 2
    with db(api) as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1
    assert user_row(api, address).name == "First"
    outbox_messages(data_dir, to=address, subject="tried to register")


def test_notices_about_a_taken_address_are_capped(api, data_dir):
    address = new_email("popular")
    register(api, address)
    answers = {register(api, address).status_code for _ in range(5)}
    assert answers == {201}
    outbox_messages(data_dir, to=address, subject="tried to register", count=3)
    settle_outbox(data_dir)
    assert len(outbox_messages(data_dir, to=address, subject="tried to register", timeout=0)) == 3


@pytest.mark.parametrize(
    "body",
    [
        {"email": "x@example.edu", "password": DEFAULT_PASSWORD, "name": "X", "is_admin": True},
        {"email": "x@example.edu", "password": DEFAULT_PASSWORD},
        {"email": "x@example.edu", "password": DEFAULT_PASSWORD, "name": 123},
        {"email": "x@example.edu", "password": ["list"], "name": "X"},
        {"email": "x@example.edu", "password": DEFAULT_PASSWORD, "name": "   "},
        {"email": "x@example.edu", "password": DEFAULT_PASSWORD, "name": "n" * 201},
        {"email": "x@example.edu", "password": DEFAULT_PASSWORD, "name": "nul\x00name"},
        {"email": "x@example.edu", "password": DEFAULT_PASSWORD, "name": "two\nlines"},
        [],
        "a string",
    ],
)
def test_bad_registration_bodies_are_422(api, body):
    response = api.post(f"{AUTH}/register", json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == "validation_error"


def test_unparseable_and_oversized_bodies_are_4xx(api):
    broken = api.post(f"{AUTH}/register", content=b'{"email": ', headers={"content-type": "application/json"})
    assert broken.status_code == 422 and error_of(broken)["code"] == "validation_error"
    huge = api.post(
        f"{AUTH}/register",
        content=json.dumps({"email": "x@example.edu", "password": "p" * (2 * 1024 * 1024), "name": "X"}).encode(),
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413 and error_of(huge)["code"] == "request_too_large"
    huge_login = api.post(
        f"{AUTH}/login", content=b"{" + b" " * (2 * 1024 * 1024) + b"}", headers={"content-type": "application/json"}
    )
    assert huge_login.status_code == 413


# ---- login -----------------------------------------------------------------------------------


def test_login_with_json_and_with_the_oauth2_form(api):
    account = sign_up(api)
    response = login(api, account.email)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 15 * 60

    # What the Authorize button of /docs sends.
    form = api.post(
        f"{AUTH}/login",
        data={
            "grant_type": "password",
            "username": account.email.upper(),
            "password": account.password,
            "scope": "",
            "client_id": "",
        },
    )
    assert form.status_code == 200, form.text
    assert api.get(f"{AUTH}/me", headers=bearer(form.json()["access_token"])).json()["id"] == account.id
    multipart = api.post(
        f"{AUTH}/login", files={"username": (None, account.email), "password": (None, account.password)}
    )
    assert multipart.status_code == 200, multipart.text

    assert len(audit_events(api, "auth.login_succeeded")) == 4  # sign_up's, then three here


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"data": {"username": "x@example.edu"}}, 422),
        ({"data": {"password": "whatever password"}}, 422),
        ({"data": {"grant_type": "client_credentials", "username": "x@example.edu", "password": "whatever pass"}}, 422),
        ({"json": {"email": "x@example.edu"}}, 422),
        ({"json": {"email": "x@example.edu", "password": "whatever pass", "remember": True}}, 422),
        ({"json": {"email": ["x@example.edu"], "password": "whatever pass"}}, 422),
        ({"json": {"email": "x@example.edu", "password": 1234567890}}, 422),
        ({"json": ["x@example.edu", "whatever pass"]}, 422),
        ({"content": b"", "headers": {"content-type": "application/json"}}, 422),
        ({"content": b"not json", "headers": {"content-type": "application/json"}}, 422),
        ({"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, 422),
        ({"content": b"email=x", "headers": {"content-type": "text/plain"}}, 422),
        ({"content": b"[" * 100_000, "headers": {"content-type": "application/json"}}, 422),
        ({"json": {"email": "nul\x00@example.edu", "password": "whatever pass"}}, 422),
        ({"data": {"username": "nul\x00@example.edu", "password": "whatever pass"}}, 422),
        ({"json": {"email": "x" * 321, "password": "whatever pass"}}, 422),
    ],
)
def test_bad_login_requests_are_4xx_never_500(api, kwargs, status):
    response = api.post(f"{AUTH}/login", **kwargs)
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == "validation_error"


def test_wrong_password_and_unknown_email_answer_alike(api):
    account = sign_up(api)
    nobody = new_email("nobody")
    wrong = login(api, account.email, "not the right password")
    unknown = login(api, nobody, "not the right password")
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    assert (
        {k: v for k, v in error_of(wrong).items() if k != "request_id"}
        == {k: v for k, v in error_of(unknown).items() if k != "request_id"}
        == {"code": "invalid_credentials", "message": "Wrong email or password"}
    )

    events = audit_events(api, "auth.login_failed")
    assert [event.actor_label for event in events] == [account.email, nobody]
    assert all(event.actor_user_id is None for event in events)
    assert events[0].target_id == account.id and events[1].target_id is None
    assert [event.details for event in events] == [{"reason": "wrong_password"}, {"reason": "unknown_account"}]
    assert events[0].client_ip == "testclient" and events[0].request_id == wrong.headers["x-request-id"]


def test_an_unknown_email_costs_a_password_hash_too(api, monkeypatch):
    """Timing does not tell unknown accounts: the unknown path runs argon2 as the known one does."""
    account = sign_up(api)
    passwords = api.app.state.passwords
    real = passwords._hasher
    hashed: list[str] = []
    verified: list[str] = []

    class Spy:
        def hash(self, password, **kwargs):
            hashed.append(password)
            return real.hash(password, **kwargs)

        def verify(self, stored, password):
            verified.append(password)
            return real.verify(stored, password)

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setitem(passwords.__dict__, "_hasher", Spy())

    assert login(api, new_email("ghost"), "guess number one").status_code == 401
    assert (hashed, verified) == (["guess number one"], [])
    assert login(api, account.email, "guess number two").status_code == 401
    assert verified == ["guess number two"]


def test_inactive_accounts_cannot_log_in(api):
    account = sign_up(api)
    with db(api) as session:
        session.execute(update(User).where(User.email == account.email).values(is_active=False))
        session.commit()
    response = login(api, account.email)
    assert response.status_code == 401 and error_of(response)["code"] == "invalid_credentials"
    assert audit_events(api, "auth.login_failed")[-1].details == {"reason": "inactive_account"}


def test_login_rehashes_the_password_when_the_argon2_parameters_change(api):
    account = sign_up(api)
    before = user_row(api, account.email).password_hash
    assert "m=1024,t=1,p=1" in before
    api.app.state.passwords = Passwords(PasswordHasherConfig(time_cost=2, memory_kib=2048, parallelism=1))
    assert login(api, account.email).status_code == 200
    after = user_row(api, account.email).password_hash
    assert after != before and "m=2048,t=2,p=1" in after
    assert audit_events(api, "auth.login_succeeded")[-1].details == {"rehashed": True}
    # Unchanged parameters: no rehash.
    assert login(api, account.email).status_code == 200
    assert user_row(api, account.email).password_hash == after
    assert audit_events(api, "auth.login_succeeded")[-1].details is None
    assert login(api, account.email, "wrong password value").status_code == 401


# ---- access tokens ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The HMAC key is")
def test_forged_expired_and_malformed_access_tokens_are_401(api):
    account = sign_up(api)
    secret = api.app.state.settings.jwt_secret_key.get_secret_value()
    now = int(time.time())
    claims = {"sub": account.id, "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex}

    def unsigned(payload: dict) -> str:
        import base64

        def part(value: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

        return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."

    cases = {
        "alg none": unsigned(claims),
        "alg none, no dot": unsigned(claims).rstrip("."),
        "another key": jwt.encode(claims, "another secret key that is long enough!!", algorithm="HS256"),
        "HS512 with our key": jwt.encode(claims, secret, algorithm="HS512"),
        "expired": jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, secret, algorithm="HS256"),
        "no jti": jwt.encode({k: v for k, v in claims.items() if k != "jti"}, secret, algorithm="HS256"),
        "sub not a uuid": jwt.encode({**claims, "sub": "admin"}, secret, algorithm="HS256"),
        "unknown user": jwt.encode({**claims, "sub": str(uuid.uuid4())}, secret, algorithm="HS256"),
        "garbage": "not.a.jwt",
        "empty segments": "..",
        "refresh token as access token": account.refresh_token,
    }
    for name, token in cases.items():
        response = api.get(f"{AUTH}/me", headers=bearer(token))
        assert response.status_code == 401, (name, response.text)
        assert error_of(response)["code"] == "unauthorized", name
        assert token not in response.text
    expired = api.get(f"{AUTH}/me", headers=bearer(cases["expired"]))
    assert "expired" in error_of(expired)["message"]
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "Token abc"):
        response = api.get(f"{AUTH}/me", headers={"Authorization": header})
        assert response.status_code == 401, header
    assert api.get(f"{AUTH}/me").status_code == 401
    # The genuine token still works.
    assert api.get(f"{AUTH}/me", headers=account.headers).status_code == 200


def test_me_and_patch_me(api):
    account = sign_up(api, name="Before")
    updated = api.patch(f"{AUTH}/me", json={"name": "  After Name  "}, headers=account.headers)
    assert updated.status_code == 200
    assert updated.json()["name"] == "After Name"
    assert api.get(f"{AUTH}/me", headers=account.headers).json()["name"] == "After Name"
    assert [event.details for event in audit_events(api, "auth.profile_updated")] == [{"fields": ["name"]}]
    for body in (
        {"name": ""},
        {"name": "   "},
        {"name": "n" * 201},
        {"name": None},
        {"name": "a\x00b"},
        {},
        {"name": "X", "email": "y@example.edu"},
    ):
        response = api.patch(f"{AUTH}/me", json=body, headers=account.headers)
        assert response.status_code == 422, body
    assert api.patch(f"{AUTH}/me", json={"name": "Anon"}).status_code == 401
    assert api.get(f"{AUTH}/me", headers=account.headers).json()["name"] == "After Name"


# ---- refresh tokens --------------------------------------------------------------------------


def refresh(api, token: str):
    return api.post(f"{AUTH}/refresh", json={"refresh_token": token})


def family_rows(api, token: str) -> list[RefreshToken]:
    with db(api) as session:
        row = session.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_digest(token)))
        return list(
            session.scalars(
                select(RefreshToken).where(RefreshToken.family_id == row.family_id).order_by(RefreshToken.created_at)
            )
        )


def test_refresh_rotates_the_token(api):
    account = sign_up(api)
    response = refresh(api, account.refresh_token)
    assert response.status_code == 200
    pair = response.json()
    assert set(pair) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert pair["refresh_token"] != account.refresh_token
    assert api.get(f"{AUTH}/me", headers=bearer(pair["access_token"])).json()["id"] == account.id

    old, new = family_rows(api, pair["refresh_token"])
    assert (
        old.token_hash == token_digest(account.refresh_token) and old.rotated_at is not None and old.revoked_at is None
    )
    assert new.token_hash == token_digest(pair["refresh_token"]) and new.rotated_at is None
    assert old.family_id == new.family_id
    # Only digests are stored.
    assert account.refresh_token not in (old.token_hash, new.token_hash)


def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(api):
    account = sign_up(api)
    other_session = login(api, account.email).json()  # another device: another family
    second = refresh(api, account.refresh_token).json()["refresh_token"]
    third = refresh(api, second).json()["refresh_token"]

    reused = refresh(api, account.refresh_token)  # a copy of the first token, replayed
    assert reused.status_code == 401
    assert error_of(reused)["code"] == "invalid_refresh_token"
    assert reused.headers["www-authenticate"] == "Bearer"
    # The newest token of the family is dead too: the thief's and the victim's copies alike.
    assert refresh(api, third).status_code == 401
    assert refresh(api, second).status_code == 401
    rows = family_rows(api, third)
    assert len(rows) == 3 and all(row.revoked_at is not None and row.revoked_reason == "reuse_detected" for row in rows)

    [event] = audit_events(api, "auth.refresh_token_reuse_detected")
    assert event.actor_user_id == uuid.UUID(account.id) and event.target_id == account.id
    assert set(event.details) == {"family_id"}
    # Another family of the same user is untouched.
    assert refresh(api, other_session["refresh_token"]).status_code == 200


def test_expired_revoked_unknown_and_malformed_refresh_tokens(api):
    account = sign_up(api)
    with db(api) as session:
        session.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == token_digest(account.refresh_token))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    expired = refresh(api, account.refresh_token)
    assert expired.status_code == 401 and "expired" in error_of(expired)["message"]

    assert refresh(api, "made-up-token").status_code == 401
    assert refresh(api, "x" * 512).status_code == 401
    for body in (
        {"refresh_token": ""},
        {"refresh_token": "x" * 513},
        {"refresh_token": 12},
        {},
        {"refresh_token": "a", "b": 1},
    ):
        response = api.post(f"{AUTH}/refresh", json=body)
        assert response.status_code == 422, body
    assert audit_events(api, "auth.refresh_token_reuse_detected") == []


def test_logout_revokes_the_family_with_or_without_an_access_token(api):
    account = sign_up(api)
    laptop = login(api, account.email).json()
    rotated = refresh(api, account.refresh_token).json()

    out = api.post(f"{AUTH}/logout", json={"refresh_token": rotated["refresh_token"]})  # no access token
    assert out.status_code == 204 and out.content == b""
    assert refresh(api, rotated["refresh_token"]).status_code == 401
    assert all(row.revoked_reason == "logout" for row in family_rows(api, rotated["refresh_token"]))
    # Presenting the already-rotated first token after logout is just invalid, not a "reuse".
    assert refresh(api, account.refresh_token).status_code == 401
    assert audit_events(api, "auth.refresh_token_reuse_detected") == []
    # Idempotent, and unknown tokens are no error.
    assert api.post(f"{AUTH}/logout", json={"refresh_token": rotated["refresh_token"]}).status_code == 204
    assert api.post(f"{AUTH}/logout", json={"refresh_token": "never-issued"}).status_code == 204
    assert api.post(f"{AUTH}/logout", json={}).status_code == 422
    # With an access token (even an expired or bad one), logout still works.
    assert (
        api.post(
            f"{AUTH}/logout", json={"refresh_token": laptop["refresh_token"]}, headers=bearer("bad.token.here")
        ).status_code
        == 204
    )
    assert refresh(api, laptop["refresh_token"]).status_code == 401
    assert len(audit_events(api, "auth.logout")) == 2


# ---- changing the password -------------------------------------------------------------------


def change_password(api, account, current: str, new: str):
    return api.post(
        f"{AUTH}/password", json={"current_password": current, "new_password": new}, headers=account.headers
    )


def test_changing_the_password_signs_every_session_out(api, data_dir):
    account = sign_up(api)
    other = login(api, account.email).json()

    wrong = change_password(api, account, "not my password at all", NEW_PASSWORD)
    assert wrong.status_code == 400 and error_of(wrong)["code"] == "invalid_password"
    weak = change_password(api, account, account.password, "1234567890")
    assert weak.status_code == 422 and error_of(weak)["details"] == {"field": "new_password", "rule": "common_password"}
    mine = change_password(api, account, account.password, account.email.split("@")[0] + "!!")
    assert mine.status_code == 422 and error_of(mine)["details"]["rule"] == "contains_email"
    assert api.get(f"{AUTH}/me", headers=account.headers).status_code == 200  # nothing changed yet

    changed = change_password(api, account, account.password, NEW_PASSWORD)
    assert changed.status_code == 204 and changed.content == b""

    # Old access tokens (issued in this very second, too) and every refresh token are refused.
    for token in (account.access_token, other["access_token"]):
        response = api.get(f"{AUTH}/me", headers=bearer(token))
        assert response.status_code == 401
        assert "password was changed" in error_of(response)["message"]
    assert refresh(api, account.refresh_token).status_code == 401
    assert refresh(api, other["refresh_token"]).status_code == 401
    with db(api) as session:
        reasons = set(session.scalars(select(RefreshToken.revoked_reason)))
    assert reasons == {"password_changed"}

    assert login(api, account.email, account.password).status_code == 401
    fresh = login(api, account.email, NEW_PASSWORD)
    assert fresh.status_code == 200
    assert api.get(f"{AUTH}/me", headers=bearer(fresh.json()["access_token"])).status_code == 200

    [notice] = outbox_messages(data_dir, to=account.email, subject="password was changed")
    assert f"{api.app.state.settings.app_url}/reset-password" in text_of(notice)
    assert NEW_PASSWORD not in notice.as_string()
    assert len(audit_events(api, "auth.password_changed")) == 1
    assert [event.details for event in audit_events(api, "auth.password_change_failed")] == [
        {"reason": "wrong_current_password"}
    ]


def test_changing_the_password_needs_a_user(api):
    assert (
        api.post(f"{AUTH}/password", json={"current_password": "a" * 10, "new_password": "b" * 12}).status_code == 401
    )
    account = sign_up(api)
    response = api.post(f"{AUTH}/password", json={"current_password": account.password}, headers=account.headers)
    assert response.status_code == 422


# ---- password reset --------------------------------------------------------------------------


def request_reset(api, address):
    return api.post(f"{AUTH}/password-reset/request", json={"email": address})


def confirm_reset(api, token, password=NEW_PASSWORD):
    return api.post(f"{AUTH}/password-reset/confirm", json={"token": token, "new_password": password})


def reset_tokens(api, data_dir, address, count=1) -> list[str]:
    messages = outbox_messages(data_dir, to=address, subject="reset your", count=count)
    assert len(messages) >= count
    return [token_from(message, f"{api.app.state.settings.app_url}/reset-password") for message in messages]


def reset_token(api, data_dir, address) -> str:
    [token] = reset_tokens(api, data_dir, address)
    return token


def test_reset_requests_answer_the_same_for_known_and_unknown_addresses(api, data_dir):
    account = sign_up(api)
    known = request_reset(api, account.email.upper())
    unknown = request_reset(api, new_email("stranger"))
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    assert known.json()["status"] == "accepted"
    reset_token(api, data_dir, account.email)
    settle_outbox(data_dir)
    assert {message["To"] for message in outbox_messages(data_dir, subject="reset your", timeout=0)} == {account.email}
    assert len(audit_events(api, "auth.password_reset_requested")) == 1
    for body in ({"email": "not-an-email"}, {}, {"email": "x@example.edu", "extra": 1}, {"email": 5}):
        assert api.post(f"{AUTH}/password-reset/request", json=body).status_code == 422


def test_reset_confirm_sets_the_password_once_and_signs_everything_out(api, data_dir):
    account = sign_up(api)
    assert request_reset(api, account.email).status_code == 202
    token = reset_token(api, data_dir, account.email)
    with db(api) as session:
        row = session.scalar(select(OneTimeToken).where(OneTimeToken.token_hash == token_digest(token)))
        assert row.purpose == "password_reset"
        lifetime = row.expires_at - row.created_at
        assert timedelta(minutes=59) < lifetime <= timedelta(hours=1)

    weak = confirm_reset(api, token, "password123")
    assert weak.status_code == 422 and error_of(weak)["details"] == {"field": "new_password", "rule": "common_password"}
    done = confirm_reset(api, token)  # the weak attempt did not spend the token
    assert done.status_code == 204 and done.content == b""

    again = confirm_reset(api, token, "yet another fine passphrase")
    assert again.status_code == 400 and error_of(again)["code"] == "invalid_token"
    assert api.get(f"{AUTH}/me", headers=account.headers).status_code == 401
    assert refresh(api, account.refresh_token).status_code == 401
    assert login(api, account.email, account.password).status_code == 401
    fresh = login(api, account.email, NEW_PASSWORD)
    assert fresh.status_code == 200
    me = api.get(f"{AUTH}/me", headers=bearer(fresh.json()["access_token"])).json()
    assert me["email_verified"] is True  # the link proved the address
    assert len(audit_events(api, "auth.password_reset")) == 1
    outbox_messages(data_dir, to=account.email, subject="password was changed")


def test_reset_tokens_expire_and_are_bound_to_their_purpose(api, data_dir):
    account = sign_up(api)
    verification = token_from(outbox_messages(data_dir, to=account.email, subject="verify")[0], "/verify-email")
    bad = confirm_reset(api, verification)
    assert bad.status_code == 400 and error_of(bad)["code"] == "invalid_token"
    assert confirm_reset(api, "forged-token").status_code == 400
    for body in (
        {"token": "", "new_password": NEW_PASSWORD},
        {"token": "t"},
        {"token": "t", "new_password": NEW_PASSWORD, "x": 1},
    ):
        assert api.post(f"{AUTH}/password-reset/confirm", json=body).status_code == 422

    request_reset(api, account.email)
    token = reset_token(api, data_dir, account.email)
    with db(api) as session:
        session.execute(
            update(OneTimeToken)
            .where(OneTimeToken.token_hash == token_digest(token))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    expired = confirm_reset(api, token)
    assert expired.status_code == 400 and error_of(expired)["code"] == "invalid_token"
    assert login(api, account.email).status_code == 200


def test_a_completed_reset_voids_the_other_reset_links(api, data_dir):
    account = sign_up(api)
    request_reset(api, account.email)
    first = reset_token(api, data_dir, account.email)
    request_reset(api, account.email)
    [second] = set(reset_tokens(api, data_dir, account.email, count=2)) - {first}
    assert confirm_reset(api, second).status_code == 204
    assert confirm_reset(api, first, "some other long passphrase").status_code == 400


def test_reset_emails_for_one_account_are_capped(api, data_dir):
    account = sign_up(api)
    assert {request_reset(api, account.email).status_code for _ in range(7)} == {202}
    outbox_messages(data_dir, to=account.email, subject="reset your", count=5)
    settle_outbox(data_dir)
    assert len(outbox_messages(data_dir, to=account.email, subject="reset your", timeout=0)) == 5


# ---- email verification ----------------------------------------------------------------------


def test_verification_tokens_are_single_use_and_expire(api, data_dir):
    account = sign_up(api)
    token = token_from(outbox_messages(data_dir, to=account.email, subject="verify")[0], "/verify-email")
    with db(api) as session:
        row = session.scalar(select(OneTimeToken).where(OneTimeToken.token_hash == token_digest(token)))
        assert row.purpose == "email_verification"
        assert timedelta(hours=23, minutes=59) < row.expires_at - row.created_at <= timedelta(hours=24)
        session.execute(
            update(OneTimeToken).where(OneTimeToken.id == row.id).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    expired = api.post(f"{AUTH}/verify-email/confirm", json={"token": token})
    assert expired.status_code == 400 and error_of(expired)["code"] == "invalid_token"
    assert api.get(f"{AUTH}/me", headers=account.headers).json()["email_verified"] is False

    # Ask for a new link (logged in).
    assert api.post(f"{AUTH}/verify-email/request").status_code == 401
    resent = api.post(f"{AUTH}/verify-email/request", headers=account.headers)
    assert resent.status_code == 202 and resent.json()["status"] == "sent"
    messages = outbox_messages(data_dir, to=account.email, subject="verify", count=2)
    [fresh] = {token_from(message, "/verify-email") for message in messages} - {token}
    assert api.post(f"{AUTH}/verify-email/confirm", json={"token": fresh}).status_code == 204
    assert api.get(f"{AUTH}/me", headers=account.headers).json()["email_verified"] is True
    used = api.post(f"{AUTH}/verify-email/confirm", json={"token": fresh})
    assert used.status_code == 400 and error_of(used)["code"] == "invalid_token"
    already = api.post(f"{AUTH}/verify-email/request", headers=account.headers)
    assert already.status_code == 409 and error_of(already)["code"] == "already_verified"
    assert len(audit_events(api, "auth.email_verified")) == 1
    for body in ({}, {"token": ""}, {"token": 1}, {"token": "x", "y": 2}):
        assert api.post(f"{AUTH}/verify-email/confirm", json=body).status_code == 422
    assert api.post(f"{AUTH}/verify-email/confirm", json={"token": "forged"}).status_code == 400


def test_verification_emails_are_capped(api, data_dir):
    account = sign_up(api)  # one email at registration
    statuses = [api.post(f"{AUTH}/verify-email/request", headers=account.headers).status_code for _ in range(5)]
    assert statuses == [202, 202, 202, 202, 429]
    limited = api.post(f"{AUTH}/verify-email/request", headers=account.headers)
    assert 3500 < int(limited.headers["retry-after"]) <= 3601


# ---- documentation and hygiene ---------------------------------------------------------------


def test_openapi_documents_both_login_bodies_and_the_bearer_scheme(api):
    spec = api.get("/openapi.json").json()
    login_body = spec["paths"][f"{AUTH}/login"]["post"]["requestBody"]["content"]
    assert set(login_body) == {"application/json", "application/x-www-form-urlencoded"}
    assert {"username", "password"} <= set(login_body["application/x-www-form-urlencoded"]["schema"]["properties"])
    scheme = spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    assert scheme["flows"]["password"]["tokenUrl"] == f"{AUTH}/login"
    assert spec["paths"][f"{AUTH}/me"]["get"]["security"] == [{"OAuth2PasswordBearer": []}]
    assert "security" not in spec["paths"][f"{AUTH}/register"]["post"]
    assert api.get("/docs").status_code == 200


def test_passwords_and_tokens_never_reach_logs_or_the_audit_log(api, data_dir, caplog):
    caplog.set_level(logging.DEBUG)
    secret_password = "uniquely identifiable secret pass"
    account = sign_up(api, password=secret_password)
    seen = {secret_password, account.access_token, account.refresh_token}
    pair = refresh(api, account.refresh_token).json()
    seen |= {pair["access_token"], pair["refresh_token"]}
    refresh(api, account.refresh_token)  # reuse
    login(api, account.email, "wrong guess of a password")
    seen.add("wrong guess of a password")
    request_reset(api, account.email)
    token = reset_token(api, data_dir, account.email)
    seen.add(token)
    confirm_reset(api, token, NEW_PASSWORD)
    seen.add(NEW_PASSWORD)
    register(api, account.email, "duplicate registration password")
    seen.add("duplicate registration password")
    settle_outbox(data_dir)

    logged = caplog.text
    recorded = json.dumps(
        [
            {"label": e.actor_label, "details": e.details, "target": e.target_id, "action": e.action}
            for e in audit_events(api)
        ]
    )
    for value in seen:
        assert value not in logged
        assert value not in recorded
    actions = {e.action for e in audit_events(api)}
    assert {
        "auth.registered",
        "auth.login_succeeded",
        "auth.login_failed",
        "auth.refresh_token_reuse_detected",
        "auth.password_reset",
    } <= actions
    assert all(action.startswith("auth.") for action in actions)


def test_timestamps_are_utc(api):
    account = sign_up(api)
    created = datetime.fromisoformat(
        api.get(f"{AUTH}/me", headers=account.headers).json()["created_at"].replace("Z", "+00:00")
    )
    assert created.tzinfo is not None and abs(created - datetime.now(UTC)) < timedelta(minutes=1)
