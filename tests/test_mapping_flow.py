"""Mapping in the service: processed documents are mapped against the workspace's catalogs in the
background, suggestions point at their passages, rejections survive re-mapping and new revisions,
and the workspace shows progress — on SQLite and PostgreSQL, with the embedded job queue."""

from __future__ import annotations

import time
import uuid

from a3e.review.mapping import SUGGEST_THRESHOLD, map_revision_now
from tests.documents import make_pdf
from tests.test_evidence import upload, wait_processed
from tests.test_review_links import base
from tests.test_standard_statuses import select_catalog

FACULTY = ("Each faculty member's academic credentials and qualifications are reviewed by the dean before "
           "appointment; faculty hold terminal degrees in their teaching discipline.")
COMPLAINTS = "Student complaints are recorded and resolved under the written complaint policy."


def wait_mapped(api, person, workspace, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = api.get(f"{base(workspace)}/mapping", headers=person.headers).json()
        if progress["complete"] and progress["runs_expected"]:
            return progress
        time.sleep(0.1)
    raise AssertionError(f"mapping not complete: {progress}")


def test_a_processed_document_gets_suggestions_that_point_at_their_passages(api, make_person, make_workspace, tmp_path):
    liaison = make_person()
    college = make_workspace(liaison)
    select_catalog(api, liaison, college, "SACSCOC")
    pdf = make_pdf(tmp_path / "handbook.pdf", [FACULTY, COMPLAINTS])
    document = upload(api, liaison, college, pdf).json()
    wait_processed(api, liaison, college, document["id"])
    progress = wait_mapped(api, liaison, college)
    assert progress["documents_ready"] == 1 and progress["runs_done"] == 1

    suggestions = api.get(f"{base(college)}/suggestions", params={"document_id": document["id"]},
                          headers=liaison.headers).json()["items"]
    by_code = {item["standard"]: item for item in suggestions}
    assert "6.2.a" in by_code and by_code["6.2.a"]["passage"]["page"] == 1
    assert "12.4" in by_code and by_code["12.4"]["passage"]["page"] == 2
    assert all(SUGGEST_THRESHOLD <= item["confidence"] <= 1 for item in suggestions)
    assert by_code["12.4"]["passage"]["text"].startswith("Student complaints")


def test_rejections_survive_remapping_and_new_revisions(api, make_person, make_workspace, tmp_path):
    liaison = make_person()
    college = make_workspace(liaison)
    select_catalog(api, liaison, college, "SACSCOC")
    document = upload(api, liaison, college, make_pdf(tmp_path / "v1.pdf", [COMPLAINTS])).json()
    wait_processed(api, liaison, college, document["id"])
    wait_mapped(api, liaison, college)
    items = api.get(f"{base(college)}/suggestions", headers=liaison.headers).json()["items"]
    rejected = next(item for item in items if item["standard"] == "12.4")
    api.post(f"{base(college)}/suggestions/{rejected['id']}/reject", json={"reason": "not our policy"},
             headers=liaison.headers)

    # Mapping the same revision again adds nothing, and brings nothing back.
    with api.app.state.database.session() as session:
        added = map_revision_now(session, uuid.UUID(document["current_revision"]["id"]))
        session.commit()
    assert sum(added.values()) == 0

    # A new revision with the same passage: still not proposed again.
    with open(make_pdf(tmp_path / "v2.pdf", [COMPLAINTS, "Appendix: forms."]), "rb") as handle:
        api.post(f"{base(college)}/documents/{document['id']}/revisions", files={"file": ("v2.pdf", handle)},
                 headers=liaison.headers)
    wait_processed(api, liaison, college, document["id"])
    wait_mapped(api, liaison, college)
    pending = api.get(f"{base(college)}/suggestions", params={"status": "pending", "standard": "12.4"},
                      headers=liaison.headers).json()
    assert pending["total"] == 0


def test_selecting_a_catalog_maps_the_documents_already_there(api, make_person, make_workspace, tmp_path):
    liaison = make_person()
    college = make_workspace(liaison)
    document = upload(api, liaison, college, make_pdf(tmp_path / "faculty.pdf", [FACULTY])).json()
    wait_processed(api, liaison, college, document["id"])
    assert api.get(f"{base(college)}/suggestions", headers=liaison.headers).json()["total"] == 0  # no catalog yet
    catalog = select_catalog(api, liaison, college, "SACSCOC")
    wait_mapped(api, liaison, college)
    found = api.get(f"{base(college)}/suggestions", params={"catalog": catalog["id"]}, headers=liaison.headers).json()
    assert "6.2.a" in {item["standard"] for item in found["items"]}
