"""Each standard's status on two axes — workflow and judgment — set by the right roles, audited,
on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.test_workspaces_support import audit_events, create_key, join


def select_catalog(api, person, workspace, accreditor: str) -> dict:
    response = api.post(f"/api/v1/workspaces/{workspace['id']}/catalogs", json={"accreditor": accreditor},
                        headers=person.headers)
    assert response.status_code == 201, response.text
    return response.json()


def status_url(workspace, code: str) -> str:
    return f"/api/v1/workspaces/{workspace['id']}/standards/{code}/status"


def test_a_standard_starts_not_started_and_not_assessed_and_moves_along(api, make_person, make_workspace):
    liaison = make_person()
    college = make_workspace(liaison)
    catalog = select_catalog(api, liaison, college, "SACSCOC")
    fresh = api.get(status_url(college, "8.2.a"), headers=liaison.headers)
    assert fresh.status_code == 200, fresh.text
    body = fresh.json()
    assert (body["workflow"], body["judgment"], body["updated_at"]) == ("not_started", "not_assessed", None)
    assert body["catalog_id"] == catalog["id"] and body["title"]

    editor = make_person()
    join(api, liaison, college["id"], editor, "editor")
    moved = api.patch(status_url(college, "8.2.a"), json={"workflow": "in_progress", "note": "Collecting outcome reports"},
                      headers=editor.headers)
    assert moved.status_code == 200, moved.text
    assert moved.json()["workflow"] == "in_progress" and moved.json()["note"] == "Collecting outcome reports"
    assert moved.json()["updated_by_id"] == editor.id

    # Judging and approving are the liaison's (admins and owners), not an editor's.
    judged_by_editor = api.patch(status_url(college, "8.2.a"), json={"judgment": "compliant"}, headers=editor.headers)
    assert judged_by_editor.status_code == 403
    approved_by_editor = api.patch(status_url(college, "8.2.a"), json={"workflow": "approved"}, headers=editor.headers)
    assert approved_by_editor.status_code == 403
    review = api.patch(status_url(college, "8.2.a"), json={"workflow": "in_review"}, headers=editor.headers)
    assert review.status_code == 200
    final = api.patch(status_url(college, "8.2.a"), json={"workflow": "approved", "judgment": "partially_compliant"},
                      headers=liaison.headers)
    assert final.status_code == 200, final.text
    assert (final.json()["workflow"], final.json()["judgment"]) == ("approved", "partially_compliant")
    reopen_by_editor = api.patch(status_url(college, "8.2.a"), json={"workflow": "in_progress"}, headers=editor.headers)
    assert reopen_by_editor.status_code == 403  # approved work is reopened by the liaison

    listed = api.get(f"/api/v1/workspaces/{college['id']}/standards/statuses", params={"catalog": catalog["id"]},
                     headers=editor.headers).json()
    by_code = {item["code"]: item for item in listed}
    assert by_code["8.2.a"]["judgment"] == "partially_compliant"
    assert by_code["1.1"]["workflow"] == "not_started"
    assert len(listed) == catalog["standard_count"]

    events = audit_events(api, college["id"], "standard.status_changed")
    assert len(events) == 3
    assert events[-1].details["changes"] == {"workflow": {"from": "in_review", "to": "approved"},
                                             "judgment": {"from": "not_assessed", "to": "partially_compliant"}}
    # Sending the same values again changes nothing and records nothing.
    api.patch(status_url(college, "8.2.a"), json={"workflow": "approved"}, headers=liaison.headers)
    assert len(audit_events(api, college["id"], "standard.status_changed")) == 3


def test_bad_changes_are_4xx(api, make_person, make_workspace):
    liaison = make_person()
    college = make_workspace(liaison)
    assert api.patch(status_url(college, "8.2.a"), json={"workflow": "in_progress"},
                     headers=liaison.headers).status_code == 404  # no catalog selected yet
    select_catalog(api, liaison, college, "SACSCOC")
    assert api.patch(status_url(college, "99.9"), json={"workflow": "in_progress"}, headers=liaison.headers).status_code == 404
    assert api.patch(status_url(college, "8.2.a"), json={"workflow": "done"}, headers=liaison.headers).status_code == 422
    assert api.patch(status_url(college, "8.2.a"), json={"colour": "red"}, headers=liaison.headers).status_code == 422
    nothing = api.patch(status_url(college, "8.2.a"), json={}, headers=liaison.headers)
    assert nothing.status_code == 422 and nothing.json()["error"]["code"] == "nothing_to_change"


def test_a_code_shared_by_two_selected_catalogs_needs_the_catalog(api, make_person, make_workspace):
    liaison = make_person()
    college = make_workspace(liaison)
    hlc_2025 = api.post(f"/api/v1/workspaces/{college['id']}/catalogs", json={"accreditor": "HLC", "edition": "2025"},
                        headers=liaison.headers).json()
    api.post(f"/api/v1/workspaces/{college['id']}/catalogs", json={"accreditor": "HLC", "edition": "2020"},
             headers=liaison.headers)
    ambiguous = api.patch(status_url(college, "3.C"), json={"workflow": "in_progress"}, headers=liaison.headers)
    assert ambiguous.status_code == 409
    assert ambiguous.json()["error"]["code"] == "ambiguous_standard"
    chosen = api.patch(status_url(college, "3.C"), params={"catalog": hlc_2025["id"]}, json={"workflow": "in_progress"},
                       headers=liaison.headers)
    assert chosen.status_code == 200 and chosen.json()["catalog_id"] == hlc_2025["id"]


def test_viewers_and_keys_read_but_do_not_change(api, make_person, make_workspace):
    liaison = make_person()
    college = make_workspace(liaison)
    select_catalog(api, liaison, college, "NECHE")
    viewer = make_person()
    join(api, liaison, college["id"], viewer, "viewer")
    assert api.get(status_url(college, "1"), headers=viewer.headers).status_code == 200
    assert api.patch(status_url(college, "1"), json={"workflow": "in_progress"}, headers=viewer.headers).status_code == 403
    key = create_key(api, liaison, college["id"], scope="read_write")["key"]
    key_headers = {"Authorization": f"Bearer {key}"}
    assert api.get(status_url(college, "1"), headers=key_headers).status_code == 200
    assert api.patch(status_url(college, "1"), json={"workflow": "in_progress"}, headers=key_headers).status_code == 403
