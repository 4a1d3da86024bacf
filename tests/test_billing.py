"""Billing with Stripe configured, on SQLite and PostgreSQL: signed Stripe events (valid, tampered,
unsigned, stale, duplicate, out of order, unknown), processed exactly once in the background;
checkout and portal against a local fake Stripe (localstripe plus recorded Checkout and portal
answers, tests/fake_stripe.py); plan limits at invitation and upload."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete, func, select, update

from a3e.audit.models import AuditEvent
from a3e.billing.models import BillingAccount, StripeEvent
from a3e.core.models import utcnow
from tests.conftest import CHEAP_ARGON2, free_port, wait_ready
from tests.fake_stripe import start_fake_stripe, stripe_event, stripe_signature, subscription
from tests.test_auth_support import outbox_messages
from tests.test_workspaces_support import invite, join

WEBHOOK_SECRET = "whsec_" + "t3stS1gn1ngS3cret" * 2
SECRET_KEY = "sk_test_" + "b1ll1ngK3y" * 3
MONTHLY, ANNUAL = "price_monthly_test", "price_annual_test"
EVENTS = "/api/v1/webhooks/stripe"


@pytest.fixture(scope="module")
def fake_stripe():
    fake, stop = start_fake_stripe()
    try:
        yield fake
    finally:
        stop()


def stripe_config(fake) -> dict:
    return {
        "stripe_secret_key": SECRET_KEY,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "stripe_price_monthly": MONTHLY,
        "stripe_price_annual": ANNUAL,
        "stripe_api_base": fake.base,
        "stripe_max_network_retries": 0,
    }


@pytest.fixture
def billing_overrides() -> dict:
    """Settings for one test (parametrize this name to change them)."""
    return {}


@pytest.fixture
def api(make_settings, database_url, fake_stripe, billing_overrides):
    """The app with billing on (overrides conftest's `api`, so make_person and make_workspace use it)."""
    from fastapi.testclient import TestClient

    from a3e.app import create_app

    settings = make_settings(database_url=database_url, **CHEAP_ARGON2, **{**stripe_config(fake_stripe), **billing_overrides})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


@pytest.fixture
def alice(make_person):
    return make_person()


@pytest.fixture
def college(make_workspace, alice):
    return make_workspace(alice)


def billing_path(workspace: dict, rest: str = "") -> str:
    return f"/api/v1/workspaces/{workspace['id']}/billing{rest}"


def send(api, event: dict | str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None, headers=None):
    payload = event if isinstance(event, str) else json.dumps(event)
    signature = {"Stripe-Signature": stripe_signature(payload, secret, timestamp=timestamp)}
    return api.post(EVENTS, content=payload, headers={"Content-Type": "application/json", **(signature if headers is None else headers)})


def stored(api, event_id: str) -> StripeEvent | None:
    with api.app.state.database.session() as session:
        return session.get(StripeEvent, event_id)


def wait_done(api, event_id: str, timeout: float = 20.0) -> StripeEvent:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = stored(api, event_id)
        if row is not None and row.status in ("processed", "ignored", "failed"):
            return row
        time.sleep(0.05)
    raise AssertionError(f"event {event_id} not processed: {stored(api, event_id)}")


def account(api, workspace: dict) -> BillingAccount | None:
    with api.app.state.database.session() as session:
        return session.get(BillingAccount, uuid.UUID(workspace["id"]))


def audit_actions(api, workspace: dict, prefix: str = "billing.") -> list[str]:
    with api.app.state.database.session() as session:
        return list(session.scalars(
            select(AuditEvent.action).where(
                AuditEvent.workspace_id == uuid.UUID(workspace["id"]), AuditEvent.action.startswith(prefix)
            ).order_by(AuditEvent.id)
        ))


def upload_text(api, person, workspace, name: str, text: str):
    return api.post(
        f"/api/v1/workspaces/{workspace['id']}/documents",
        files={"file": (name, text.encode(), "text/plain")},
        headers=person.headers,
    )


# ---- incoming events: signatures ------------------------------------------------------------


def test_a_signed_event_is_stored_once_acknowledged_and_applied(api, alice, college):
    event = stripe_event("customer.subscription.updated", subscription(college["id"], price=ANNUAL, customer="cus_a1"))
    response = send(api, event)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "duplicate": False}
    row = wait_done(api, event["id"])
    assert (row.status, row.attempts, row.type, str(row.workspace_id)) == ("processed", 1, event["type"], college["id"])
    state = account(api, college)
    assert (state.plan, state.status, state.stripe_customer_id, state.stripe_subscription_id) == ("annual", "active", "cus_a1", "sub_test")
    assert state.state_event_id == event["id"]
    billing = api.get(billing_path(college), headers=alice.headers).json()
    assert billing["plan"] == "annual" and billing["status"] == "active" and billing["current_period_end"]
    assert billing["limits"] == {"seats": 50, "documents": 20000, "storage_mb": 204800}
    assert billing["usage"]["seats"] == 1 and billing["has_customer"] is True
    assert audit_actions(api, college) == ["billing.subscription_changed"]


