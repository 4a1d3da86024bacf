"""Each published event fires from the real write path — an upload processed (or failing) in the
background, a suggestion accepted, a link made by hand, a status changed, an invitation accepted —
and reaches a subscribed receiver signed; an endpoint hears only the types it subscribed to."""

from __future__ import annotations

import json

from tests.documents import make_encrypted_pdf, make_pdf
from tests.test_evidence import upload, wait_processed
from tests.test_review_links import base, processed_document, suggest
from tests.test_standard_statuses import select_catalog, status_url
from tests.test_webhooks_support import api, receiver, register, verified, wait_for, webhook_settings  # noqa: F401
from tests.test_workspaces_support import accept, invite


def events_of(receiver, secret: str, event_type: str, count: int = 1) -> list[dict]:
    """The verified payloads of `event_type` once `count` of them arrived."""
    requests = wait_for(lambda: len(receiver.of_type(event_type)) >= count and receiver.of_type(event_type),
                        timeout=60, what=f"{count} {event_type}")
    return [verified(secret, request) for request in requests]


def test_documents_links_statuses_and_members_publish_their_events(api, make_person, make_workspace, receiver, tmp_path):
    owner = make_person()
    college = make_workspace(owner)
    catalog = select_catalog(api, owner, college, "SACSCOC")
    everything = ["document.processed", "document.failed", "link.created", "link.accepted",
                  "standard.status_changed", "member.joined"]
    secret = register(api, owner, college, receiver.url, everything)["secret"]

    # document.processed: when the background job has made the revision's passages.
    document, items = processed_document(api, owner, college, tmp_path,
                                         ["Faculty credentials are verified by the dean.", "The budget is balanced."])
    [processed] = events_of(receiver, secret, "document.processed")
    assert processed["data"] | {"workspace_id": college["id"], "document_id": document["id"], "status": "ready",
                                "revision_number": 1, "kind": "pdf", "passage_count": len(items)} == processed["data"]
    assert processed["data"]["title"] == document["title"]
    assert processed["data"]["revision_id"] == document["current_revision"]["id"]

    # document.failed: a file that cannot be processed, with the reason.
    locked = upload(api, owner, college, make_encrypted_pdf(tmp_path / "locked.pdf", ["Personnel file."])).json()
    assert wait_processed(api, owner, college, locked["id"])["status"] == "failed"
    [failed] = events_of(receiver, secret, "document.failed")
    assert failed["data"]["document_id"] == locked["id"] and "encrypted" in failed["data"]["reason"].lower()

    # link.accepted: an editor accepts the engine's suggestion.
    suggestion = suggest(api, college, catalog, "6.2.a", items[0], document, 0.82)
    assert api.post(f"{base(college)}/suggestions/{suggestion}/accept", headers=owner.headers).status_code == 200
    [accepted] = events_of(receiver, secret, "link.accepted")
    link = api.get(f"{base(college)}/links", params={"standard": "6.2.a"}, headers=owner.headers).json()["items"][0]
    assert accepted["data"] | {"link_id": link["id"], "standard": "6.2.a", "suggestion_id": suggestion, "confidence": 0.82,
                               "origin": "suggested", "passage_id": items[0]["id"], "accepted_by_id": owner.id,
                               "catalog_id": catalog["id"]} == accepted["data"]
    # Accepting again is the same acceptance: no second event.
    assert api.post(f"{base(college)}/suggestions/{suggestion}/accept", headers=owner.headers).status_code == 200

    # link.created: evidence linked by hand.
    made = api.post(f"{base(college)}/links", json={"standard": "13.1", "document_id": document["id"], "note": "Budget"},
                    headers=owner.headers).json()
    [created] = events_of(receiver, secret, "link.created")
    assert created["data"] | {"link_id": made["id"], "standard": "13.1", "origin": "manual", "note": "Budget",
                              "passage_id": None, "created_by_id": owner.id} == created["data"]

    # standard.status_changed: with what changed from what.
    changed = api.patch(status_url(college, "6.2.a"), json={"workflow": "in_review", "judgment": "compliant"},
                        headers=owner.headers)
    assert changed.status_code == 200, changed.text
    [status] = events_of(receiver, secret, "standard.status_changed")
    assert status["data"]["standard"] == "6.2.a" and status["data"]["judgment"] == "compliant"
    assert status["data"]["changes"] == {"workflow": {"from": "not_started", "to": "in_review"},
                                         "judgment": {"from": "not_assessed", "to": "compliant"}}

    # member.joined: an invitation accepted.
    newcomer = make_person()
    invitation = invite(api, owner, college["id"], newcomer.email, "editor")
    assert accept(api, newcomer, invitation["token"]).status_code == 200
    [joined] = events_of(receiver, secret, "member.joined")
    assert joined["data"] == {"workspace_id": college["id"], "user_id": newcomer.id, "email": newcomer.email,
                              "role": "editor"}

    # Exactly one of each: nothing fired twice.
    counts = {kind: len(receiver.of_type(kind)) for kind in everything}
    assert counts == dict.fromkeys(everything, 1)


