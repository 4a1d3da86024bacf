"""Security primitives: password hashing (argon2id), access tokens (JWT), opaque tokens.

Opaque tokens (refresh tokens, invitation and reset tokens, API keys) are random, shown once,
and stored only as a SHA-256 digest: a stolen database does not yield usable tokens, and the
lookup by digest is an indexed equality, so no timing leak comes from comparing secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

JWT_ALGORITHM = "HS256"


@dataclass(frozen=True)
class PasswordHasherConfig:
    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 4


class Passwords:
    """argon2id hashing; `needs_rehash` tells when stored parameters differ from the current ones."""

    def __init__(self, config: PasswordHasherConfig | None = None) -> None:
        self.config = config or PasswordHasherConfig()

    @cached_property
    def _hasher(self):  # argon2 is imported on first use, not at start-up
        from argon2 import PasswordHasher

        return PasswordHasher(
            time_cost=self.config.time_cost, memory_cost=self.config.memory_kib, parallelism=self.config.parallelism
        )

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

        if not stored_hash:
            # Spend the same time as a real check, so timing does not reveal unknown accounts.
            self._hasher.hash(password)
            return False
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)


def new_token(prefix: str = "", nbytes: int = 32) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class InvalidToken(Exception):
    """An access token that is malformed, forged, expired or of the wrong algorithm."""


def create_access_token(secret: str, subject: str, ttl: timedelta, **claims: Any) -> tuple[str, datetime]:
    import jwt

    now = datetime.now(UTC)
    expires = now + ttl
    payload = {"sub": subject, "iat": int(now.timestamp()), "exp": int(expires.timestamp()), "jti": uuid.uuid4().hex, **claims}
    return jwt.encode(payload, secret, algorithm=JWT_ALGORITHM), expires


def decode_access_token(secret: str, token: str) -> dict[str, Any]:
    import jwt

    try:
        return jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],  # only ours: never "none", never an asymmetric confusion
            options={"require": ["sub", "exp", "iat", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the access token has expired") from None
    except jwt.PyJWTError:
        raise InvalidToken("the access token is invalid") from None


class VerifiedAccessTokens:
    """Access tokens whose signature was already verified, so that a client's next requests with
    the same token skip PyJWT (it was an eighth of an authenticated read's time; see
    bench/RESULTS.md). The expiry is still checked on every use; the cache is bounded, and keyed
    by the whole token under this secret only."""

    def __init__(self, secret: str | None, capacity: int = 4096) -> None:
        self._secret = secret
        self._capacity = capacity
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def claims(self, token: str) -> dict[str, Any]:
        with self._lock:
            claims = self._verified.get(token)
        if claims is not None:
            if claims["exp"] > time.time():
                return claims
            with self._lock:
                self._verified.pop(token, None)
            raise InvalidToken("the access token has expired")
        if not self._secret:  # never verify against an empty key
            raise InvalidToken("the access token cannot be verified: no signing key is configured")
        claims = decode_access_token(self._secret, token)
        if not isinstance(claims.get("exp"), int | float):
            raise InvalidToken("the access token is invalid")
        with self._lock:
            self._verified[token] = claims
            while len(self._verified) > self._capacity:
                self._verified.popitem(last=False)
        return claims