@pytest.mark.parametrize("tampering", ["tampered", "unsigned", "stale", "wrong_secret", "garbage_header", "malformed_body"])
def test_an_event_that_is_not_signed_by_stripe_is_refused_with_400(api, college, tampering):
    event = stripe_event("customer.subscription.deleted", subscription(college["id"], status="canceled"))
    payload = json.dumps(event)
    if tampering == "tampered":
        signature = stripe_signature(payload, WEBHOOK_SECRET)
        payload = payload.replace('"canceled"', '"active"')
        response = send(api, payload, headers={"Stripe-Signature": signature})
    elif tampering == "unsigned":
        response = send(api, payload, headers={})
    elif tampering == "stale":
        response = send(api, payload, timestamp=int(time.time()) - 301)
    elif tampering == "wrong_secret":
        response = send(api, payload, secret="whsec_" + "x" * 32)
    elif tampering == "garbage_header":
        response = send(api, payload, headers={"Stripe-Signature": "nonsense"})
    else:  # correctly signed, but not an event
        response = send(api, "{not json")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_stripe_event"
    with api.app.state.database.session() as session:
        assert session.scalar(select(func.count()).select_from(StripeEvent)) == 0
    untouched = account(api, college)  # absent, or only counted by the minute sweep (its trial)
    assert untouched is None or (untouched.stripe_customer_id, untouched.plan, untouched.status) == (None, None, None)


