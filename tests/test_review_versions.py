"""The workspace's review version and the matrices kept against it: every change the matrix and
the gaps are computed from bumps the version (reads and refused writes do not), a kept matrix is
reused until then and never after, a rolled-back change bumps nothing, and a second replica
sharing the database sees another's change at once."""

from __future__ import annotations

import logging
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from a3e.review.models import StandardStatus, Suggestion
from a3e.review.versions import review_changed
from a3e.workspaces.models import Workspace
from tests.conftest import wait_ready
from tests.test_evidence import wait_processed
from tests.test_review_links import base, processed_document, suggest
from tests.test_review_matrix import AS_OF, dated_document, link
from tests.test_standard_statuses import select_catalog, status_url


def version(api, workspace) -> int:
    with api.app.state.database.session() as session:
        return session.scalar(select(Workspace.review_version).where(Workspace.id == uuid.UUID(workspace["id"])))


def lights(api, person, workspace, catalog, **params) -> dict[str, str]:
    response = api.get(f"{base(workspace)}/gaps", params={"catalog": catalog["id"], "as_of": AS_OF, **params},
                       headers=person.headers)
    assert response.status_code == 200, response.text
    return {item["code"]: item["gap_status"] for item in response.json()["standards"]}


def lint_rules(api, person, workspace, catalog) -> set[tuple[str, str]]:
    body = api.get(f"{base(workspace)}/gaps", params={"catalog": catalog["id"], "as_of": AS_OF},
                   headers=person.headers).json()
    return {(problem["rule"], problem.get("standard") or problem.get("document_id")) for problem in body["lint"]}


def test_every_change_the_matrix_depends_on_bumps_the_version_and_reads_do_not(api, make_person, make_workspace, tmp_path):
    liaison = make_person()
    college = make_workspace(liaison)
    seen = [version(api, college)]
    assert seen == [0]
    catalog = select_catalog(api, liaison, college, "SACSCOC")

    def bumped(what: str) -> None:
        now = version(api, college)
        assert now > seen[-1], f"{what} did not bump the review version"
        seen.append(now)

    bumped("selecting a catalog")
    document, items = processed_document(api, liaison, college, tmp_path, ["The board reviews the budget."])
    bumped("uploading a document")

    # Reads change nothing.
    for path, params in (("gaps", {"catalog": catalog["id"]}), ("matrix", {"catalog": catalog["id"]}),
                         ("suggestions", {}), ("documents", {}), ("links", {}), ("mapping", {})):
        assert api.get(f"{base(college)}/{path}", params=params, headers=liaison.headers).status_code == 200
    assert version(api, college) == seen[-1]

    assert api.patch(f"{base(college)}/documents/{document['id']}", json={"review_date": "2026-01-31"},
                     headers=liaison.headers).status_code == 200
    bumped("changing a document's review date")
    accepted = suggest(api, college, catalog, "13.1", items[0], document, 0.8)
    bumped("a new suggestion")
    assert api.post(f"{base(college)}/suggestions/{accepted}/accept", headers=liaison.headers).status_code == 200
    bumped("accepting a suggestion")
    rejected = suggest(api, college, catalog, "4.2.a", items[0], document, 0.6)
    seen.append(version(api, college))
    assert api.post(f"{base(college)}/suggestions/{rejected}/reject", json={"reason": "not this one"},
                    headers=liaison.headers).status_code == 200
    bumped("rejecting a suggestion")
    manual = link(api, liaison, college, "6.1", document)
    bumped("linking by hand")
    assert api.delete(f"{base(college)}/links/{manual['id']}", headers=liaison.headers).status_code == 204
    bumped("removing a link")
    assert api.patch(status_url(college, "10.1"), json={"judgment": "compliant"}, headers=liaison.headers).status_code == 200
    bumped("judging a standard")

    # A refused change bumps nothing.
    assert api.patch(status_url(college, "10.1"), json={"judgment": "splendid"}, headers=liaison.headers).status_code == 422
    refused = api.post(f"{base(college)}/links", json={"standard": "99.99", "document_id": document["id"]},
                       headers=liaison.headers)
    assert refused.status_code in (404, 422), refused.text
    assert version(api, college) == seen[-1]

    assert api.post(f"{base(college)}/documents/{document['id']}/reprocess", headers=liaison.headers).status_code == 202
    bumped("reprocessing a document (its passages' links and suggestions go)")
    wait_processed(api, liaison, college, document["id"])
    seen.append(version(api, college))
    assert api.delete(f"{base(college)}/documents/{document['id']}", headers=liaison.headers).status_code == 204
    bumped("deleting a document")
    assert api.delete(f"{base(college)}/catalogs/{catalog['id']}", headers=liaison.headers).status_code == 204
    bumped("removing a catalog")


