"""Billing off: without Stripe, half-configured, or disabled, the billing endpoints answer 503
feature_unavailable with the reason, the event endpoint never accepts anything, the rest of the
app works, and every workspace is on the default plan (unlimited unless configured)."""

from __future__ import annotations

import json

import pytest

from a3e.billing.plans import Limits, billing_enabled, parse_limits
from tests.conftest import CHEAP_ARGON2, wait_ready
from tests.fake_stripe import stripe_event, stripe_signature

WEBHOOK_SECRET = "whsec_" + "0ffS1gn1ngS3cret" * 2


def client_for(make_settings, database_url, **values):
    from fastapi.testclient import TestClient

    from a3e.app import create_app

    return TestClient(create_app(make_settings(database_url=database_url, **CHEAP_ARGON2, **values)),
                      raise_server_exceptions=False)


def person_and_workspace(client) -> tuple[dict, str]:
    email = "owner@example.edu"
    assert client.post("/api/v1/auth/register", json={"email": email, "password": "correct horse battery staple",
                                                       "name": "Owner"}).status_code in (201, 202)
    token = client.post("/api/v1/auth/login", json={"email": email, "password": "correct horse battery staple"}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    workspace = client.post("/api/v1/workspaces", json={"name": "Self-hosted College"}, headers=headers).json()
    return headers, workspace["id"]


def assert_unavailable(response, status: str, reason: str) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "feature_unavailable"
    assert error["details"] == {"feature": "billing", "status": status}
    assert reason in error["message"]


@pytest.mark.parametrize(
    ("values", "status", "reason"),
    [
        ({}, "not_configured", "STRIPE_SECRET_KEY"),
        ({"stripe_secret_key": "sk_test_" + "k" * 24, "stripe_price_monthly": "price_m"},
         "not_configured", "STRIPE_PRICE_ANNUAL, STRIPE_WEBHOOK_SECRET are not"),
        ({"stripe_secret_key": "sk_test_" + "k" * 24, "stripe_price_monthly": "price_m", "stripe_price_annual": "price_a",
          "stripe_webhook_secret": WEBHOOK_SECRET, "disabled_features": ["billing"]},
         "disabled", "A3E_DISABLED_FEATURES"),
    ],
    ids=["unconfigured", "half_configured", "disabled"],
)
def test_billing_off_answers_503_and_everything_else_works_unlimited(make_settings, database_url, values, status, reason):
    with client_for(make_settings, database_url, **values) as client:
        wait_ready(client)
        headers, workspace_id = person_and_workspace(client)
        base = f"/api/v1/workspaces/{workspace_id}/billing"
        assert_unavailable(client.get(base, headers=headers), status, reason)
        assert_unavailable(client.post(f"{base}/checkout", json={"plan": "monthly"}, headers=headers), status, reason)
        assert_unavailable(client.post(f"{base}/portal", headers=headers), status, reason)
        # Even a correctly signed event: with billing off nothing is accepted, and nothing is stored.
        payload = json.dumps(stripe_event("customer.subscription.deleted", {"object": "subscription"}))
        signed = {"Stripe-Signature": stripe_signature(payload, WEBHOOK_SECRET)}
        assert_unavailable(client.post("/api/v1/webhooks/stripe", content=payload, headers=signed), status, reason)
        assert_unavailable(client.post("/api/v1/webhooks/stripe", content=payload), status, reason)
        assert client.get("/health").json()["features"]["billing"]["status"] == status

        # The default plan: unlimited, so uploads and invitations go on without end.
        for number in range(6):
            uploaded = client.post(f"/api/v1/workspaces/{workspace_id}/documents", headers=headers,
                                   files={"file": (f"n{number}.txt", f"Document number {number}.".encode(), "text/plain")})
            assert uploaded.status_code == 201, uploaded.text
        for number in range(6):
            invited = client.post(f"/api/v1/workspaces/{workspace_id}/invitations", headers=headers,
                                  json={"email": f"person{number}@example.edu", "role": "viewer"})
            assert invited.status_code == 201, invited.text


def test_the_default_plan_can_be_limited_for_self_hosting(make_settings, database_url):
    with client_for(make_settings, database_url, plan_default_limits="documents=1") as client:
        wait_ready(client)
        headers, workspace_id = person_and_workspace(client)
        path = f"/api/v1/workspaces/{workspace_id}/documents"
        assert client.post(path, headers=headers, files={"file": ("a.txt", b"One.", "text/plain")}).status_code == 201
        refused = client.post(path, headers=headers, files={"file": ("b.txt", b"Two.", "text/plain")})
        assert refused.status_code == 402
        error = refused.json()["error"]
        assert error["code"] == "plan_limit_reached" and "default plan allows 1 documents" in error["message"]


def test_plan_limits_parse_and_name_what_is_wrong():
    assert parse_limits("") == Limits()
    assert parse_limits(" seats=5, documents=unlimited,storage_mb=0 ") == Limits(seats=5, documents=None, storage_mb=0)
    for bad, says in (("seats", "not a limit"), ("pages=3", "not a limit"), ("seats=-1", "whole number"),
                      ("seats=1,seats=2", "twice")):
        with pytest.raises(ValueError, match=says):
            parse_limits(bad)


def test_settings_refuse_bad_limits_and_api_base_all_at_once(monkeypatch):
    from a3e.core.settings import read_settings

    monkeypatch.setenv("A3E_PLAN_TRIAL_LIMITS", "seats=many")
    monkeypatch.setenv("STRIPE_API_BASE", "ftp://stripe.test/v1")
    _, problems = read_settings(_env_file=None)
    named = {problem.variable: problem.message for problem in problems}
    assert "whole number" in named["A3E_PLAN_TRIAL_LIMITS"]
    assert "base URL" in named["STRIPE_API_BASE"]


def test_billing_is_enabled_only_when_completely_configured(make_settings):
    complete = {"stripe_secret_key": "sk_test_" + "k" * 24, "stripe_price_monthly": "price_m",
                "stripe_price_annual": "price_a", "stripe_webhook_secret": WEBHOOK_SECRET}
    assert billing_enabled(make_settings(**complete))
    assert not billing_enabled(make_settings(**{**complete, "stripe_webhook_secret": None}))
    assert not billing_enabled(make_settings(**{**complete, "stripe_price_annual": "price_m"}))
    assert not billing_enabled(make_settings(**complete, disabled_features=["billing"]))


def test_doctor_says_when_a_stripe_key_comes_without_prices_or_signing_secret(monkeypatch):
    from a3e.ops.doctor import FAIL, run_doctor

    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_" + "k" * 24)
    monkeypatch.setenv("STRIPE_PRICE_MONTHLY", "price_m")
    checks = {check.name: check for check in run_doctor(timeout=1).checks}
    assert checks["billing"].status == FAIL
    assert "STRIPE_PRICE_ANNUAL, STRIPE_WEBHOOK_SECRET" in checks["billing"].message
    assert "default plan" in checks["billing"].message
