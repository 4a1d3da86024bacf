"""People in the loop: suggestions are proposals that an editor accepts or rejects, and links can be
made by hand — each recording who, when and its origin, every decision audited. (Suggestions are
written here as the mapping job writes them.)"""

from __future__ import annotations

import hashlib
import time
import uuid

from sqlalchemy import delete

from a3e.review.models import Suggestion
from a3e.review.versions import review_changed
from tests.documents import make_pdf
from tests.test_evidence import passages, upload, wait_processed
from tests.test_standard_statuses import select_catalog
from tests.test_workspaces_support import audit_events, join


def base(workspace) -> str:
    return f"/api/v1/workspaces/{workspace['id']}"


def processed_document(api, person, workspace, tmp_path, pages: list[str]) -> tuple[dict, list[dict]]:
    """A processed document whose suggestions are only those the test writes: once the engine has
    mapped it (in the background), the engine's own are removed."""
    pdf = make_pdf(tmp_path / f"doc-{uuid.uuid4().hex[:6]}.pdf", pages)
    document = upload(api, person, workspace, pdf).json()
    wait_processed(api, person, workspace, document["id"])
    without_engine_suggestions(api, person, workspace, document)
    return document, passages(api, person, workspace, document["id"])["items"]


def without_engine_suggestions(api, person, workspace, document: dict) -> None:
    """Wait for the background mapping of the workspace, then remove what the engine suggested
    for `document`: the test's suggestions are then the only ones."""
    deadline = time.monotonic() + 30
    while not api.get(f"{base(workspace)}/mapping", headers=person.headers).json()["complete"]:
        assert time.monotonic() < deadline, "mapping did not finish"
        time.sleep(0.1)
    with api.app.state.database.session() as session:
        session.execute(delete(Suggestion).where(Suggestion.document_id == uuid.UUID(document["id"])))
        review_changed(session, uuid.UUID(workspace["id"]))  # a bulk statement: say whose matrix changed
        session.commit()


def suggest(api, workspace, catalog, code: str, passage: dict, document: dict, confidence: float) -> int:
    with api.app.state.database.session() as session:
        suggestion = Suggestion(
            workspace_id=uuid.UUID(workspace["id"]), selection_id=uuid.UUID(catalog["id"]), standard_code=code,
            passage_id=passage["id"], document_id=uuid.UUID(document["id"]),
            revision_id=uuid.UUID(document["current_revision"]["id"]),
            passage_digest=hashlib.sha256(passage["text"].encode()).hexdigest(), confidence=confidence, rank=1,
            engine="test",
        )
        session.add(suggestion)
        session.commit()
        return suggestion.id


def test_accepting_a_suggestion_makes_a_link_and_rejecting_keeps_it_out(api, make_person, make_workspace, tmp_path):
    liaison = make_person()
    college = make_workspace(liaison)
    catalog = select_catalog(api, liaison, college, "SACSCOC")
    document, items = processed_document(api, liaison, college, tmp_path,
                                         ["Faculty credentials are verified by the dean.", "The budget is balanced."])
    first = suggest(api, college, catalog, "6.2.a", items[0], document, 0.82)
    second = suggest(api, college, catalog, "13.1", items[1], document, 0.41)

    listed = api.get(f"{base(college)}/suggestions", params={"status": "pending"}, headers=liaison.headers).json()
    assert [item["id"] for item in listed["items"]] == [first, second]  # most confident first
    top = listed["items"][0]
    assert top["standard"] == "6.2.a" and top["confidence"] == 0.82
    assert top["passage"]["text"].startswith("Faculty credentials") and top["passage"]["page"] == 1
    assert top["passage"]["document_title"] == document["title"]

    editor = make_person()
    join(api, liaison, college["id"], editor, "editor")
    accepted = api.post(f"{base(college)}/suggestions/{first}/accept", headers=editor.headers)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted" and accepted.json()["decided_by_id"] == editor.id
    assert api.post(f"{base(college)}/suggestions/{first}/accept", headers=editor.headers).status_code == 200  # idempotent
    links = api.get(f"{base(college)}/links", params={"standard": "6.2.a"}, headers=editor.headers).json()
    assert links["total"] == 1
    link = links["items"][0]
    assert (link["origin"], link["confidence"], link["suggestion_id"], link["created_by_id"]) == (
        "suggested", 0.82, first, editor.id)
    assert link["passage_id"] == items[0]["id"]

    rejected = api.post(f"{base(college)}/suggestions/{second}/reject", json={"reason": "About finances, not 13.1's point"},
                        headers=editor.headers)
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected" and rejected.json()["reason"] == "About finances, not 13.1's point"
    pending = api.get(f"{base(college)}/suggestions", params={"status": "pending"}, headers=editor.headers).json()
    assert pending["total"] == 0

    # Changing one's mind: rejecting an accepted suggestion removes the link it made.
    api.post(f"{base(college)}/suggestions/{first}/reject", headers=liaison.headers)
    assert api.get(f"{base(college)}/links", headers=liaison.headers).json()["total"] == 0

    actions = [event.action for event in audit_events(api, college["id"])]
    assert actions.count("suggestion.accepted") == 1 and actions.count("suggestion.rejected") == 2