def test_a_kept_matrix_is_reused_until_something_changes_and_never_after(api, make_person, make_workspace, tmp_path):
    liaison = make_person()
    college = make_workspace(liaison)
    catalog = select_catalog(api, liaison, college, "SACSCOC")
    policy = dated_document(api, liaison, college, tmp_path, "credentials-policy", document_date="2025-09-01")

    first = lights(api, liaison, college, catalog)
    cache = api.app.state.matrix_cache
    hits, misses = cache.hits, cache.misses
    assert lights(api, liaison, college, catalog) == first
    assert api.get(f"{base(college)}/matrix", params={"catalog": catalog["id"], "as_of": AS_OF},
                   headers=liaison.headers).status_code == 200
    assert (cache.hits, cache.misses) == (hits + 2, misses), "unchanged: computed once, then reused"

    assert first["6.1"] == "red"
    link(api, liaison, college, "6.1", policy)
    assert lights(api, liaison, college, catalog)["6.1"] == "green"
    assert ("document_unlinked", policy["id"]) not in lint_rules(api, liaison, college, catalog)

    api.patch(f"{base(college)}/documents/{policy['id']}", json={"review_date": "2026-06-30"}, headers=liaison.headers)
    assert lights(api, liaison, college, catalog)["6.1"] == "amber"  # past its review date on AS_OF

    api.patch(status_url(college, "10.1"), json={"judgment": "compliant"}, headers=liaison.headers)
    assert ("compliant_without_evidence", "10.1") in lint_rules(api, liaison, college, catalog)

    # Another day, or other thresholds, is another matrix.
    assert lights(api, liaison, college, catalog, as_of="2026-01-01")["6.1"] == "green"

    api.delete(f"{base(college)}/documents/{policy['id']}", headers=liaison.headers)
    assert lights(api, liaison, college, catalog)["6.1"] == "red"


def test_a_rolled_back_change_bumps_nothing_and_a_bulk_change_must_say_whose(api, make_person, make_workspace, caplog):
    liaison = make_person()
    college = make_workspace(liaison)
    catalog = select_catalog(api, liaison, college, "HLC")
    before = version(api, college)
    with api.app.state.database.session() as session:
        session.add(StandardStatus(workspace_id=uuid.UUID(college["id"]), selection_id=uuid.UUID(catalog["id"]),
                                   standard_code="1.A", workflow="in_progress", judgment="not_assessed"))
        session.flush()
        session.rollback()
    assert version(api, college) == before

    caplog.set_level(logging.WARNING, logger="a3e.review")
    with api.app.state.database.session() as session:
        session.execute(delete(Suggestion).where(Suggestion.workspace_id == uuid.UUID(college["id"])))
        session.commit()
    assert "a bulk change to suggestions was committed without review_changed()" in caplog.text
    caplog.clear()
    with api.app.state.database.session() as session:
        session.execute(delete(Suggestion).where(Suggestion.workspace_id == uuid.UUID(college["id"])))
        review_changed(session, uuid.UUID(college["id"]))
        session.commit()
    assert "bulk change" not in caplog.text
    assert version(api, college) == before + 1


def test_a_second_replica_sees_a_change_made_through_the_first(api, make_person, make_workspace, tmp_path):
    from a3e.app import create_app

    liaison = make_person()
    college = make_workspace(liaison)
    catalog = select_catalog(api, liaison, college, "SACSCOC")
    document = dated_document(api, liaison, college, tmp_path, "faculty-handbook", document_date="2026-03-01")
    with TestClient(create_app(api.app.state.settings), raise_server_exceptions=False) as replica:
        wait_ready(replica)
        assert lights(replica, liaison, college, catalog)["6.1"] == "red"  # kept by the replica
        link(api, liaison, college, "6.1", document)  # changed through the first
        assert lights(replica, liaison, college, catalog)["6.1"] == "green"
