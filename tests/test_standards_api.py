"""The catalog endpoints, on SQLite and PostgreSQL: the public accreditor catalogs, and a
workspace's selection of built-in and custom catalogs (roles, tenants, audit)."""

from __future__ import annotations

import json
import time

from a3e.standards.validator import MAX_ITEMS
from tests.test_workspaces_support import audit_events, bearer, create_key, error_of, join

ABET_CSV = (
    b"id,parent,title,text\n"
    b"C1,,Students,Student performance is evaluated and advised\n"
    b"C1.1,C1,Evaluation,\n"
    b"C2,,Program Educational Objectives,\"Published, consistent with the mission\"\n"
    b"C3,,Student Outcomes,\n"
    b"C3.1,C3,Problem solving,\n"
    b"C3.2,C3,Design,\n"
)


def catalogs_url(workspace: dict) -> str:
    return f"/api/v1/workspaces/{workspace['id']}/catalogs"


def upload(api, person, workspace, data: bytes, filename: str = "abet.csv", **fields):
    return api.post(
        catalogs_url(workspace),
        files={"file": (filename, data, "application/octet-stream")},
        data=fields,
        headers=person.headers,
    )


def flatten(nodes: list[dict]) -> list[dict]:
    out: list[dict] = []
    for node in nodes:
        out.append(node)
        out.extend(flatten(node["children"]))
    return out


# ---------------------------------------------------------------------------------------------
# The built-in catalogs, public.