def test_a_duplicate_is_acknowledged_and_changes_nothing_even_sent_at_once(api, college):
    event = stripe_event("customer.subscription.created", subscription(college["id"]))
    answers: list[int] = []

    def deliver() -> None:
        answers.append(send(api, event).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 6
    assert send(api, event).json() == {"received": True, "duplicate": True}
    row = wait_done(api, event["id"])
    time.sleep(0.3)  # any second processing would have run by now
    assert stored(api, event["id"]).attempts == row.attempts == 1
    assert audit_actions(api, college) == ["billing.subscription_changed"]


def test_events_out_of_order_never_overwrite_newer_state(api, alice, college, make_workspace):
    now = int(time.time())
    newer = stripe_event("customer.subscription.updated", subscription(college["id"], status="active"), created=now)
    older = stripe_event("customer.subscription.updated", subscription(college["id"], status="past_due", price=ANNUAL), created=now - 60)
    older_invoice = stripe_event("invoice.payment_failed", {"object": "invoice", "customer": "cus_test",
                                                            "subscription": "sub_test"}, created=now - 30)
    for event in (newer, older, older_invoice):
        assert send(api, event).status_code == 200
        wait_done(api, event["id"])
    state = account(api, college)
    assert (state.plan, state.status, state.state_event_id, state.past_due_since) == ("monthly", "active", newer["id"], None)
    assert "older" in stored(api, older["id"]).last_error
    assert audit_actions(api, college) == ["billing.subscription_changed"]

    # The same two events the other way round end in the same state.
    other = make_workspace(alice, "Other College")
    late = stripe_event("customer.subscription.updated", subscription(other["id"], status="active", customer="cus_o",
                                                                       subscription_id="sub_o"), created=now)
    early = stripe_event("customer.subscription.updated", subscription(other["id"], status="past_due", price=ANNUAL,
                                                                        customer="cus_o", subscription_id="sub_o"),
                         created=now - 60)
    for event in (early, late):
        assert send(api, event).status_code == 200
        wait_done(api, event["id"])
    assert (account(api, other).plan, account(api, other).status) == ("monthly", "active")


def test_unknown_types_and_foreign_events_are_acknowledged_and_ignored(api, college):
    unknown = stripe_event("customer.tax_id.created", {"object": "tax_id", "customer": "cus_x"})
    foreign = stripe_event("customer.subscription.updated", subscription(str(uuid.uuid4()), customer="cus_elsewhere"))
    for event in (unknown, foreign):
        assert send(api, event).status_code == 200
    assert wait_done(api, unknown["id"]).status == "ignored"
    assert "not used" in stored(api, unknown["id"]).last_error
    assert wait_done(api, foreign["id"]).status == "ignored"
    assert "no workspace" in stored(api, foreign["id"]).last_error


def test_processing_runs_exactly_once_however_often_the_job_runs(api, college):
    from a3e.billing.jobs import process_stripe_event
    from a3e.jobs import JobContext

    event = stripe_event("invoice.payment_failed", {"object": "invoice", "customer": "cus_1",
                                                   "parent": {"subscription_details": {"metadata": {"workspace_id": college["id"]},
                                                                                       "subscription": "sub_1"}}})
    assert send(api, event).status_code == 200
    assert wait_done(api, event["id"]).status == "processed"
    context = JobContext(api.app.state.settings, api.app.state.database, "billing.process_event", "test",
                         runtime=api.app.state.jobs)
    assert process_stripe_event(context, event["id"]) is None  # already done: nothing applied again
    row = stored(api, event["id"])
    assert row.attempts == 1
    state = account(api, college)
    assert state.status == "past_due" and state.past_due_since is not None
    assert audit_actions(api, college) == ["billing.subscription_changed"]


def test_a_failing_event_is_visible_and_retried_with_backoff_and_a_lost_one_is_resumed(api, alice, college):
    from a3e.billing import jobs as billing_jobs
    from a3e.billing import service
    from a3e.jobs import JobContext

    broken = subscription(college["id"])
    broken["items"] = {"data": "not a list of items"}
    event = stripe_event("customer.subscription.updated", broken)
    assert send(api, event).status_code == 200
    row = wait_done(api, event["id"])
    assert (row.status, row.attempts) == ("failed", 1)
    assert "AttributeError" in row.last_error and row.next_attempt_at > utcnow()
    database = api.app.state.database
    with database.session() as session:
        assert service.failing_events(session)[0] == 1
    assert api.get(billing_path(college), headers=alice.headers).json()["failing_events"] == 1
    context = JobContext(api.app.state.settings, database, "billing.resume_events", "test", runtime=api.app.state.jobs)
    assert billing_jobs.resume_events(context)["requeued"] == 0  # not due yet
    with database.session() as session:
        session.execute(update(StripeEvent).where(StripeEvent.id == event["id"]).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    assert billing_jobs.resume_events(context)["requeued"] == 1
    deadline = time.monotonic() + 10
    while stored(api, event["id"]).attempts < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    again = stored(api, event["id"])
    assert (again.status, again.attempts) == ("failed", 2)
    assert again.next_attempt_at - utcnow() > timedelta(seconds=45)  # backed off: 60 s after the second try
    with database.session() as session:  # given up after the last attempt: left for an operator, not retried
        session.execute(update(StripeEvent).where(StripeEvent.id == event["id"]).values(
            attempts=service.MAX_EVENT_ATTEMPTS, next_attempt_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    assert billing_jobs.resume_events(context)["requeued"] == 0

    # An event stored while its job was lost (the queue was down at commit) is picked up by the sweep.
    lost = stripe_event("customer.subscription.updated", subscription(college["id"], price=ANNUAL))
    with database.session() as session:
        assert service.store_event(session, lost, json.dumps(lost))
        session.execute(update(StripeEvent).where(StripeEvent.id == lost["id"]).values(received_at=utcnow() - timedelta(minutes=5)))
        session.commit()
    assert billing_jobs.resume_events(context)["requeued"] == 1
    assert wait_done(api, lost["id"]).status == "processed"
    assert account(api, college).plan == "annual"


def test_trial_will_end_emails_the_owners_once(api, alice, college, make_person, data_dir):
    bob = make_person()
    join(api, alice, college["id"], bob, "owner")
    carol = make_person()
    join(api, alice, college["id"], carol, "editor")
    trial_end = int(time.time()) + 3 * 86400
    event = stripe_event("customer.subscription.trial_will_end",
                         subscription(college["id"], status="trialing", trial_end=trial_end))
    assert send(api, event).status_code == 200
    assert send(api, event).json()["duplicate"] is True
    assert wait_done(api, event["id"]).status == "processed"
    for owner in (alice, bob):
        [message] = outbox_messages(data_dir, to=owner.email, subject="trial")
        assert college["name"] in message["Subject"]
    time.sleep(0.3)
    assert outbox_messages(data_dir, to=carol.email, subject="trial", timeout=0) == []
    assert len(outbox_messages(data_dir, subject="trial", timeout=0)) == 2
    assert "billing.trial_will_end" in audit_actions(api, college)


# ---- checkout and portal ----------------------------------------------------------------------


def test_checkout_creates_the_customer_once_and_carries_the_workspace(api, alice, college, fake_stripe):
    first = api.post(billing_path(college, "/checkout"), json={"plan": "monthly"}, headers=alice.headers)
    assert first.status_code == 200, first.text
    assert first.json()["url"].startswith("https://checkout.stripe.test/")
    customer_id = account(api, college).stripe_customer_id
    mine = [c for c in fake_stripe.customers() if c["metadata"].get("workspace_id") == college["id"]]
    assert [c["id"] for c in mine] == [customer_id]
    [session] = [c for c in fake_stripe.calls("/v1/checkout/sessions") if c.params.get("customer") == customer_id]
    assert session.params["mode"] == "subscription"
    assert session.params["line_items[0][price]"] == MONTHLY
    assert session.params["metadata[workspace_id]"] == college["id"]
    assert session.params["subscription_data[metadata][workspace_id]"] == college["id"]
    assert session.params["success_url"].startswith("http://localhost:8000/")
    assert session.headers["Idempotency-Key"].startswith("a3e-checkout-")
    assert session.headers["Authorization"] == f"Bearer {SECRET_KEY}"

    annual = api.post(billing_path(college, "/checkout"), json={"plan": "annual"}, headers=alice.headers)
    assert annual.status_code == 200
    assert len([c for c in fake_stripe.customers() if c["metadata"].get("workspace_id") == college["id"]]) == 1
    calls = [c for c in fake_stripe.calls("/v1/checkout/sessions") if c.params.get("customer") == customer_id]
    assert [c.params["line_items[0][price]"] for c in calls] == [MONTHLY, ANNUAL]

    # The same Idempotency-Key: the same session, not a second one.
    again = [api.post(billing_path(college, "/checkout"), json={"plan": "annual"},
                      headers={**alice.headers, "Idempotency-Key": "click-42"}) for _ in range(2)]
    assert again[0].json()["url"] == again[1].json()["url"] != annual.json()["url"]
    assert audit_actions(api, college).count("billing.checkout_started") == 4

    bad_plan = api.post(billing_path(college, "/checkout"), json={"plan": "lifetime"}, headers=alice.headers)
    assert bad_plan.status_code == 422


def test_the_portal_needs_a_customer_and_billing_needs_owners_or_admins(api, alice, college, make_person):
    none_yet = api.post(billing_path(college, "/portal"), headers=alice.headers)
    assert none_yet.status_code == 409 and none_yet.json()["error"]["code"] == "no_billing_customer"
    assert "/billing/checkout" in none_yet.json()["error"]["message"]
    assert api.post(billing_path(college, "/checkout"), json={"plan": "monthly"}, headers=alice.headers).status_code == 200
    portal = api.post(billing_path(college, "/portal"), headers=alice.headers)
    assert portal.status_code == 200 and portal.json()["url"].startswith("https://billing.stripe.test/")
    assert "billing.portal_opened" in audit_actions(api, college)

    editor, admin, stranger = make_person(), make_person(), make_person()
    join(api, alice, college["id"], editor, "editor")
    join(api, alice, college["id"], admin, "admin")
    assert api.get(billing_path(college), headers=editor.headers).status_code == 403
    assert api.post(billing_path(college, "/checkout"), json={"plan": "monthly"}, headers=editor.headers).status_code == 403
    assert api.post(billing_path(college, "/portal"), headers=admin.headers).status_code == 200
    assert api.get(billing_path(college), headers=stranger.headers).status_code == 404


def test_stripe_errors_are_clear_envelopes_never_500s(api, alice, college, fake_stripe, make_settings, database_url, caplog):
    from fastapi.testclient import TestClient

    from a3e.app import create_app

    assert api.post(billing_path(college, "/checkout"), json={"plan": "monthly"}, headers=alice.headers).status_code == 200
    fake_stripe.fail_next = (400, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                                             "message": "No such price: 'price_monthly_test'"}})
    refused = api.post(billing_path(college, "/checkout"), json={"plan": "monthly"}, headers=alice.headers)
    assert refused.status_code == 502, refused.text
    error = refused.json()["error"]
    assert error["code"] == "stripe_error" and "No such price" in error["message"]
    assert error["details"]["stripe_code"] == "resource_missing" and error["request_id"]

    # Stripe unreachable: 503 and a Retry-After, and the key never in a log line.
    closed = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(database_url=database_url, **CHEAP_ARGON2,
                             **{**stripe_config(fake_stripe), "stripe_api_base": closed, "stripe_timeout": 2})
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(settings), raise_server_exceptions=False) as offline:
        wait_ready(offline)
        login = offline.post("/api/v1/auth/login", json={"email": alice.email, "password": alice.password}).json()
        headers = {"Authorization": f"Bearer {login['access_token']}"}
        portal = offline.post(billing_path(college, "/portal"), headers=headers)
        assert portal.status_code == 503, portal.text
        assert portal.json()["error"]["code"] == "stripe_unavailable" and portal.headers["Retry-After"]
    assert SECRET_KEY not in caplog.text and WEBHOOK_SECRET not in caplog.text


# ---- plan limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("billing_overrides", [{
    "plan_trial_limits": "seats=2,documents=1,storage_mb=unlimited",
    "plan_monthly_limits": "seats=3,documents=3,storage_mb=1",
}])
def test_limits_bite_at_invitation_and_upload_and_follow_the_subscription(api, alice, college, make_person, billing_overrides):
    path = billing_path(college)
    assert api.get(path, headers=alice.headers).json()["plan"] == "trial"
    invite(api, alice, college["id"], "first@example.edu")  # 1 member + 1 invitation = 2 seats
    again = invite(api, alice, college["id"], "first@example.edu")  # replaces the open one: no new seat
    over = api.post(f"/api/v1/workspaces/{college['id']}/invitations", json={"email": "second@example.edu", "role": "viewer"},
                    headers=alice.headers)
    assert over.status_code == 402, over.text
    error = over.json()["error"]
    assert error["code"] == "plan_limit_reached"
    assert "seats" in error["message"] and "trial" in error["message"] and "uses 2" in error["message"]
    assert f"POST /api/v1/workspaces/{college['id']}/billing/checkout" in error["message"]
    assert error["details"]["limit"] == "seats" and error["details"]["upgrade"]["plans"] == ["monthly", "annual"]
    assert (error["details"]["current"], error["details"]["maximum"]) == (2, 2)
    assert api.post(f"/api/v1/workspaces/{college['id']}/invitations/{again['id']}/resend", headers=alice.headers).status_code == 200

    assert upload_text(api, alice, college, "one.txt", "The first document.").status_code == 201
    assert upload_text(api, alice, college, "one-again.txt", "The first document.").status_code == 200  # a duplicate is free
    second = upload_text(api, alice, college, "two.txt", "The second document.")
    assert second.status_code == 402 and second.json()["error"]["details"]["limit"] == "documents"
    assert "allows 1 documents" in second.json()["error"]["message"]

    # Subscribed: the monthly plan's limits.
    now = int(time.time())
    subscribed = stripe_event("customer.subscription.created", subscription(college["id"]), created=now - 10)
    assert send(api, subscribed).status_code == 200
    wait_done(api, subscribed["id"])
    assert api.get(path, headers=alice.headers).json()["limits"] == {"seats": 3, "documents": 3, "storage_mb": 1}
    assert upload_text(api, alice, college, "two.txt", "The second document.").status_code == 201
    big = upload_text(api, alice, college, "big.txt", "x" * (1024 * 1024))
    assert big.status_code == 402 and big.json()["error"]["details"]["limit"] == "storage"

    # Past due: the plan holds within the grace period, then only reading works.
    failed = stripe_event("invoice.payment_failed", {"object": "invoice", "customer": "cus_test", "subscription": "sub_test"},
                          created=now - 5)
    assert send(api, failed).status_code == 200
    wait_done(api, failed["id"])
    billing = api.get(path, headers=alice.headers).json()
    assert (billing["plan"], billing["status"]) == ("monthly", "past_due") and billing["grace_ends_at"]
    assert invite(api, alice, college["id"], "second@example.edu")
    with api.app.state.database.session() as session:
        session.execute(update(BillingAccount).where(BillingAccount.workspace_id == uuid.UUID(college["id"]))
                        .values(past_due_since=utcnow() - timedelta(days=8)))
        session.commit()
    lapsed = upload_text(api, alice, college, "three.txt", "A third document.")
    assert lapsed.status_code == 402 and "overdue" in lapsed.json()["error"]["message"]
    assert api.get(f"/api/v1/workspaces/{college['id']}/documents", headers=alice.headers).json()["total"] == 2

    # Paid again: back to the plan. Canceled: lapsed, and it says so.
    paid = stripe_event("invoice.paid", {"object": "invoice", "customer": "cus_test", "subscription": "sub_test"}, created=now - 2)
    assert send(api, paid).status_code == 200
    wait_done(api, paid["id"])
    assert api.get(path, headers=alice.headers).json()["status"] == "active"
    canceled = stripe_event("customer.subscription.deleted", subscription(college["id"], status="canceled"), created=now)
    assert send(api, canceled).status_code == 200
    wait_done(api, canceled["id"])
    billing = api.get(path, headers=alice.headers).json()
    assert (billing["plan"], billing["status"], billing["limits"]["documents"]) == ("lapsed", "canceled", 0)
    refused = upload_text(api, alice, college, "four.txt", "A fourth document.")
    assert refused.status_code == 402 and "canceled" in refused.json()["error"]["message"]
    changes = audit_actions(api, college)
    assert changes.count("billing.subscription_changed") == 4