def test_an_endpoint_hears_only_what_it_subscribed_to_and_only_from_its_workspace(
    api, make_person, make_workspace, receiver, tmp_path
):
    owner = make_person()
    college, other = make_workspace(owner, "College"), make_workspace(owner, "Other")
    select_catalog(api, owner, college, "HLC")
    select_catalog(api, owner, other, "HLC")
    secret = register(api, owner, college, receiver.url, ["standard.status_changed"])["secret"]
    document = upload(api, owner, college, make_pdf(tmp_path / "a.pdf", ["Assessment of student learning."])).json()
    api.patch(status_url(other, "4.B"), json={"workflow": "in_progress"}, headers=owner.headers)
    api.patch(status_url(college, "4.B"), json={"workflow": "in_progress"}, headers=owner.headers)
    [heard] = events_of(receiver, secret, "standard.status_changed")
    assert heard["data"]["workspace_id"] == college["id"]
    wait_processed(api, owner, college, document["id"])  # its document.processed went to nobody
    wait_for(lambda: api.get(f"/api/v1/workspaces/{college['id']}/mapping", headers=owner.headers).json()["complete"],
             timeout=60, what="mapping done")
    assert [json.loads(r.body)["type"] for r in receiver.requests] == ["standard.status_changed"]


def test_a_revision_the_stall_sweep_gives_up_on_publishes_document_failed(api, make_person, make_workspace, receiver,
                                                                           tmp_path):
    import uuid
    from datetime import timedelta

    from a3e.core.models import utcnow
    from a3e.evidence import jobs as evidence_jobs
    from a3e.evidence.models import Revision
    from a3e.jobs import JobContext

    owner = make_person()
    college = make_workspace(owner)
    secret = register(api, owner, college, receiver.url, ["document.failed"])["secret"]
    path = tmp_path / "stuck.txt"
    path.write_text("A document whose workers kept dying.")
    document = upload(api, owner, college, path).json()
    wait_processed(api, owner, college, document["id"])
    with api.app.state.database.session() as session:
        revision = session.get(Revision, uuid.UUID(document["current_revision"]["id"]))
        revision.status, revision.status_changed_at = "processing", utcnow() - timedelta(hours=1)
        revision.attempts = evidence_jobs.MAX_PROCESSING_ATTEMPTS
        session.commit()
    context = JobContext(api.app.state.settings, api.app.state.database, "evidence.resume_stalled", "test",
                         runtime=api.app.state.jobs)
    assert evidence_jobs.resume_stalled(context)["failed"] == 1
    [failed] = events_of(receiver, secret, "document.failed")
    assert failed["data"]["document_id"] == document["id"] and "did not finish" in failed["data"]["reason"]