def test_accreditors_are_listed_without_login(api):
    response = api.get("/api/v1/accreditors")
    assert response.status_code == 200, response.text
    body = response.json()
    assert [a["code"] for a in body["items"]] == ["SACSCOC", "HLC", "MSCHE", "NECHE", "NWCCU", "WSCUC"]
    assert body["total"] == 6
    sacscoc = body["items"][0]
    assert sacscoc["name"] == "Southern Association of Colleges and Schools Commission on Colleges"
    assert sacscoc["default_edition"] == "2018" and sacscoc["standard_count"] > 90
    assert [e["edition"] for e in body["items"][1]["editions"]] == ["2020", "2025"]
    for accreditor in body["items"]:
        assert accreditor["standard_count"] == next(e for e in accreditor["editions"] if e["default"])["standard_count"]
    etag = response.headers["etag"]
    again = api.get("/api/v1/accreditors", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag


def test_an_accreditors_standards_tree(api):
    response = api.get("/api/v1/accreditors/SACSCOC/standards")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accreditor"] == {"code": "SACSCOC", "name": "Southern Association of Colleges and Schools Commission on Colleges"}
    assert body["edition"]["edition"] == "2018"
    assert [node["code"] for node in body["items"]] == [str(n) for n in range(1, 15)]
    nodes = {node["code"]: node for node in flatten(body["items"])}
    assert len(nodes) == body["standard_count"]
    part = nodes["8.2.a"]
    assert part["parent"] == "8.2" and part["children"] == [] and part["edition"] == "2018"
    assert part["title"] == "Student outcomes: educational programs"
    assert part["description"] and part["typical_evidence"]
    assert [c["code"] for c in nodes["8.2"]["children"]] == ["8.2.a", "8.2.b", "8.2.c"]

    assert api.get("/api/v1/accreditors/sacscoc/standards").json() == body  # codes are not case-sensitive
    cached = api.get("/api/v1/accreditors/SACSCOC/standards", headers={"If-None-Match": response.headers["etag"]})
    assert cached.status_code == 304

    hlc = api.get("/api/v1/accreditors/HLC/standards", params={"edition": "2020"}).json()
    assert [n["code"] for n in hlc["items"]] == ["1", "2", "3", "4", "5"]
    assert "3.C" in {n["code"] for n in flatten(hlc["items"])}
    assert api.get("/api/v1/accreditors/HLC/standards").json()["edition"]["edition"] == "2025"
    assert api.get("/api/v1/accreditors/HLC").json()["default_edition"] == "2025"


def test_unknown_accreditor_or_edition_is_a_404_envelope(api):
    response = api.get("/api/v1/accreditors/ABCD/standards")
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "not_found" and "ABCD" in error["message"] and error["request_id"]
    response = api.get("/api/v1/accreditors/HLC/standards", params={"edition": "1999"})
    assert response.status_code == 404
    assert error_of(response)["details"]["editions"] == ["2020", "2025"]
    assert api.get("/api/v1/accreditors/NOPE").status_code == 404


# ---------------------------------------------------------------------------------------------
# A workspace's catalogs.


def test_select_list_read_and_deselect_a_builtin_catalog(api, make_person, make_workspace):
    owner = make_person()
    workspace = make_workspace(owner)
    url = catalogs_url(workspace)
    assert api.get(url, headers=owner.headers).json()["items"] == []

    response = api.post(url, json={"accreditor": "SACSCOC"}, headers=owner.headers)
    assert response.status_code == 201, response.text
    selected = response.json()
    assert selected["kind"] == "builtin" and selected["accreditor"] == "SACSCOC" and selected["edition"] == "2018"
    assert selected["selected_by_id"] == owner.id and selected["standard_count"] > 90

    again = api.post(url, json={"accreditor": "sacscoc", "edition": "2018"}, headers=owner.headers)
    assert again.status_code == 200 and again.json()["id"] == selected["id"]
    hlc = api.post(url, json={"accreditor": "HLC", "edition": "2020"}, headers=owner.headers)
    assert hlc.status_code == 201 and hlc.json()["edition"] == "2020"

    listing = api.get(url, headers=owner.headers).json()
    assert [c["accreditor"] for c in listing["items"]] == ["SACSCOC", "HLC"] and listing["total"] == 2
    assert api.get(f"{url}/{selected['id']}", headers=owner.headers).json() == selected

    tree = api.get(f"{url}/{selected['id']}/standards", headers=owner.headers)
    assert tree.status_code == 200, tree.text
    body = tree.json()
    assert body["catalog"]["id"] == selected["id"]
    assert body["items"] == api.get("/api/v1/accreditors/SACSCOC/standards").json()["items"]

    assert api.delete(f"{url}/{selected['id']}", headers=owner.headers).status_code == 204
    assert [c["accreditor"] for c in api.get(url, headers=owner.headers).json()["items"]] == ["HLC"]
    gone = api.get(f"{url}/{selected['id']}/standards", headers=owner.headers)
    assert gone.status_code == 404 and error_of(gone)["message"] == "Catalog not found in this workspace"
    assert api.delete(f"{url}/{selected['id']}", headers=owner.headers).status_code == 404

    selections = audit_events(api, workspace["id"], "catalog.selected")
    assert [e.details for e in selections] == [
        {"kind": "builtin", "accreditor": "SACSCOC", "edition": "2018"},
        {"kind": "builtin", "accreditor": "HLC", "edition": "2020"},
    ]  # selecting again changed nothing and recorded nothing
    assert selections[0].actor_user_id is not None and str(selections[0].actor_user_id) == owner.id
    removed = audit_events(api, workspace["id"], "catalog.removed")
    assert len(removed) == 1 and removed[0].target_id == selected["id"]
    assert removed[0].details == {"kind": "builtin", "accreditor": "SACSCOC", "edition": "2018"}


def test_selecting_an_unknown_accreditor_or_a_bad_body(api, make_person, make_workspace):
    owner = make_person()
    workspace = make_workspace(owner)
    url = catalogs_url(workspace)
    unknown = api.post(url, json={"accreditor": "ABCD"}, headers=owner.headers)
    assert unknown.status_code == 404 and "ABCD" in error_of(unknown)["message"]
    assert api.post(url, json={"accreditor": "HLC", "edition": "1999"}, headers=owner.headers).status_code == 404
    for body in ({}, {"accreditor": "HLC", "surprise": 1}, {"accreditor": ""}, [1, 2]):
        response = api.post(url, json=body, headers=owner.headers)
        assert response.status_code == 422, (body, response.text)
        assert error_of(response)["code"] == "validation_error"
    not_json = api.post(url, content=b"{oops", headers={**owner.headers, "Content-Type": "application/json"})
    assert not_json.status_code == 422
    wrong_type = api.post(url, content=b"x", headers={**owner.headers, "Content-Type": "text/plain"})
    assert wrong_type.status_code == 415 and error_of(wrong_type)["code"] == "unsupported_media_type"
    assert audit_events(api, workspace["id"], "catalog.selected") == []


def test_import_a_custom_csv_catalog(api, make_person, make_workspace):
    owner = make_person()
    workspace = make_workspace(owner)
    response = upload(api, owner, workspace, ABET_CSV, name="ABET EAC", version="2025-2026")
    assert response.status_code == 201, response.text
    catalog = response.json()
    assert catalog["kind"] == "custom" and catalog["name"] == "ABET EAC" and catalog["edition"] == "2025-2026"
    assert catalog["title"] == "ABET EAC (2025-2026)"
    assert catalog["standard_count"] == 6 and catalog["max_depth"] == 2
    assert catalog["source_format"] == "csv" and catalog["source_filename"] == "abet.csv"
    assert len(catalog["content_sha256"]) == 64

    tree = api.get(f"{catalogs_url(workspace)}/{catalog['id']}/standards", headers=owner.headers).json()
    assert tree["standard_count"] == 6
    assert [n["code"] for n in tree["items"]] == ["C1", "C2", "C3"]
    c3 = tree["items"][2]
    assert [n["code"] for n in c3["children"]] == ["C3.1", "C3.2"]
    assert tree["items"][1]["description"] == "Published, consistent with the mission"
    assert tree["items"][0]["children"][0] == {
        "code": "C1.1", "parent": "C1", "title": "Evaluation", "kind": None, "description": None,
        "typical_evidence": [], "edition": "2025-2026", "children": [],
    }

    imported = audit_events(api, workspace["id"], "catalog.imported")
    assert len(imported) == 1
    details = imported[0].details
    assert details["name"] == "ABET EAC" and details["items"] == 6 and details["format"] == "csv"
    assert details["sha256"] == catalog["content_sha256"] and imported[0].target_id == catalog["id"]

    duplicate = upload(api, owner, workspace, ABET_CSV, name="ABET EAC", version="2025-2026")
    assert duplicate.status_code == 409 and error_of(duplicate)["code"] == "catalog_exists"
    assert upload(api, owner, workspace, ABET_CSV, name="ABET EAC", version="2026-2027").status_code == 201

    # Removing a custom catalog deletes it with its standards; the name is free again.
    assert api.delete(f"{catalogs_url(workspace)}/{catalog['id']}", headers=owner.headers).status_code == 204
    removed = audit_events(api, workspace["id"], "catalog.removed")
    assert removed[0].details["name"] == "ABET EAC" and removed[0].details["items"] == 6
    assert upload(api, owner, workspace, ABET_CSV, name="ABET EAC", version="2025-2026").status_code == 201


def test_import_custom_catalogs_as_json_and_yaml(api, make_person, make_workspace):
    owner = make_person()
    workspace = make_workspace(owner)
    url = catalogs_url(workspace)
    body = {
        "name": "Internal quality framework",
        "items": [
            {"id": "Q1", "title": "Governance", "text": "How decisions are made", "children": [
                {"id": "Q1.1", "title": "Committees"},
            ]},
            {"id": "Q2", "title": "Teaching"},
        ],
    }
    response = api.post(url, json=body, headers=owner.headers)
    assert response.status_code == 201, response.text
    assert response.json()["source_format"] == "json" and response.json()["standard_count"] == 3
    yaml_text = b"name: State rules\nversion: '2024'\nitems:\n  - {id: R1, title: Licensure}\n  - {id: R1.a, parent: R1, title: Reports}\n"
    response = upload(api, owner, workspace, yaml_text, filename="rules.yaml")
    assert response.status_code == 201, response.text
    yaml_catalog = response.json()
    assert (yaml_catalog["name"], yaml_catalog["edition"], yaml_catalog["source_format"]) == ("State rules", "2024", "yaml")
    tree = api.get(f"{url}/{yaml_catalog['id']}/standards", headers=owner.headers).json()
    assert tree["items"][0]["children"][0]["code"] == "R1.a"
    # A CSV named by nothing but its file
    response = upload(api, owner, workspace, ABET_CSV, filename="caep-standards.csv")
    assert response.status_code == 201 and response.json()["name"] == "caep-standards"


def test_an_invalid_custom_catalog_is_refused_with_every_problem(api, make_person, make_workspace):
    owner = make_person()
    workspace = make_workspace(owner)
    bad = b"id,parent,title,text\nA,,Alpha,\nA,,Again,\nB,Z,Beta,\nC,,,\n"
    response = upload(api, owner, workspace, bad, name="Broken")
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_catalog"
    assert error["message"].startswith("The catalog has 3 problems; first: line 3: duplicate id 'A'")
    assert [(d["location"], d["message"]) for d in error["details"]] == [
        ("line 3", "duplicate id 'A' (first at line 2)"),
        ("line 4", "unknown parent 'Z': no item has that id"),
        ("line 5", "missing title"),
    ]
    json_bad = api.post(
        catalogs_url(workspace),
        json={"name": "J", "items": [{"id": "A", "title": "a", "parent": "B"}, {"id": "B", "title": "b", "parent": "A"}]},
        headers=owner.headers,
    )
    assert json_bad.status_code == 422 and "cycle" in error_of(json_bad)["message"]
    assert upload(api, owner, workspace, b"", name="Empty").status_code == 422
    assert error_of(upload(api, owner, workspace, b"id,title\nA,Caf\xe9\n", name="Latin-1"))["details"][0]["line"] == 2
    too_big = b"id,title,text\nA,Alpha," + b"x" * (5 * 1024 * 1024) + b"\n"
    assert "larger than 5 MB" in error_of(upload(api, owner, workspace, too_big, name="Huge"))["message"]
    no_file = api.post(catalogs_url(workspace), data={"name": "x"}, files={"other": ("a.txt", b"x")}, headers=owner.headers)
    assert no_file.status_code == 422
    assert api.get(catalogs_url(workspace), headers=owner.headers).json()["total"] == 0
    assert audit_events(api, workspace["id"], "catalog.imported") == []


def test_a_catalog_at_the_size_limit_imports_and_reads_fast(api, make_person, make_workspace):
    owner = make_person()
    workspace = make_workspace(owner)
    rows = ["id,parent,title,text"]
    for n in range(MAX_ITEMS):
        parent = "" if n < 50 else f"S{n % 50}"
        rows.append(f"S{n},{parent},Standard {n},Requirement text number {n}")
    data = ("\n".join(rows) + "\n").encode()
    started = time.perf_counter()
    response = upload(api, owner, workspace, data, name="Large framework")
    imported_in = time.perf_counter() - started
    assert response.status_code == 201, response.text
    catalog = response.json()
    assert catalog["standard_count"] == MAX_ITEMS
    started = time.perf_counter()
    tree = api.get(f"{catalogs_url(workspace)}/{catalog['id']}/standards", headers=owner.headers)
    read_in = time.perf_counter() - started
    assert tree.status_code == 200
    assert len(flatten(tree.json()["items"])) == MAX_ITEMS
    assert imported_in < 10 and read_in < 5, (imported_in, read_in)
    over = upload(api, owner, workspace, data + b"S5000,,One too many,\n", name="Too large")
    assert over.status_code == 422 and "limit is 5,000" in error_of(over)["message"]


# ---------------------------------------------------------------------------------------------
# Roles and tenants.


def test_viewers_read_catalogs_but_only_admins_change_them(api, make_person, make_workspace):
    owner, admin, editor, viewer = make_person(), make_person(), make_person(), make_person()
    workspace = make_workspace(owner)
    join(api, owner, workspace["id"], admin, "admin")
    join(api, owner, workspace["id"], editor, "editor")
    join(api, owner, workspace["id"], viewer, "viewer")
    url = catalogs_url(workspace)
    selected = api.post(url, json={"accreditor": "WSCUC"}, headers=admin.headers)
    assert selected.status_code == 201
    catalog_id = selected.json()["id"]

    for person in (viewer, editor):
        assert api.get(url, headers=person.headers).status_code == 200
        assert api.get(f"{url}/{catalog_id}/standards", headers=person.headers).status_code == 200
        refused = api.post(url, json={"accreditor": "HLC"}, headers=person.headers)
        assert refused.status_code == 403 and error_of(refused)["details"] == {"action": "catalogs.manage"}
        assert upload(api, person, workspace, ABET_CSV, name="x").status_code == 403
        assert api.delete(f"{url}/{catalog_id}", headers=person.headers).status_code == 403
    assert api.get(url, headers=owner.headers).json()["total"] == 1

    read_key = create_key(api, owner, workspace["id"], "read")
    write_key = create_key(api, owner, workspace["id"], "read_write")
    assert api.get(url, headers=bearer(read_key["key"])).status_code == 200
    for key in (read_key, write_key):  # keys never reconfigure the workspace
        assert api.post(url, json={"accreditor": "HLC"}, headers=bearer(key["key"])).status_code == 403
    assert api.get(url).status_code == 401


def test_other_workspaces_catalogs_are_invisible(api, make_person, make_workspace):
    victim, attacker = make_person(), make_person()
    victims = make_workspace(victim, "Victim College")
    attackers = make_workspace(attacker, "Attacker University")
    victim_catalog = upload(api, victim, victims, ABET_CSV, name="Secret framework").json()
    url = catalogs_url(victims)

    for call in (
        lambda: api.get(url, headers=attacker.headers),
        lambda: api.get(f"{url}/{victim_catalog['id']}", headers=attacker.headers),
        lambda: api.get(f"{url}/{victim_catalog['id']}/standards", headers=attacker.headers),
        lambda: api.delete(f"{url}/{victim_catalog['id']}", headers=attacker.headers),
        lambda: api.post(url, json={"accreditor": "HLC"}, headers=attacker.headers),
        lambda: upload(api, attacker, victims, ABET_CSV, name="planted"),
    ):
        response = call()
        assert response.status_code == 404 and error_of(response)["message"] == "Workspace not found", response.text

    # Through the attacker's own workspace, the victim's catalog id finds nothing either.
    own = catalogs_url(attackers)
    for response in (
        api.get(f"{own}/{victim_catalog['id']}/standards", headers=attacker.headers),
        api.delete(f"{own}/{victim_catalog['id']}", headers=attacker.headers),
    ):
        assert response.status_code == 404 and error_of(response)["message"] == "Catalog not found in this workspace"
    # The same name is free in another workspace, and nothing of the victim's changed.
    assert upload(api, attacker, attackers, ABET_CSV, name="Secret framework").status_code == 201
    tree = api.get(f"{url}/{victim_catalog['id']}/standards", headers=victim.headers).json()
    assert tree["standard_count"] == 6 and tree["catalog"]["name"] == "Secret framework"


def test_deleting_a_workspace_deletes_its_catalogs(api, make_person, make_workspace):
    from sqlalchemy import func, select

    from a3e.standards.models import CatalogSelection, CustomCatalog, CustomStandard

    owner = make_person()
    workspace = make_workspace(owner)
    assert upload(api, owner, workspace, ABET_CSV, name="ABET").status_code == 201
    assert api.post(catalogs_url(workspace), json={"accreditor": "NWCCU"}, headers=owner.headers).status_code == 201
    deleted = api.delete(f"/api/v1/workspaces/{workspace['id']}", headers=owner.headers)
    assert deleted.status_code == 204, deleted.text
    with api.app.state.database.session() as session:
        for model in (CatalogSelection, CustomCatalog, CustomStandard):
            assert session.scalar(select(func.count()).select_from(model)) == 0, model


def test_the_post_body_is_documented_for_both_ways(api):
    schema = api.app.openapi()
    post = schema["paths"]["/api/v1/workspaces/{workspace_id}/catalogs"]["post"]
    content = post["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert json.dumps(content["application/json"]["schema"]).count("accreditor") >= 1
    assert "file" in content["multipart/form-data"]["schema"]["required"]