@pytest.mark.parametrize("billing_overrides", [{"plan_trial_limits": "documents=5,storage_mb=1"}])
def test_storage_counts_every_revision_and_an_ended_trial_adds_nothing(api, alice, college, billing_overrides):
    first = upload_text(api, alice, college, "half.txt", "a" * 600_000)
    assert first.status_code == 201
    revision = api.post(f"/api/v1/workspaces/{college['id']}/documents/{first.json()['id']}/revisions",
                        files={"file": ("half.txt", b"b" * 600_000, "text/plain")}, headers=alice.headers)
    assert revision.status_code == 402, revision.text
    details = revision.json()["error"]["details"]
    assert details["limit"] == "storage" and details["current"] == 0.6 and details["maximum"] == 1
    usage = api.get(billing_path(college), headers=alice.headers).json()["usage"]
    assert usage["documents"] == 1 and usage["storage_bytes"] == 600_000

    with api.app.state.database.session() as session:
        from a3e.billing.service import count_new_workspaces

        count_new_workspaces(session)  # what the minute sweep does: the trial's start is recorded
        session.execute(update(BillingAccount).where(BillingAccount.workspace_id == uuid.UUID(college["id"]))
                        .values(trial_started_at=utcnow() - timedelta(days=15)))
        session.commit()
    billing = api.get(billing_path(college), headers=alice.headers).json()
    assert (billing["plan"], billing["status"]) == ("lapsed", "trial_ended")
    ended = upload_text(api, alice, college, "small.txt", "tiny")
    assert ended.status_code == 402 and "trial has ended" in ended.json()["error"]["message"]
    invited = api.post(f"/api/v1/workspaces/{college['id']}/invitations", json={"email": "x@example.edu", "role": "viewer"},
                       headers=alice.headers)
    assert invited.status_code == 402
    assert api.get(f"/api/v1/workspaces/{college['id']}/documents", headers=alice.headers).status_code == 200


