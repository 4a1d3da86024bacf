"""The matrix and the gaps, computed from the workspace's data: every traffic-light case, every
readiness rule, counts, filters, the passages behind a cell, and the exports."""

from __future__ import annotations

import csv
import io
from datetime import date

from openpyxl import load_workbook

from tests.test_evidence import upload, wait_processed
from tests.test_review_links import base, processed_document, suggest, without_engine_suggestions
from tests.test_standard_statuses import select_catalog, status_url

AS_OF = "2026-11-01"


def link(api, person, workspace, code: str, document: dict, passage_id: int | None = None):
    response = api.post(f"{base(workspace)}/links", json={"standard": code, "document_id": document["id"],
                                                          "passage_id": passage_id}, headers=person.headers)
    assert response.status_code == 201, response.text
    return response.json()


def dated_document(api, person, workspace, tmp_path, name: str, **dates) -> dict:
    path = tmp_path / f"{name}.txt"
    path.write_text(f"{name}: evidence for the review.")
    document = upload(api, person, workspace, path, **dates).json()
    done = wait_processed(api, person, workspace, document["id"])
    without_engine_suggestions(api, person, workspace, done)
    return done


def test_traffic_lights_and_readiness_rules(api, make_person, make_workspace, tmp_path):
    liaison = make_person()
    college = make_workspace(liaison)
    catalog = select_catalog(api, liaison, college, "SACSCOC")
    current = dated_document(api, liaison, college, tmp_path, "current-policy", document_date="2025-09-01",
                             review_date="2028-09-01")
    expired = dated_document(api, liaison, college, tmp_path, "expired-policy", document_date="2024-01-01",
                             review_date="2026-06-30")
    ancient = dated_document(api, liaison, college, tmp_path, "ancient-report", document_date="2015-05-01")
    unlinked = dated_document(api, liaison, college, tmp_path, "orphan-minutes", document_date="2026-02-01")
    scored, items = processed_document(api, liaison, college, tmp_path, ["Faculty credentials are verified."])

    link(api, liaison, college, "6.1", current)                      # green
    link(api, liaison, college, "6.2.a", expired)                    # amber: past its review date
    link(api, liaison, college, "8.1", ancient)                      # amber: older than 5 years
    weak = suggest(api, college, catalog, "6.2.b", items[0], scored, 0.3)
    assert api.post(f"{base(college)}/suggestions/{weak}/accept", headers=liaison.headers).status_code == 200  # amber: weak
    suggest(api, college, catalog, "6.3", items[0], scored, 0.9)     # amber: only a pending suggestion
    api.patch(status_url(college, "10.1"), json={"judgment": "compliant"}, headers=liaison.headers)  # red, judged compliant

    gaps = api.get(f"{base(college)}/gaps", params={"catalog": catalog["id"], "as_of": AS_OF}, headers=liaison.headers)
    assert gaps.status_code == 200, gaps.text
    body = gaps.json()
    lights = {item["code"]: item for item in body["standards"]}
    assert lights["6.1"]["gap_status"] == "green" and lights["6.1"]["reasons"] == []
    assert lights["6.2.a"]["gap_status"] == "amber" and "evidence past its review date" in lights["6.2.a"]["reasons"]
    assert lights["8.1"]["gap_status"] == "amber" and "all evidence is older than 5 years" in lights["8.1"]["reasons"]
    assert lights["6.2.b"]["gap_status"] == "amber" and lights["6.2.b"]["reasons"] == ["only low-confidence links (below 0.5)"]
    assert lights["6.3"]["gap_status"] == "amber" and lights["6.3"]["reasons"] == ["only pending suggestions"]
    assert lights["10.1"]["gap_status"] == "red" and lights["10.1"]["reasons"] == ["no evidence"]

    rules = {(problem["rule"], problem.get("standard") or problem.get("document_id")) for problem in body["lint"]}
    assert ("compliant_without_evidence", "10.1") in rules
    assert ("stale_evidence", "8.1") in rules
    assert ("evidence_expired", expired["id"]) in rules
    assert ("document_unlinked", unlinked["id"]) in rules
    assert ("document_unlinked", current["id"]) not in rules

    counts = body["counts"]
    assert counts["catalog"]["green"] == 1 and counts["catalog"]["amber"] == 4
    assert counts["catalog"]["standards"] == catalog["standard_count"]
    assert counts["catalog"]["red"] == catalog["standard_count"] - 5
    section_6 = counts["sections"]["6"]
    assert section_6["green"] == 1 and section_6["amber"] == 3

    # With a later review date, the current policy is no longer current either.
    later = api.get(f"{base(college)}/gaps", params={"catalog": catalog["id"], "as_of": "2029-01-01"},
                    headers=liaison.headers).json()
    assert {item["code"]: item["gap_status"] for item in later["standards"]}["6.1"] == "amber"


