"""Background writers and a document's deletion take their locks in the same order (the document's
row first), so a delete that arrives while a job writes under the document waits for it instead of
deadlocking (PostgreSQL; SQLite locks the whole database)."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import insert, select

from a3e.evidence.models import Passage, Revision
from a3e.evidence.service import hold_document
from tests.test_evidence import docs_path, upload, wait_processed


def test_a_delete_during_a_jobs_write_waits_for_it_instead_of_deadlocking(api, make_person, make_workspace, tmp_path):
    if api.app.state.database.engine.dialect.name != "postgresql":
        pytest.skip("row locks: PostgreSQL only")
    owner = make_person()
    college = make_workspace(owner)
    path = tmp_path / "policy.txt"
    path.write_text("Board policy on program review.")
    document = upload(api, owner, college, path).json()
    wait_processed(api, owner, college, document["id"])
    document_id, revision_id = uuid.UUID(document["id"]), uuid.UUID(document["current_revision"]["id"])

    locked, delete_sent, outcome = threading.Event(), threading.Event(), {}

    def job_like_writer() -> None:
        """What the processing and mapping jobs do: the document, then the revision, then inserts."""
        with api.app.state.database.session() as session:
            assert hold_document(session, document_id)
            revision = session.scalar(select(Revision).where(Revision.id == revision_id).with_for_update())
            locked.set()
            delete_sent.wait(10)
            threading.Event().wait(0.5)  # the delete is now waiting on the document's row
            session.execute(insert(Passage), [{
                "revision_id": revision.id, "document_id": document_id, "workspace_id": revision.workspace_id,
                "ordinal": 99, "text": "Written by the job.", "char_start": 0, "char_end": 19,
            }])
            session.commit()
            outcome["writer"] = "committed"

    writer = threading.Thread(target=job_like_writer)
    writer.start()
    assert locked.wait(10)

    def delete() -> None:
        outcome["delete"] = api.delete(f"{docs_path(college)}/{document['id']}", headers=owner.headers).status_code

    deleter = threading.Thread(target=delete)
    deleter.start()
    delete_sent.set()
    writer.join(20)
    deleter.join(20)
    assert outcome == {"writer": "committed", "delete": 204}  # no deadlock, no 503
    with api.app.state.database.session() as session:
        assert not hold_document(session, document_id)  # gone, with what the job wrote under it
        assert session.scalar(select(Passage.id).where(Passage.document_id == document_id)) is None