def test_a_completed_checkout_links_the_customer_and_later_events_find_the_workspace_by_it(api, alice, college):
    now = int(time.time())
    completed = stripe_event("checkout.session.completed", {
        "id": "cs_test_1", "object": "checkout.session", "mode": "subscription", "customer": "cus_checkout",
        "subscription": "sub_checkout", "payment_status": "paid", "client_reference_id": college["id"],
        "metadata": {"workspace_id": college["id"], "plan": "annual"},
    }, created=now - 20)
    assert send(api, completed).status_code == 200
    assert wait_done(api, completed["id"]).status == "processed"
    state = account(api, college)
    assert (state.plan, state.status, state.stripe_customer_id, state.stripe_subscription_id) == (
        "annual", "active", "cus_checkout", "sub_checkout")

    # An invoice names only the customer: the stored customer id finds the workspace.
    failed = stripe_event("invoice.payment_failed", {"object": "invoice", "customer": "cus_checkout"}, created=now - 10)
    assert send(api, failed).status_code == 200
    row = wait_done(api, failed["id"])
    assert (row.status, str(row.workspace_id)) == ("processed", college["id"])
    billing = api.get(billing_path(college), headers=alice.headers).json()
    assert (billing["plan"], billing["status"]) == ("annual", "past_due") and billing["past_due_since"]
    assert audit_actions(api, college) == ["billing.subscription_changed"] * 2