def test_linking_by_hand_a_passage_or_a_whole_document(api, make_person, make_workspace, tmp_path):
    liaison = make_person()
    college = make_workspace(liaison)
    catalog = select_catalog(api, liaison, college, "HLC")
    document, items = processed_document(api, liaison, college, tmp_path, ["Assessment of student learning."])
    made = api.post(f"{base(college)}/links", json={"standard": "4.B", "document_id": document["id"],
                                                    "passage_id": items[0]["id"], "note": "The assessment report"},
                    headers=liaison.headers)
    assert made.status_code == 201, made.text
    assert made.json()["origin"] == "manual" and made.json()["confidence"] is None
    assert made.json()["catalog_id"] == catalog["id"]
    whole = api.post(f"{base(college)}/links", json={"standard": "4.B", "document_id": document["id"]}, headers=liaison.headers)
    assert whole.status_code == 201 and whole.json()["passage_id"] is None
    again = api.post(f"{base(college)}/links", json={"standard": "4.B", "document_id": document["id"]}, headers=liaison.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "link_exists"
    assert api.post(f"{base(college)}/links", json={"standard": "9.Z", "document_id": document["id"]},
                    headers=liaison.headers).status_code == 404
    assert api.post(f"{base(college)}/links", json={"standard": "4.B", "document_id": document["id"], "passage_id": 10**9},
                    headers=liaison.headers).status_code == 404
    assert api.post(f"{base(college)}/links", json={"standard": "4.B", "document_id": str(uuid.uuid4())},
                    headers=liaison.headers).status_code == 404
    removed = api.delete(f"{base(college)}/links/{made.json()['id']}", headers=liaison.headers)
    assert removed.status_code == 204
    assert api.get(f"{base(college)}/links", headers=liaison.headers).json()["total"] == 1
    actions = [event.action for event in audit_events(api, college["id"])]
    assert actions.count("link.added") == 2 and actions.count("link.removed") == 1


def test_viewers_read_but_do_not_decide(api, make_person, make_workspace, tmp_path):
    liaison = make_person()
    college = make_workspace(liaison)
    catalog = select_catalog(api, liaison, college, "SACSCOC")
    document, items = processed_document(api, liaison, college, tmp_path, ["Mission statement."])
    suggestion = suggest(api, college, catalog, "4.1", items[0], document, 0.7)
    viewer = make_person()
    join(api, liaison, college["id"], viewer, "viewer")
    assert api.get(f"{base(college)}/suggestions", headers=viewer.headers).json()["total"] == 1
    assert api.post(f"{base(college)}/suggestions/{suggestion}/accept", headers=viewer.headers).status_code == 403
    assert api.post(f"{base(college)}/links", json={"standard": "4.1", "document_id": document["id"]},
                    headers=viewer.headers).status_code == 403
    stranger = make_person()
    assert api.post(f"{base(college)}/suggestions/{suggestion}/accept", headers=stranger.headers).status_code == 404