def test_the_matrix_filters_pages_and_shows_the_passages_behind_a_cell(api, make_person, make_workspace, tmp_path):
    liaison = make_person()
    college = make_workspace(liaison)
    catalog = select_catalog(api, liaison, college, "SACSCOC")
    document, items = processed_document(api, liaison, college, tmp_path, ["The board approves the budget annually."])
    link(api, liaison, college, "13.1", document, items[0]["id"])
    suggest(api, college, catalog, "13.1", items[0], document, 0.77)
    suggest(api, college, catalog, "4.2.a", items[0], document, 0.64)

    url = f"{base(college)}/matrix"
    everything = api.get(url, params={"catalog": catalog["id"], "limit": 200}, headers=liaison.headers).json()
    assert everything["total"] == catalog["standard_count"]
    row = next(item for item in everything["items"] if item["code"] == "13.1")
    assert (row["accepted_links"], row["documents"], row["pending_suggestions"], row["gap_status"]) == (1, 1, 1, "green")
    pending = api.get(url, params={"catalog": catalog["id"], "has_pending": True}, headers=liaison.headers).json()
    assert sorted(item["code"] for item in pending["items"]) == ["13.1", "4.2.a"]
    green = api.get(url, params={"catalog": catalog["id"], "gap": "green"}, headers=liaison.headers).json()
    assert [item["code"] for item in green["items"]] == ["13.1"]
    section = api.get(url, params={"catalog": catalog["id"], "section": "13", "limit": 2, "offset": 1},
                      headers=liaison.headers).json()
    assert section["limit"] == 2 and len(section["items"]) <= 2 and all(i["section"] == "13" for i in section["items"])

    evidence = api.get(f"{url}/13.1/evidence", params={"catalog": catalog["id"]}, headers=liaison.headers).json()
    assert evidence["links"][0]["passage"]["text"].startswith("The board approves")
    assert evidence["links"][0]["origin"] == "manual"
    assert evidence["pending_suggestions"][0]["confidence"] == 0.77
    assert api.get(f"{url}/99.9/evidence", params={"catalog": catalog["id"]}, headers=liaison.headers).status_code == 404


def test_the_matrix_exports_as_csv_and_xlsx(api, make_person, make_workspace, tmp_path):
    liaison = make_person()
    college = make_workspace(liaison)
    catalog = select_catalog(api, liaison, college, "NECHE")
    document = dated_document(api, liaison, college, tmp_path, "board-minutes", document_date=date.today().isoformat())
    link(api, liaison, college, "1", document)
    exported = api.get(f"{base(college)}/matrix/export", params={"catalog": catalog["id"], "format": "csv"},
                       headers=liaison.headers)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == catalog["standard_count"]
    first = next(row for row in rows if row["code"] == "1")
    assert first["gap_status"] == "green" and first["accepted_links"] == "1"

    xlsx = api.get(f"{base(college)}/matrix/export", params={"catalog": catalog["id"], "format": "xlsx"},
                   headers=liaison.headers)
    assert xlsx.status_code == 200
    sheet = load_workbook(io.BytesIO(xlsx.content), read_only=True)["Matrix"]
    values = list(sheet.values)
    assert values[0][0] == "code" and len(values) == catalog["standard_count"] + 1
    assert api.get(f"{base(college)}/matrix/export", params={"catalog": catalog["id"], "format": "pdf"},
                   headers=liaison.headers).status_code == 422