def test_switching_billing_on_starts_the_trial_of_workspaces_that_existed_before(api, alice, college):
    """A deployment that ran without Stripe for months: its workspaces get a trial from when billing
    counted them, not one that ended long ago; a workspace made since starts at its creation."""
    from a3e.billing import jobs as billing_jobs
    from a3e.billing.service import count_new_workspaces
    from a3e.jobs import JobContext
    from a3e.workspaces.models import Workspace

    database = api.app.state.database
    with database.session() as session:
        session.execute(update(Workspace).where(Workspace.id == uuid.UUID(college["id"]))
                        .values(created_at=utcnow() - timedelta(days=200)))
        session.execute(delete(BillingAccount))
        session.commit()
    uncounted = api.get(billing_path(college), headers=alice.headers).json()
    assert (uncounted["plan"], uncounted["status"]) == ("trial", "trialing")  # not lapsed before it is counted

    context = JobContext(api.app.state.settings, database, "billing.resume_events", "test", runtime=api.app.state.jobs)
    billing_jobs.resume_events(context)  # (the app's own minute sweep may have got there first)
    with database.session() as session:
        old = session.get(BillingAccount, uuid.UUID(college["id"]))
        assert utcnow() - old.trial_started_at < timedelta(minutes=1)
        assert count_new_workspaces(session) == 0  # counted once
    counted = api.get(billing_path(college), headers=alice.headers).json()
    assert counted["status"] == "trialing"
    ends = datetime.fromisoformat(counted["trial_ends_at"])
    assert timedelta(days=13, hours=23) < ends - utcnow() <= timedelta(days=14)

    newer = api.post("/api/v1/workspaces", json={"name": "Newer College"}, headers=alice.headers).json()
    with database.session() as session:
        created = session.get(Workspace, uuid.UUID(newer["id"])).created_at
        count_new_workspaces(session, now=created + timedelta(minutes=2))
        session.commit()
        assert session.get(BillingAccount, uuid.UUID(newer["id"])).trial_started_at == created
