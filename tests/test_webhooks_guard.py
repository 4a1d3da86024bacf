"""The parts of outgoing webhooks that need no database: the address guard, secrets and
signatures (checked against the Standard Webhooks reference library), the retry schedule, the
settings and the doctor's line."""

from __future__ import annotations

import ipaddress
import time

import pytest

from a3e.core.settings import ConfigError, load_settings
from a3e.ops.doctor import OK, WARN, DoctorReport, _check_webhooks
from a3e.webhooks.address import UnsafeAddress, check_url, non_public_reason, vet
from a3e.webhooks.jobs import retry_delay
from a3e.webhooks.signing import SecretUnreadable, decrypt_secret, encrypt_secret, new_secret, signature_header


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.10", "198.18.0.1",
        "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
        "2002:7f00:1::1", "2002:a9fe:a9fe::1",  # 6to4 around 127.0.0.1 and 169.254.169.254
        "64:ff9b::a00:1",  # NAT64 around 10.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address):
    assert non_public_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8",
                                     "2002:0808:0808::1"])
def test_public_addresses_pass(address):
    assert non_public_reason(ipaddress.ip_address(address)) is None


def test_urls_are_checked_before_any_lookup():
    assert check_url("https://hooks.example.edu/a3e?x=1", allow_http=False) == ("https", "hooks.example.edu", 443)
    assert check_url("http://93.184.216.34:8080/", allow_http=True) == ("http", "93.184.216.34", 8080)
    with pytest.raises(UnsafeAddress, match="must use https"):
        check_url("http://hooks.example.edu/", allow_http=False)
    for url, message in [("gopher://x/", "http:// or https://"), ("https:///path", "no host"),
                         ("https://a:b@example.edu/", "credentials"), ("https://example.edu:99999/", "valid URL"),
                         ("https://example.edu/#top", "fragment")]:
        with pytest.raises(UnsafeAddress, match=message):
            check_url(url, allow_http=True)


def test_a_name_that_resolves_to_loopback_is_refused_unless_allowed():
    with pytest.raises(UnsafeAddress, match="localhost resolves to .*loopback"):
        vet("http://localhost:8080/", allow_http=True, allow_private=False)
    target = vet("http://localhost:8080/", allow_http=True, allow_private=True)
    assert ipaddress.ip_address(target.address).is_loopback and (target.host, target.port) == ("localhost", 8080)


def test_signatures_are_the_standard_webhooks_ones():
    from standardwebhooks.webhooks import Webhook

    secret = new_secret()
    assert secret.startswith("whsec_") and len(secret) == len("whsec_") + 44  # base64 of 32 bytes
    body, stamp = b'{"type":"member.joined","timestamp":"2026-11-28T10:00:00Z","data":{}}', int(time.time())
    ours = signature_header([secret], "msg_1", stamp, body)
    from datetime import UTC, datetime

    assert ours == Webhook(secret).sign("msg_1", datetime.fromtimestamp(stamp, tz=UTC), body.decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(stamp), "webhook-signature": ours}
    assert Webhook(secret).verify(body, headers)["type"] == "member.joined"


def test_secrets_are_encrypted_under_the_secret_key_and_unreadable_under_another():
    secret = new_secret()
    stored = encrypt_secret(secret, "k" * 48)
    assert secret not in stored and decrypt_secret(stored, "k" * 48) == secret
    with pytest.raises(SecretUnreadable, match="rotate the endpoint's secret"):
        decrypt_secret(stored, "another key entirely, after a rotation of SECRET_KEY")


def test_the_retry_schedule_backs_off_is_capped_and_jittered(make_settings):
    settings = make_settings(webhooks_retry_schedule=[5, 30, 120])
    for attempts_done, base in [(1, 5), (2, 30), (3, 120), (4, 120), (9, 120)]:
        delays = {retry_delay(settings, attempts_done) for _ in range(20)}
        assert all(base * 0.8 <= delay <= base * 1.2 for delay in delays)
        assert len(delays) > 1  # jittered


def test_webhook_settings_are_validated(monkeypatch, tmp_path):
    monkeypatch.setenv("A3E_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("A3E_WEBHOOKS_RETRY_SCHEDULE", "5, 30, soon")
    monkeypatch.setenv("A3E_WEBHOOKS_MAX_ATTEMPTS", "0")
    monkeypatch.setenv("A3E_WEBHOOKS_TIMEOUT", "-1")
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=None)
    variables = {problem.variable: problem.message for problem in raised.value.problems}
    assert "'soon' is not a number of seconds" in variables["A3E_WEBHOOKS_RETRY_SCHEDULE"]
    assert {"A3E_WEBHOOKS_MAX_ATTEMPTS", "A3E_WEBHOOKS_TIMEOUT"} <= set(variables)
    monkeypatch.setenv("A3E_WEBHOOKS_RETRY_SCHEDULE", "1,2.5,60")
    monkeypatch.setenv("A3E_WEBHOOKS_MAX_ATTEMPTS", "4")
    monkeypatch.delenv("A3E_WEBHOOKS_TIMEOUT")
    settings = load_settings(_env_file=None).settings
    assert settings.webhooks_retry_schedule == [1.0, 2.5, 60.0] and settings.webhooks_max_attempts == 4
    assert settings.webhooks_http_allowed and not settings.webhooks_allow_private  # development defaults


def test_production_refuses_plain_http_by_default_and_doctor_says_what_is_allowed(make_settings):
    production = make_settings(environment_name="production")
    assert production.webhooks_http_allowed is False
    with pytest.raises(UnsafeAddress, match="https"):
        vet("http://93.184.216.34/", allow_http=production.webhooks_http_allowed, allow_private=False)

    def line(settings):
        report = DoctorReport()
        _check_webhooks(report, settings)
        [check] = report.checks
        return check

    assert line(production).status == OK and "over https" in line(production).message
    risky = line(make_settings(environment_name="production", webhooks_allow_private=True))
    assert risky.status == WARN and "A3E_WEBHOOKS_ALLOW_PRIVATE" in risky.fix
    assert line(make_settings(environment_name="production", webhooks_allow_http=True)).status == WARN
    assert line(make_settings(webhooks_allow_private=True)).status == OK  # development, tests, on-premises
