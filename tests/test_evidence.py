"""The evidence library end to end: upload real files of every type, background extraction into
passages with locations, dedupe and revisions, download, metadata, delete — on SQLite and
PostgreSQL, with the embedded job queue of the service itself."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.documents import (
    make_docx,
    make_encrypted_pdf,
    make_pdf,
    make_scanned_pdf,
    make_xlsx,
    make_zip,
    prose,
)
from tests.test_workspaces_support import create_key, join

PDF_PAGES = [
    "Faculty qualifications are reviewed annually by the Provost. " + prose(6, seed=1),
    "The institution maintains a qualified faculty roster. " + prose(6, seed=2),
    "Library resources support every academic program. " + prose(6, seed=3),
]


def docs_path(workspace: dict) -> str:
    return f"/api/v1/workspaces/{workspace['id']}/documents"


def upload(api, person, workspace, path: Path, *, filename: str | None = None, headers=None, **fields):
    with open(path, "rb") as handle:
        return api.post(
            docs_path(workspace),
            files={"file": (filename or path.name, handle, "application/octet-stream")},
            data=fields,
            headers=headers or person.headers,
        )


def wait_processed(api, person, workspace, document_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"{docs_path(workspace)}/{document_id}", headers=person.headers).json()
        if body["status"] in ("ready", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"document {document_id} still {body['status']} after {timeout}s")


def passages(api, person, workspace, document_id: str, **params) -> dict:
    response = api.get(f"{docs_path(workspace)}/{document_id}/passages", params=params, headers=person.headers)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def alice(make_person):
    return make_person()


@pytest.fixture
def college(make_workspace, alice):
    return make_workspace(alice, "Example College")


def test_a_pdf_becomes_passages_with_their_pages(api, alice, college, tmp_path):
    pdf = make_pdf(tmp_path / "faculty-handbook.pdf", PDF_PAGES)
    response = upload(api, alice, college, pdf, title="Faculty Handbook", tags="Faculty, policies",
                      document_date="2025-08-01", review_date="2027-08-01", owner="Office of the Provost")
    assert response.status_code == 201, response.text
    document = response.json()
    assert document["title"] == "Faculty Handbook"
    assert document["tags"] == ["faculty", "policies"]
    assert document["document_date"] == "2025-08-01" and document["owner"] == "Office of the Provost"
    assert document["status"] in ("queued", "processing", "ready")
    assert document["duplicate"] is False
    revision = document["current_revision"]
    assert revision["number"] == 1 and revision["kind"] == "pdf" and revision["media_type"] == "application/pdf"
    assert revision["sha256"] == hashlib.sha256(pdf.read_bytes()).hexdigest()
    assert revision["size_bytes"] == pdf.stat().st_size

    done = wait_processed(api, alice, college, document["id"])
    assert done["status"] == "ready", done
    assert done["current_revision"]["page_count"] == 3
    page = passages(api, alice, college, document["id"])
    assert page["total"] == done["current_revision"]["passage_count"] >= 3
    pages = {item["page"] for item in page["items"]}
    assert pages == {1, 2, 3}
    first = page["items"][0]
    assert first["page"] == 1 and "Faculty qualifications are reviewed annually" in first["text"]
    assert first["char_start"] == 0 and first["char_end"] >= len(first["text"])
    assert [item["ordinal"] for item in page["items"]] == list(range(page["total"]))


@pytest.mark.parametrize(
    "name, make, expected_text, expected_heading",
    [
        ("plan.docx", lambda p: make_docx(p, [("h1", "Strategic Plan"), ("h2", "Assessment"),
                                               ("p", "Each program assesses student learning outcomes every year.")]),
         "assesses student learning outcomes", "Strategic Plan > Assessment"),
        ("budget.xlsx", lambda p: make_xlsx(p, {"Budget": [["Line", "Amount"], ["Library acquisitions", 120000]]}),
         "Library acquisitions", None),
        ("enrollment.csv", lambda p: p.write_text("term,headcount\nFall 2025,4120\nSpring 2026,3987\n"),
         "Fall 2025", None),
        ("minutes.txt", lambda p: p.write_text("Board of Trustees minutes.\n\nThe board approved the budget.\n"),
         "The board approved the budget.", None),
        ("policy.md", lambda p: p.write_text("# Academic Integrity\n\nStudents must do their own work.\n"),
         "Students must do their own work.", "Academic Integrity"),
        ("catalog.html", lambda p: p.write_text(
            "<html><body><h1>Catalog</h1><p>Degree requirements are published each year.</p>"
            "<script>alert(1)</script></body></html>"),
         "Degree requirements are published each year.", "Catalog"),
    ],
)
def test_every_supported_type_is_extracted(api, alice, college, tmp_path, name, make, expected_text, expected_heading):
    path = tmp_path / name
    make(path)
    response = upload(api, alice, college, path)
    assert response.status_code == 201, response.text
    done = wait_processed(api, alice, college, response.json()["id"])
    assert done["status"] == "ready", done
    items = passages(api, alice, college, done["id"])["items"]
    texts = "\n".join(item["text"] for item in items)
    assert expected_text in texts
    assert "alert(1)" not in texts
    if expected_heading:
        assert any(item["heading"] == expected_heading for item in items), items


def test_a_file_whose_name_lies_about_its_type_is_refused(api, alice, college, tmp_path):
    docx = make_docx(tmp_path / "real.docx", [("p", "Hello")])
    response = upload(api, alice, college, docx, filename="report.pdf")
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_file"
    assert ".pdf" in error["message"] and "Word" in error["message"]
    assert error["request_id"]
    exe = tmp_path / "setup.exe"
    exe.write_bytes(b"MZ\x90\x00" + b"\x00" * 200)
    assert upload(api, alice, college, exe).status_code == 415
    assert api.get(docs_path(college), headers=alice.headers).json()["total"] == 0


def test_an_upload_over_the_limit_is_413(make_settings, database_url, tmp_path):
    from fastapi.testclient import TestClient

    from a3e.app import create_app
    from tests.conftest import CHEAP_ARGON2, wait_ready

    app = create_app(make_settings(database_url=database_url, max_upload_mb=1, **CHEAP_ARGON2))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        client.post("/api/v1/auth/register", json={"email": "a@example.edu", "password": "correct horse battery", "name": "A"})
        token = client.post("/api/v1/auth/login", json={"email": "a@example.edu", "password": "correct horse battery"}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        workspace = client.post("/api/v1/workspaces", json={"name": "W"}, headers=headers).json()
        big = tmp_path / "big.txt"
        big.write_text("accreditation evidence\n" * 100_000)  # 2.3 MB
        with open(big, "rb") as handle:
            response = client.post(docs_path(workspace), files={"file": ("big.txt", handle)}, headers=headers)
        assert response.status_code == 413, response.text
        assert client.get(docs_path(workspace), headers=headers).json()["total"] == 0


def test_the_same_content_twice_is_one_document_and_a_changed_file_is_a_new_revision(api, alice, college, tmp_path):
    first = make_pdf(tmp_path / "plan.pdf", ["Version one of the plan."])
    created = upload(api, alice, college, first)
    assert created.status_code == 201
    again = upload(api, alice, college, first, filename="copy-of-plan.pdf", title="Another title")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == created.json()["id"] and again.json()["duplicate"] is True
    assert again.json()["title"] == created.json()["title"]

    document_id = created.json()["id"]
    second = make_pdf(tmp_path / "plan-v2.pdf", ["Version two of the plan, with a new assessment cycle."])
    with open(second, "rb") as handle:
        revised = api.post(f"{docs_path(college)}/{document_id}/revisions", files={"file": ("plan-v2.pdf", handle)},
                           headers=alice.headers)
    assert revised.status_code == 201, revised.text
    assert revised.json()["revision_count"] == 2
    assert revised.json()["current_revision"]["number"] == 2
    with open(second, "rb") as handle:
        same = api.post(f"{docs_path(college)}/{document_id}/revisions", files={"file": ("plan-v2.pdf", handle)},
                        headers=alice.headers)
    assert same.status_code == 200 and same.json()["duplicate"] is True and same.json()["revision_count"] == 2

    done = wait_processed(api, alice, college, document_id)
    detail = api.get(f"{docs_path(college)}/{document_id}", headers=alice.headers).json()
    assert [revision["number"] for revision in detail["revisions"]] == [2, 1]
    current = passages(api, alice, college, document_id)["items"]
    assert "Version two" in current[0]["text"]
    old_revision = detail["revisions"][1]
    wait_until(lambda: revision_status(api, alice, college, document_id, old_revision["id"]) == "ready")
    older = passages(api, alice, college, document_id, revision_id=old_revision["id"])["items"]
    assert "Version one" in older[0]["text"]
    assert done["status"] == "ready"

    # Each revision's original is kept and downloadable, byte for byte.
    original = api.get(f"{docs_path(college)}/{document_id}/revisions/{old_revision['id']}/download", headers=alice.headers)
    assert original.status_code == 200 and original.content == first.read_bytes()
    latest = api.get(f"{docs_path(college)}/{document_id}/download", headers=alice.headers)
    assert latest.content == second.read_bytes()
    assert latest.headers["content-type"] == "application/pdf"
    assert 'filename="plan-v2.pdf"' in latest.headers["content-disposition"]
    assert latest.headers["x-content-type-options"] == "nosniff"


def revision_status(api, person, workspace, document_id, revision_id) -> str:
    detail = api.get(f"{docs_path(workspace)}/{document_id}", headers=person.headers).json()
    return next(revision["status"] for revision in detail["revisions"] if revision["id"] == revision_id)


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_a_scanned_pdf_is_ready_with_no_passages_and_says_why(api, alice, college, tmp_path):
    scanned = make_scanned_pdf(tmp_path / "scan.pdf", ["This page is only an image."])
    document = upload(api, alice, college, scanned).json()
    done = wait_processed(api, alice, college, document["id"])
    assert done["status"] == "ready"
    assert done["status_detail"] == "no text found — scanned document?"
    assert done["current_revision"]["passage_count"] == 0


def test_an_unreadable_document_fails_with_its_reason_and_others_still_process(api, alice, college, tmp_path):
    locked = make_encrypted_pdf(tmp_path / "locked.pdf", ["Confidential personnel file."])
    bad = upload(api, alice, college, locked).json()
    good = upload(api, alice, college, make_pdf(tmp_path / "ok.pdf", ["An ordinary report."])).json()
    failed = wait_processed(api, alice, college, bad["id"])
    assert failed["status"] == "failed"
    assert "encrypted" in failed["status_detail"].lower()
    assert wait_processed(api, alice, college, good["id"])["status"] == "ready"
    # Listing by state shows the failure to fix.
    listed = api.get(docs_path(college), params={"status": "failed"}, headers=alice.headers).json()
    assert [item["id"] for item in listed["items"]] == [bad["id"]]
    # Reprocessing a failed document is allowed (and fails again the same way here).
    again = api.post(f"{docs_path(college)}/{bad['id']}/reprocess", headers=alice.headers)
    assert again.status_code == 202 and again.json()["status"] == "queued"
    assert wait_processed(api, alice, college, bad["id"])["status"] == "failed"


def test_metadata_is_validated_and_can_be_changed(api, alice, college, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("Meeting notes.")
    bad_date = upload(api, alice, college, path, document_date="last spring")
    assert bad_date.status_code == 422 and "document_date" in bad_date.json()["error"]["message"]
    unknown = upload(api, alice, college, path, colour="blue")
    assert unknown.status_code == 422
    document = upload(api, alice, college, path).json()
    assert document["title"] == "notes"
    changed = api.patch(f"{docs_path(college)}/{document['id']}", json={"title": "Senate minutes", "tags": ["Governance"]},
                        headers=alice.headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["title"] == "Senate minutes" and changed.json()["tags"] == ["governance"]
    assert api.patch(f"{docs_path(college)}/{document['id']}", json={"title": ""}, headers=alice.headers).status_code == 422
    assert api.patch(f"{docs_path(college)}/{document['id']}", json={"pages": 3}, headers=alice.headers).status_code == 422
    by_tag = api.get(docs_path(college), params={"tag": "governance"}, headers=alice.headers).json()
    assert [item["id"] for item in by_tag["items"]] == [document["id"]]
    events = api.get(f"/api/v1/workspaces/{college['id']}/audit-log", headers=alice.headers).json()["items"]
    assert {"document.uploaded", "document.updated"} <= {event["action"] for event in events}


def test_roles_and_keys(api, alice, college, make_person, tmp_path):
    path = tmp_path / "report.txt"
    path.write_text("Annual report.")
    viewer = make_person()
    join(api, alice, college["id"], viewer, "viewer")
    refused = upload(api, viewer, college, path)
    assert refused.status_code == 403
    document = upload(api, alice, college, path).json()
    assert api.get(f"{docs_path(college)}/{document['id']}", headers=viewer.headers).status_code == 200
    assert api.delete(f"{docs_path(college)}/{document['id']}", headers=viewer.headers).status_code == 403
    read_key = create_key(api, alice, college["id"], scope="read")["key"]
    key_headers = {"Authorization": f"Bearer {read_key}"}
    assert api.get(docs_path(college), headers=key_headers).json()["total"] == 1
    other = tmp_path / "other.txt"
    other.write_text("Something else.")
    with open(other, "rb") as handle:
        assert api.post(docs_path(college), files={"file": ("other.txt", handle)}, headers=key_headers).status_code == 403
    write_key = create_key(api, alice, college["id"], scope="read_write")["key"]
    with open(other, "rb") as handle:
        assert api.post(docs_path(college), files={"file": ("other.txt", handle)},
                        headers={"Authorization": f"Bearer {write_key}"}).status_code == 201


def test_deleting_a_document_removes_it_and_its_file_once_nothing_else_uses_it(api, alice, college, make_person,
                                                                                make_workspace, tmp_path):
    pdf = make_pdf(tmp_path / "shared.pdf", ["Shared evidence."])
    mine = upload(api, alice, college, pdf).json()
    bob = make_person()
    elsewhere = make_workspace(bob, "Other College")
    theirs = upload(api, bob, elsewhere, pdf).json()
    assert theirs["duplicate"] is False  # dedupe is per workspace
    sha256 = mine["current_revision"]["sha256"]
    store = api.app.state.blob_store
    assert store.exists(sha256)

    assert api.delete(f"{docs_path(college)}/{mine['id']}", headers=alice.headers).status_code == 204
    assert api.get(f"{docs_path(college)}/{mine['id']}", headers=alice.headers).status_code == 404
    time.sleep(1.0)
    assert store.exists(sha256)  # the other workspace still has it
    assert api.get(f"{docs_path(elsewhere)}/{theirs['id']}/download", headers=bob.headers).content == pdf.read_bytes()

    assert api.delete(f"{docs_path(elsewhere)}/{theirs['id']}", headers=bob.headers).status_code == 204
    wait_until(lambda: not store.exists(sha256))
    events = api.get(f"/api/v1/workspaces/{college['id']}/audit-log", headers=alice.headers).json()["items"]
    assert "document.deleted" in {event["action"] for event in events}


def test_a_zip_of_documents_adds_each_and_says_what_it_skipped(api, alice, college, tmp_path):
    pdf = make_pdf(tmp_path / "a.pdf", ["Assessment report."])
    docx = make_docx(tmp_path / "b.docx", [("p", "Program review.")])
    archive = make_zip(tmp_path / "evidence.zip", [
        ("2025/assessment.pdf", pdf.read_bytes()),
        ("2025/review.docx", docx.read_bytes()),
        ("2025/photo.exe", b"MZ" + b"\x00" * 100),
        ("inner.zip", make_zip(tmp_path / "inner.zip", [("x.txt", b"x")]).read_bytes()),
        ("__MACOSX/._assessment.pdf", b"junk"),
    ])
    with open(archive, "rb") as handle:
        response = api.post(f"{docs_path(college)}/bulk", files={"file": ("evidence.zip", handle)},
                            data={"tags": "2025"}, headers=alice.headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert sorted(document["current_revision"]["filename"] for document in body["documents"]) == [
        "assessment.pdf", "review.docx"]
    assert all(document["tags"] == ["2025"] for document in body["documents"])
    skipped = {item["name"] for item in body["skipped"]}
    assert {"2025/photo.exe", "inner.zip"} <= skipped
    for document in body["documents"]:
        assert wait_processed(api, alice, college, document["id"])["status"] == "ready"
    with open(pdf, "rb") as handle:  # not a ZIP
        assert api.post(f"{docs_path(college)}/bulk", files={"file": ("a.pdf", handle)}, headers=alice.headers).status_code == 415
    with open(archive, "rb") as handle:  # a ZIP on the single-document route says where to go
        wrong = api.post(docs_path(college), files={"file": ("evidence.zip", handle)}, headers=alice.headers)
    assert wrong.status_code == 415 and "bulk" in wrong.json()["error"]["message"]


def test_a_stalled_revision_is_resumed_and_one_tried_too_often_fails(api, alice, college, tmp_path):
    from datetime import timedelta

    from a3e.core.models import utcnow
    from a3e.evidence import jobs as evidence_jobs
    from a3e.evidence.models import Revision
    from a3e.jobs import JobContext

    path = tmp_path / "stuck.txt"
    path.write_text("A document whose worker died.")
    document = upload(api, alice, college, path).json()
    wait_processed(api, alice, college, document["id"])
    database = api.app.state.database
    with database.session() as session:
        revision = session.get(Revision, __import__("uuid").UUID(document["current_revision"]["id"]))
        revision.status = "processing"
        revision.status_changed_at = utcnow() - timedelta(hours=1)
        revision.attempts = 1
        session.execute(__import__("sqlalchemy").delete(__import__("a3e.evidence.models", fromlist=["Passage"]).Passage))
        session.commit()
    runtime = api.app.state.jobs
    context = JobContext(api.app.state.settings, database, "evidence.resume_stalled", "test", runtime=runtime)
    assert evidence_jobs.resume_stalled(context)["requeued"] == 1
    assert wait_processed(api, alice, college, document["id"])["status"] == "ready"
    assert passages(api, alice, college, document["id"])["total"] == 1

    with database.session() as session:
        revision = session.get(Revision, __import__("uuid").UUID(document["current_revision"]["id"]))
        revision.status = "processing"
        revision.status_changed_at = utcnow() - timedelta(hours=1)
        revision.attempts = evidence_jobs.MAX_PROCESSING_ATTEMPTS
        session.commit()
    assert evidence_jobs.resume_stalled(context)["failed"] == 1
    failed = api.get(f"{docs_path(college)}/{document['id']}", headers=alice.headers).json()
    assert failed["status"] == "failed" and "did not finish" in failed["status_detail"]


def test_an_uploaded_document_is_found_by_search_once_processed(api, alice, college, tmp_path):
    pdf = make_pdf(tmp_path / "qep.pdf", ["Our Quality Enhancement Plan improves writing across the curriculum.",
                                          "Budget tables follow."])
    document = upload(api, alice, college, pdf, tags="qep").json()
    wait_processed(api, alice, college, document["id"])
    found = api.get(f"/api/v1/workspaces/{college['id']}/search", params={"q": "enhancement writing"},
                    headers=alice.headers)
    assert found.status_code == 200, found.text
    hits = found.json()["items"]
    assert [hit["document_id"] for hit in hits] == [document["id"]]
    assert hits[0]["page"] == 1 and "<mark>" in hits[0]["snippet"]
