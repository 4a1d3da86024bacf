"""Outgoing webhooks end to end, on SQLite and PostgreSQL, with the service's own job queue and a
real receiver on 127.0.0.1: registration (secret once, catalogue, address guard), signed
deliveries verified by the `standardwebhooks` library, retries with backoff, the delivery log,
manual redelivery, automatic disabling with its email, at-least-once across a lost job, and
nothing published by a rolled-back transaction."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from a3e.core.models import utcnow
from a3e.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from tests.test_standard_statuses import select_catalog, status_url
from tests.test_webhooks_support import (  # noqa: F401 - fixtures
    api,
    deliveries,
    hooks_url,
    receiver,
    register,
    verified,
    wait_for,
    webhook_settings,
)
from tests.test_workspaces_support import audit_events, create_key, join, wait_for_emails

STATUS = "standard.status_changed"


def change_status(api, person, workspace, code: str = "8.2.a", workflow: str = "in_progress"):
    response = api.patch(status_url(workspace, code), json={"workflow": workflow}, headers=person.headers)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def owner(make_person):
    return make_person()


@pytest.fixture
def college(api, make_workspace, owner):
    workspace = make_workspace(owner)
    select_catalog(api, owner, workspace, "SACSCOC")
    return workspace


def test_an_endpoint_is_registered_with_its_secret_shown_once_and_every_change_audited(api, owner, college, receiver):
    created = api.post(hooks_url(college), json={"url": receiver.url, "event_types": [STATUS, "member.joined"],
                                                 "description": "Campus data warehouse"}, headers=owner.headers)
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_") and len(endpoint["secret"]) >= 6 + 32
    assert endpoint["event_types"] == [STATUS, "member.joined"] and endpoint["enabled"] is True
    assert endpoint["health"]["status"] == "new" and endpoint["health"]["consecutive_failures"] == 0

    shown = api.get(f"{hooks_url(college)}/{endpoint['id']}", headers=owner.headers)
    assert shown.status_code == 200 and "secret" not in shown.json()
    listed = api.get(hooks_url(college), headers=owner.headers).json()
    assert listed["total"] == 1 and "secret" not in listed["items"][0]
    with api.app.state.database.session() as session:  # kept encrypted, never in clear
        stored = session.get(WebhookEndpoint, uuid.UUID(endpoint["id"]))
        assert endpoint["secret"] not in stored.secret_encrypted

    changed = api.patch(f"{hooks_url(college)}/{endpoint['id']}", json={"event_types": [STATUS], "description": ""},
                        headers=owner.headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["event_types"] == [STATUS] and changed.json()["description"] is None

    rotated = api.post(f"{hooks_url(college)}/{endpoint['id']}/rotate-secret", headers=owner.headers)
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != endpoint["secret"] and rotated.json()["previous_secret_valid_until"]

    assert api.delete(f"{hooks_url(college)}/{endpoint['id']}", headers=owner.headers).status_code == 204
    assert api.get(f"{hooks_url(college)}/{endpoint['id']}", headers=owner.headers).status_code == 404
    actions = [event.action for event in audit_events(api, college["id"]) if event.action.startswith("webhook.")]
    assert actions == ["webhook.created", "webhook.updated", "webhook.secret_rotated", "webhook.deleted"]
    for event in audit_events(api, college["id"]):
        assert endpoint["secret"] not in json.dumps(event.details or {})


def test_unknown_event_types_are_refused(api, owner, college, receiver):
    response = api.post(hooks_url(college), json={"url": receiver.url, "event_types": ["document.exploded"]},
                        headers=owner.headers)
    assert response.status_code == 422
    assert "unknown event type 'document.exploded'" in response.json()["error"]["message"]
    assert api.post(hooks_url(college), json={"url": receiver.url, "event_types": []},
                    headers=owner.headers).status_code == 422
    endpoint = register(api, owner, college, receiver.url, [STATUS])
    patched = api.patch(f"{hooks_url(college)}/{endpoint['id']}", json={"event_types": ["nope"]}, headers=owner.headers)
    assert patched.status_code == 422


@pytest.mark.parametrize("webhook_settings", [{"webhooks_allow_private": False}])
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "inside the IPv6 address"),
        ("http://[fd00::1]/hook", "private"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("ftp://93.184.216.34/hook", "http:// or https://"),
        ("http://user:pw@93.184.216.34/hook", "credentials"),
    ],
)
def test_urls_that_point_inside_the_network_are_refused_at_registration(api, owner, college, url, why):
    response = api.post(hooks_url(college), json={"url": url, "event_types": [STATUS]}, headers=owner.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "webhook_url_refused" and why in error["message"]
    assert api.get(hooks_url(college), headers=owner.headers).json()["total"] == 0


@pytest.mark.parametrize("webhook_settings", [{"webhooks_allow_private": False}])
def test_an_address_that_turned_private_after_registration_is_refused_at_delivery(api, owner, college, receiver):
    endpoint = register(api, owner, college, "http://93.184.216.34/hook", [STATUS])  # public: accepted
    # The host now leads inside the network (as DNS can change): the attempt must refuse to go there.
    with api.app.state.database.session() as session:
        session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == uuid.UUID(endpoint["id"]))
                        .values(url=receiver.url))
        session.commit()
    change_status(api, owner, college)
    log = wait_for(lambda: deliveries(api, owner, college, endpoint)["items"][0]["attempt_log"], what="an attempt")
    assert log[0]["succeeded"] is False and log[0]["status_code"] is None
    assert log[0]["error"].startswith("refused: the URL points at a non-public address") and "loopback" in log[0]["error"]
    time.sleep(0.5)
    assert receiver.requests == []


def test_a_failing_receiver_is_retried_with_backoff_and_every_attempt_is_signed_and_logged(api, owner, college, receiver):
    endpoint = register(api, owner, college, receiver.url, [STATUS])
    receiver.answer(500)  # then 200
    change_status(api, owner, college)
    first, second = receiver.received(2)
    assert second.at - first.at >= 0.3 * 0.8  # the backoff (0.3 s ± 20 % in these tests)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] and first.headers["webhook-id"].startswith("msg_")
    assert first.body == second.body
    assert first.headers["content-type"] == "application/json" and first.headers["user-agent"].startswith("A3E-Webhooks/")
    assert first.headers["host"] == receiver.url.split("/")[2]  # the URL's host, though the vetted address is dialled
    for request in (first, second):
        payload = verified(endpoint["secret"], request)  # the reference library checks id, timestamp, signature
    assert payload["type"] == STATUS and payload["timestamp"].endswith("Z")
    assert payload["data"]["standard"] == "8.2.a" and payload["data"]["workflow"] == "in_progress"
    assert payload["data"]["workspace_id"] == college["id"]
    assert payload["data"]["changes"] == {"workflow": {"from": "not_started", "to": "in_progress"}}

    delivery = wait_for(lambda: [d for d in deliveries(api, owner, college, endpoint)["items"] if d["status"] == "succeeded"],
                        what="a succeeded delivery")[0]
    assert delivery["event_id"] == first.headers["webhook-id"] and delivery["attempts"] == 2
    failed, succeeded = delivery["attempt_log"]
    assert (failed["number"], failed["succeeded"], failed["status_code"], failed["error"]) == (1, False, 500, "HTTP 500")
    assert failed["response_body"].startswith("receiver says no") and len(failed["response_body"]) <= 1024
    assert (succeeded["number"], succeeded["succeeded"], succeeded["status_code"]) == (2, True, 200)
    health = api.get(f"{hooks_url(college)}/{endpoint['id']}", headers=owner.headers).json()["health"]
    assert health["status"] == "healthy" and health["consecutive_failures"] == 0 and health["last_success_at"]
    assert health["last_failure_reason"] == "HTTP 500"

    # A tampered body or a foreign secret does not verify.
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint["secret"]).verify(second.body.replace(b"in_progress", b"approved"), second.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(second.body, second.headers)

    # Manual redelivery: the same message again, now, logged as manual and audited.
    redelivered = api.post(f"{hooks_url(college)}/{endpoint['id']}/deliveries/{delivery['id']}/redeliver",
                           headers=owner.headers)
    assert redelivered.status_code == 202, redelivered.text
    third = receiver.received(3)[2]
    assert third.headers["webhook-id"] == first.headers["webhook-id"]
    verified(endpoint["secret"], third)
    log = wait_for(lambda: (d := deliveries(api, owner, college, endpoint)["items"][0])["attempts"] == 3 and d["attempt_log"])
    assert log[2]["manual"] is True and log[2]["succeeded"] is True
    assert [e.action for e in audit_events(api, college["id"], "webhook.redelivered")] == ["webhook.redelivered"]


def test_a_delivery_whose_attempts_run_out_is_failed_and_a_redirect_is_not_followed(api, owner, college, receiver):
    endpoint = register(api, owner, college, receiver.url, [STATUS])
    receiver.answer(default=302)
    change_status(api, owner, college)
    receiver.received(3)  # webhooks_max_attempts in these tests
    delivery = wait_for(lambda: deliveries(api, owner, college, endpoint, status="failed")["items"], what="failed")[0]
    assert delivery["attempts"] == 3 and delivery["next_attempt_at"] is None
    assert all("redirects are not followed" in attempt["error"] for attempt in delivery["attempt_log"])
    assert all(request.path == "/hooks/a3e" for request in receiver.requests)  # the Location was never visited
    time.sleep(0.8)
    assert len(receiver.requests) == 3


@pytest.mark.parametrize("webhook_settings", [{"webhooks_disable_after_failures": 3, "webhooks_max_attempts": 5}])
def test_an_endpoint_failing_too_often_is_disabled_its_admins_emailed_and_it_can_be_enabled_again(
    api, owner, college, receiver, make_person
):
    admin, editor = make_person(), make_person()
    join(api, owner, college["id"], admin, "admin")
    join(api, owner, college["id"], editor, "editor")
    endpoint = register(api, owner, college, receiver.url, [STATUS])
    receiver.answer(default=503)
    change_status(api, owner, college, "8.2.a")
    change_status(api, owner, college, "6.1")
    shown = wait_for(lambda: (e := api.get(f"{hooks_url(college)}/{endpoint['id']}", headers=owner.headers).json())
                     ["enabled"] is False and e, what="the endpoint disabled")
    assert shown["health"]["status"] == "disabled" and shown["health"]["consecutive_failures"] >= 3
    assert "failed attempts in a row" in shown["health"]["disabled_reason"]
    listed = deliveries(api, owner, college, endpoint)["items"]
    assert {d["status"] for d in listed} <= {"cancelled", "failed"} and "cancelled" in {d["status"] for d in listed}
    disabled = audit_events(api, college["id"], "webhook.disabled")
    assert len(disabled) == 1 and disabled[0].details["consecutive_failures"] >= 3

    subject = "was disabled after repeated failures"
    mails = wait_for_emails(api, 2, subject=subject)
    assert sorted(m["To"] for m in mails) == sorted([owner.email, admin.email])  # not the editor
    assert receiver.url in mails[0].get_body(preferencelist=("plain",)).get_content()

    # Disabled: new events are not delivered, redelivery says why.
    seen = len(receiver.requests)
    change_status(api, owner, college, "8.2.a", "in_review")
    time.sleep(0.8)
    assert len(receiver.requests) == seen
    refused = api.post(f"{hooks_url(college)}/{endpoint['id']}/deliveries/{listed[0]['id']}/redeliver", headers=owner.headers)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "webhook_disabled"

    # The receiver is fixed; enabling starts afresh.
    receiver.answer(default=200)
    enabled = api.patch(f"{hooks_url(college)}/{endpoint['id']}", json={"enabled": True}, headers=owner.headers).json()
    assert enabled["enabled"] is True and enabled["health"]["consecutive_failures"] == 0
    assert enabled["health"]["disabled_reason"] is None
    change_status(api, owner, college, "6.1", "in_review")
    assert json.loads(receiver.received(seen + 1)[-1].body)["data"]["standard"] == "6.1"


def test_a_rolled_back_transaction_publishes_nothing(api, owner, college, receiver):
    from a3e.webhooks.publish import publish

    register(api, owner, college, receiver.url, [STATUS])
    workspace_id = uuid.UUID(college["id"])
    with api.app.state.database.session() as session:
        assert publish(session, workspace_id, STATUS, {"workspace_id": college["id"], "standard": "rolled back"})
        session.rollback()
    with api.app.state.database.session() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
        publish(session, workspace_id, STATUS, {"workspace_id": college["id"], "standard": "committed"})
        session.commit()
    request = receiver.received(1)[0]
    time.sleep(0.5)
    assert [json.loads(r.body)["data"]["standard"] for r in receiver.requests] == ["committed"]
    assert json.loads(request.body)["type"] == STATUS


def test_a_delivery_whose_job_was_lost_is_sent_by_the_sweep(api, owner, college, receiver):
    from a3e.jobs import service as jobs_service
    from a3e.webhooks.publish import publish

    register(api, owner, college, receiver.url, [STATUS])
    runtime = api.app.state.jobs
    jobs_service.uninstall(runtime)  # the queue is unreachable when the change commits
    try:
        with api.app.state.database.session() as session:
            publish(session, uuid.UUID(college["id"]), STATUS, {"workspace_id": college["id"], "standard": "x"})
            session.commit()
    finally:
        jobs_service.install(runtime)
    time.sleep(0.5)
    assert receiver.requests == []
    with api.app.state.database.session() as session:  # a minute later…
        session.execute(update(WebhookDelivery).values(next_attempt_at=utcnow() - timedelta(minutes=1)))
        session.commit()
    runtime.run_periodic_now("webhooks.sweep")
    assert json.loads(receiver.received(1)[0].body)["data"]["standard"] == "x"


def test_after_a_rotation_deliveries_verify_with_the_new_and_the_old_secret(api, owner, college, receiver):
    endpoint = register(api, owner, college, receiver.url, [STATUS])
    rotated = api.post(f"{hooks_url(college)}/{endpoint['id']}/rotate-secret", headers=owner.headers).json()
    change_status(api, owner, college)
    request = receiver.received(1)[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    verified(rotated["secret"], request)
    verified(endpoint["secret"], request)  # receivers get a day to switch


def test_only_admins_and_owners_manage_webhooks_and_other_workspaces_see_nothing(api, owner, college, receiver, make_person):
    endpoint = register(api, owner, college, receiver.url, [STATUS])
    editor, stranger = make_person(), make_person()
    join(api, owner, college["id"], editor, "editor")
    base = f"{hooks_url(college)}/{endpoint['id']}"
    for method, path, body in [("get", hooks_url(college), None), ("post", hooks_url(college), {"url": receiver.url, "event_types": [STATUS]}),
                               ("get", base, None), ("patch", base, {"enabled": False}), ("delete", base, None),
                               ("get", f"{base}/deliveries", None)]:
        kwargs = {"json": body} if body is not None else {}
        assert getattr(api, method)(path, headers=editor.headers, **kwargs).status_code == 403, (method, path)
        assert getattr(api, method)(path, headers=stranger.headers, **kwargs).status_code == 404, (method, path)
    key = create_key(api, owner, college["id"], scope="read_write")
    assert api.get(hooks_url(college), headers={"Authorization": f"Bearer {key['key']}"}).status_code == 403
    # Another workspace's owner cannot reach this endpoint through their own workspace either.
    elsewhere = api.post("/api/v1/workspaces", json={"name": "Other College"}, headers=stranger.headers).json()
    assert api.get(f"{hooks_url(elsewhere)}/{endpoint['id']}", headers=stranger.headers).status_code == 404
    assert api.get(f"{hooks_url(college)}/{endpoint['id']}", headers=owner.headers).json()["enabled"] is True


def test_the_delivery_log_is_forgotten_after_a_month_unless_something_still_waits(api, owner, college, receiver):
    from a3e.jobs import service as jobs_service
    from a3e.webhooks.jobs import forget_old_events
    from a3e.webhooks.models import WebhookAttempt
    from a3e.webhooks.publish import publish

    endpoint = register(api, owner, college, receiver.url, [STATUS])
    change_status(api, owner, college)
    wait_for(lambda: deliveries(api, owner, college, endpoint, status="succeeded")["items"], what="delivered")
    runtime = api.app.state.jobs
    jobs_service.uninstall(runtime)  # this one stays pending
    try:
        with api.app.state.database.session() as session:
            waiting = publish(session, uuid.UUID(college["id"]), STATUS, {"workspace_id": college["id"]}).id
            session.commit()
    finally:
        jobs_service.install(runtime)
    with api.app.state.database.session() as session:
        session.execute(update(WebhookEvent).values(created_at=utcnow() - timedelta(days=31)))
        assert forget_old_events(session) == 1
        session.commit()
        assert list(session.scalars(select(WebhookEvent.id))) == [waiting]
        assert [d.event_id for d in session.scalars(select(WebhookDelivery))] == [waiting]
        assert session.scalar(select(func.count()).select_from(WebhookAttempt)) == 0


@pytest.mark.parametrize("webhook_settings", [{"webhooks_retry_schedule": [4.0], "webhooks_max_attempts": 5}])
def test_a_failing_endpoint_is_probed_not_flooded_and_gets_everything_once_it_answers(api, owner, college, receiver):
    from a3e.webhooks.publish import publish

    endpoint = register(api, owner, college, receiver.url, [STATUS])
    receiver.answer(default=500)
    with api.app.state.database.session() as session:
        for number in range(8):
            publish(session, uuid.UUID(college["id"]), STATUS, {"workspace_id": college["id"], "number": number})
        session.commit()
    receiver.received(3)
    time.sleep(1.0)
    # Three failures in a row open the circuit: the other deliveries wait, their attempts unspent
    # (an attempt already under way when it opened may still end: one per job thread).
    assert 3 <= len(receiver.requests) <= 3 + api.app.state.settings.job_workers - 1
    listed = deliveries(api, owner, college, endpoint)["items"]
    assert {d["status"] for d in listed} == {"pending"}
    waiting = [d for d in listed if d["attempts"] == 0]
    assert len(waiting) >= 8 - len(receiver.requests)
    # People may still try one at once.
    tried = len(receiver.requests)
    assert api.post(f"{hooks_url(college)}/{endpoint['id']}/deliveries/{waiting[0]['id']}/redeliver",
                    headers=owner.headers).status_code == 202
    receiver.received(tried + 1)
    # The receiver recovers: the next probe succeeds, and everything waiting goes out.
    receiver.answer(default=200)
    wait_for(lambda: deliveries(api, owner, college, endpoint, status="succeeded")["total"] == 8, timeout=30,
             what="every delivery succeeded")
    numbers = {json.loads(r.body)["data"]["number"] for r in receiver.requests}
    assert numbers == set(range(8))
    health = api.get(f"{hooks_url(college)}/{endpoint['id']}", headers=owner.headers).json()["health"]
    assert health["status"] == "healthy" and health["consecutive_failures"] == 0
