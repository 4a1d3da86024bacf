"""The password policy: long enough, not a common password, not the email address.

The list of common passwords is Django's (20,000 passwords from public breach corpora, compiled
by Royce Williams), shipped in `data/` with its provenance and license. It is read on first use,
never at import.
"""

from __future__ import annotations

import functools
import gzip
import re
from dataclasses import dataclass
from pathlib import Path

from a3e.core.errors import AppError

MIN_LENGTH = 10
MAX_LENGTH = 1024  # argon2 copes with more; a bound keeps a request's work bounded all the same
COMMON_PASSWORDS_FILE = Path(__file__).parent / "data" / "common-passwords.txt.gz"
COMMON_PASSWORDS_SHA256 = "3c1baed62596de36860824eb3f436d5932d37ca8b06e59df78f5a44ec175afe4"
# Below this length, "contains the local part" would refuse nearly everything (think "jo@…").
MIN_CONTAINED_PART = 3


class PasswordPolicyError(AppError):
    """422 naming the rule that the password breaks."""

    status_code = 422
    code = "weak_password"

    def __init__(self, rule: str, message: str, *, field: str) -> None:
        super().__init__(message, details={"field": field, "rule": rule})
        self.rule = rule


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str


@functools.cache
def common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_PASSWORDS_FILE, "rt", encoding="utf-8") as handle:
        return frozenset(line.strip() for line in handle if line.strip())


def _email_parts(email: str) -> set[str]:
    """The address and the forms of its local part that a password must not contain."""
    email = email.strip().lower()
    local = email.rpartition("@")[0] if "@" in email else email
    untagged = local.split("+", 1)[0]
    parts = {local, untagged, re.sub(r"[._+-]", "", untagged)}
    return {part for part in parts if part}


def violation(password: str, *, email: str | None = None) -> Violation | None:
    """The first rule `password` breaks, or None."""
    if len(password) < MIN_LENGTH:
        return Violation("min_length", f"The password must be at least {MIN_LENGTH} characters long")
    if len(password) > MAX_LENGTH:
        return Violation("max_length", f"The password must be at most {MAX_LENGTH} characters long")
    folded = password.strip().lower()
    if folded in common_passwords():
        return Violation(
            "common_password", "The password is too common: it is on a list of passwords attackers try first"
        )
    if email:
        address = email.strip().lower()
        if folded == address or address in password.lower():
            return Violation("contains_email", "The password must not be or contain your email address")
        for part in _email_parts(address):
            if folded == part or (len(part) >= MIN_CONTAINED_PART and part in password.lower()):
                return Violation("contains_email", "The password must not be or contain the name in your email address")
    return None


def check_password(password: str, *, email: str | None = None, field: str = "password") -> None:
    """Raise PasswordPolicyError (422) when `password` breaks a rule."""
    found = violation(password, email=email)
    if found is not None:
        raise PasswordPolicyError(found.rule, found.message, field=field)
