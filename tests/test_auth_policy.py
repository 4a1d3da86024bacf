"""The password policy, and the list of common passwords it ships (no database needed)."""

from __future__ import annotations

import hashlib

import pytest

from a3e.auth import policy
from a3e.auth.policy import PasswordPolicyError, check_password, common_passwords, violation


def test_the_common_password_list_is_the_documented_file():
    data = policy.COMMON_PASSWORDS_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == policy.COMMON_PASSWORDS_SHA256
    license_text = policy.COMMON_PASSWORDS_FILE.with_name("common-passwords.LICENSE.txt").read_text()
    assert policy.COMMON_PASSWORDS_SHA256 in license_text and "Django Software Foundation" in license_text
    passwords = common_passwords()
    assert len(passwords) > 19_000
    assert all(entry == entry.strip().lower() for entry in passwords)
    assert {"password", "123456", "qwertyuiop", "1234567890", "password123"} <= passwords


@pytest.mark.parametrize(
    "password",
    ["1234567890", "QWERTYUIOP", "Password123", "  password123  ", "iloveyou123", "1q2w3e4r5t"],
)
def test_common_passwords_are_refused_whatever_their_case(password):
    found = violation(password)
    assert found is not None and found.rule == "common_password"


@pytest.mark.parametrize(
    ("password", "email", "rule"),
    [
        ("", None, "min_length"),
        ("123456789", None, "min_length"),
        ("ẞ" * 9, None, "min_length"),
        ("x" * 1025, None, "max_length"),
        ("jane.roe@college.edu", "jane.roe@college.edu", "contains_email"),
        ("Jane.Roe@College.EDU!", "jane.roe@college.edu", "contains_email"),
        ("jane.roe+a3e", "jane.roe+a3e@college.edu", "contains_email"),
        ("best jane.roe ever", "jane.roe+a3e@college.edu", "contains_email"),
        ("JANEROE is great", "jane.roe@college.edu", "contains_email"),
        ("ann-marie-2024", "ann@college.edu", "contains_email"),
    ],
)
def test_policy_violations(password, email, rule):
    found = violation(password, email=email)
    assert found is not None and found.rule == rule, found


@pytest.mark.parametrize(
    ("password", "email"),
    [
        ("correct horse battery staple", "jane.roe@college.edu"),
        ("ten chars!", None),
        ("ẞ" * 10, None),
        ("x" * 1024, None),
        # A one- or two-letter local part is only refused as the whole password: containing it
        # would refuse nearly everything.
        ("joking around the block", "jo@college.edu"),
        ("college campus password", "jane.roe@college.edu"),
    ],
)
def test_acceptable_passwords(password, email):
    assert violation(password, email=email) is None


def test_check_password_raises_a_422_naming_the_rule_and_field():
    with pytest.raises(PasswordPolicyError) as raised:
        check_password("short", field="new_password")
    error = raised.value
    assert (error.status_code, error.code, error.details) == (
        422,
        "weak_password",
        {"field": "new_password", "rule": "min_length"},
    )
    assert "at least 10 characters" in error.message and "short" not in error.message
    check_password("a perfectly good passphrase", email="someone@example.edu")
