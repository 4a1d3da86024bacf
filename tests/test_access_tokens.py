"""Verified access tokens are remembered so that a client's next request skips the signature
check — without ever accepting what the signature check would refuse."""

from __future__ import annotations

import time

import jwt
import pytest

from a3e.core.security import InvalidToken, VerifiedAccessTokens

SECRET = "a-test-signing-key-that-is-long-enough-0123456789"


def token(secret: str = SECRET, *, exp_in: float = 60, **claims) -> str:
    now = int(time.time())
    body = {"sub": "u1", "iat": now, "jti": "j", "exp": now + exp_in, **claims}
    return jwt.encode(body, secret, algorithm="HS256")


def test_a_verified_token_is_answered_from_memory_with_the_same_claims():
    tokens = VerifiedAccessTokens(SECRET)
    value = token(pwd=7)
    first = tokens.claims(value)
    assert tokens.claims(value) is first
    assert first["pwd"] == 7


def test_a_token_signed_with_another_key_is_refused_even_after_the_right_one_was_seen():
    ours, theirs = VerifiedAccessTokens(SECRET), VerifiedAccessTokens("another-key-entirely-0123456789-abcdefgh")
    value = token()
    ours.claims(value)
    with pytest.raises(InvalidToken):
        theirs.claims(value)


def test_an_expired_token_is_refused_on_its_next_use_even_when_remembered():
    tokens = VerifiedAccessTokens(SECRET)
    value = token(exp_in=1)
    tokens.claims(value)
    time.sleep(1.2)
    with pytest.raises(InvalidToken, match="expired"):
        tokens.claims(value)
    with pytest.raises(InvalidToken, match="expired"):  # and PyJWT says the same afterwards
        tokens.claims(value)


def test_forged_tokens_are_never_remembered():
    tokens = VerifiedAccessTokens(SECRET)
    forged = token("not-the-key-not-the-key-not-the-key-0123")
    for _ in range(2):
        with pytest.raises(InvalidToken):
            tokens.claims(forged)


def test_the_memory_is_bounded():
    tokens = VerifiedAccessTokens(SECRET, capacity=3)
    values = [token(jti=str(n)) for n in range(5)]
    for value in values:
        tokens.claims(value)
    assert len(tokens._verified) == 3
    assert list(tokens._verified) == values[2:]


def test_without_a_signing_key_nothing_verifies():
    with pytest.raises(InvalidToken, match="no signing key"):
        VerifiedAccessTokens(None).claims(token())
