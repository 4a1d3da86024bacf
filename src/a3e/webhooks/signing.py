"""Endpoint secrets and Standard Webhooks signatures.

A secret is `whsec_` followed by the base64 of 32 random bytes (the Standard Webhooks format, so
that receivers can use the spec's libraries as they are). It is shown once; we keep it encrypted
with Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from SECRET_KEY, because signing needs
the secret itself — a digest, as for API keys, would not do. Changing SECRET_KEY therefore makes the
stored secrets unreadable: deliveries then fail saying so, and rotating each endpoint's secret mends it.

The signature of an attempt is `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with
the secret's decoded bytes; several space-separated signatures may be sent (during a rotation).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
_KEY_INFO = b"a3e webhook endpoint secrets v1"


class SecretUnreadable(Exception):
    """The stored secret cannot be decrypted (SECRET_KEY changed since it was stored)."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _fernet(secret_key: str) -> Fernet:
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    # A key of its own (HKDF), so that the SECRET_KEY is never used directly for two purposes.
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt_secret(secret: str, secret_key: str) -> str:
    return _fernet(secret_key).encrypt(secret.encode()).decode("ascii")


def decrypt_secret(token: str, secret_key: str) -> str:
    from cryptography.fernet import InvalidToken

    try:
        return _fernet(secret_key).decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "the endpoint's secret cannot be decrypted (SECRET_KEY changed?); rotate the endpoint's secret"
        ) from None


def _key_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,…` signature of a message, as the Standard Webhooks spec defines it."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets_in_use: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: one signature per secret in use, space-separated."""
    return " ".join(sign(secret, message_id, timestamp, body) for secret in secrets_in_use)
