"""Standards catalogs without a database: the built-in data packages, the validator on good and bad
files of each format, and `a3e standards validate`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from a3e.standards.catalogs import ACCREDITOR_ORDER, CatalogDataError, _data_files, load_registry, registry
from a3e.standards.validator import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_ITEMS,
    CatalogInvalid,
    detect_format,
    parse_catalog,
    parse_items,
)

# ---------------------------------------------------------------------------------------------
# The built-in catalogs.


def codes(edition) -> set[str]:
    return set(edition.by_code)


def top_level(edition) -> list[str]:
    return [node.code for node in edition.children[None]]


def test_every_builtin_catalog_loads_and_validates():
    reg = load_registry(_data_files())  # fresh, not the cached one
    assert list(reg.accreditors) == list(ACCREDITOR_ORDER)
    for accreditor in reg.accreditors.values():
        assert accreditor.name and accreditor.editions
        assert sum(edition.default for edition in accreditor.editions.values()) == 1
        for edition in accreditor.editions.values():
            assert edition.standard_count == len(edition.nodes) > 0
            assert edition.title and edition.tree_json and edition.etag
            # the serialized tree holds every node once
            flat: list[dict] = []
            stack = json.loads(edition.tree_json)
            while stack:
                node = stack.pop()
                flat.append(node)
                stack.extend(node["children"])
            assert sorted(n["code"] for n in flat) == sorted(edition.by_code)
            assert all(n["edition"] == edition.edition for n in flat)


def test_catalogs_load_once():
    assert registry() is registry()


def test_sacscoc_2018_sections_standards_and_lettered_parts():
    sacscoc = registry().get("SACSCOC")
    edition = sacscoc.edition("2018")
    assert sacscoc.default_edition is edition
    assert top_level(edition) == [str(n) for n in range(1, 15)]
    assert edition.by_code["8"].title == "Student Achievement"
    part = edition.by_code["8.2.a"]
    assert part.parent == "8.2" and edition.by_code["8.2"].parent == "8"
    assert part.title == "Student outcomes: educational programs"
    assert edition.by_code["14.3"].title == "Comprehensive institutional reviews"
    assert {"4.2.a", "4.2.b", "4.2.c", "4.2.d", "4.2.e", "4.2.f", "4.2.g"} <= codes(edition)
    assert {"3.1.a", "3.1.b", "3.1.c", "5.2.a", "5.2.b", "5.2.c", "6.2.a", "6.2.b", "6.2.c"} <= codes(edition)
    assert {"4.1.a", "4.1.e", "10.6.a", "10.6.c", "10.8.a", "10.8.c"} <= codes(edition)
    # every standard of each section, and nothing invented past the last one
    expected_last = {"1": "1.1", "2": "2.1", "7": "7.3", "9": "9.7", "10": "10.9", "11": "11.3", "12": "12.6", "13": "13.8", "14": "14.5"}
    for section, last in expected_last.items():
        numbers = [n.code for n in edition.children[section]]
        assert numbers[-1] == last, (section, numbers)
        assert len(numbers) == int(last.split(".")[1])


def test_hlc_editions():
    hlc = registry().get("HLC")
    assert set(hlc.editions) == {"2020", "2025"}
    assert hlc.default_edition.edition == "2025"  # the Criteria in force since September 2025
    old = hlc.edition("2020")
    assert top_level(old) == ["1", "2", "3", "4", "5"]
    assert "3.C" in codes(old) and old.by_code["3.C"].parent == "3"
    assert [n.code for n in old.children["3"]] == ["3.A", "3.B", "3.C", "3.D"]
    assert old.by_code["2"].title == "Integrity: Ethical and Responsible Conduct"
    new = hlc.edition("2025")
    assert top_level(new) == ["1", "2", "3", "4"]
    assert [n.code for n in new.children["3"]] == ["3.A", "3.B", "3.C", "3.D", "3.E", "3.F", "3.G"]
    assert new.by_code["3.C"].title == "Sufficiency of Faculty and Staff"
    assert new.by_code["4"].title == "Sustainability: Institutional Effectiveness, Resources and Planning"


def test_msche_neche_nwccu_wscuc_structure():
    msche = registry().get("MSCHE").default_edition
    assert top_level(msche) == ["I", "II", "III", "IV", "V", "VI", "VII"]
    assert msche.by_code["III"].title == "Design and Delivery of the Student Learning Experience"
    neche = registry().get("NECHE").default_edition
    assert top_level(neche) == [str(n) for n in range(1, 10)]
    assert neche.by_code["9"].title == "Integrity, Transparency, and Public Disclosure"
    nwccu = registry().get("NWCCU").default_edition
    assert top_level(nwccu) == ["1", "2"]
    assert [n.code for n in nwccu.children["1"]] == ["1.A", "1.B", "1.C", "1.D"]
    assert [n.code for n in nwccu.children["2"]] == [f"2.{letter}" for letter in "ABCDEFGHI"]
    assert nwccu.by_code["1.B.1"].parent == "1.B"
    counts = {element: len(nwccu.children[element]) for element in ("1.A", "1.B", "1.C", "1.D", "2.A", "2.G", "2.I")}
    assert counts == {"1.A": 1, "1.B": 4, "1.C": 9, "1.D": 4, "2.A": 4, "2.G": 7, "2.I": 1}
    wscuc = registry().get("WSCUC").default_edition
    assert top_level(wscuc) == ["1", "2", "3", "4"]
    assert "1.1" in codes(wscuc) and wscuc.by_code["1.1"].title == "CFR 1.1"
    cfrs = [n for n in wscuc.nodes if n.kind == "cfr" and n.parent in ("1", "2", "3", "4")]
    assert len(cfrs) == 39  # "Thirty-nine Criteria for Review"
    assert wscuc.by_code["2.2a"].parent == "2.2"


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def test_descriptions_are_our_own_words_not_the_title():
    for accreditor in registry().accreditors.values():
        for edition in accreditor.editions.values():
            seen: dict[str, str] = {}
            for node in edition.nodes:
                where = f"{accreditor.code} {edition.edition} {node.code}"
                description, title = node.description.strip(), node.title.strip()
                assert description and description.lower() != title.lower(), where
                assert not set(_words(description)) <= set(_words(title)), where
                assert len(_words(description)) >= 5, where
                assert description not in seen, f"{where} repeats the description of {seen.get(description)}"
                seen[description] = node.code
                assert node.typical_evidence and all(e.strip() for e in node.typical_evidence), where
                assert node.kind, where
                assert len(node.code) <= 64 and re.fullmatch(r"[0-9A-Za-z.]+", node.code), where


def test_a_broken_data_file_is_refused_with_its_problems():
    good = dict(_data_files())["neche-2021.json"]
    document = json.loads(good)

    def variant(change) -> tuple[str, bytes]:
        copy = json.loads(good)
        change(copy)
        return "neche-2021.json", json.dumps(copy).encode()

    cases = {
        "duplicate id '1'": lambda d: d["items"].append(dict(d["items"][0])),
        "unknown parent": lambda d: d["items"].append({**d["items"][0], "code": "10", "parent": "99"}),
        "missing description": lambda d: d["items"][0].update(description=""),
        "repeats the title": lambda d: d["items"][0].update(description=d["items"][0]["title"]),
        "typical_evidence": lambda d: d["items"][0].update(typical_evidence=[]),
    }
    for expected, change in cases.items():
        with pytest.raises(CatalogDataError, match=re.escape(expected)):
            load_registry([variant(change)])
    two_defaults = [("neche-2021.json", good), ("neche-2022.json", json.dumps({**document, "edition": "2022"}).encode())]
    with pytest.raises(CatalogDataError, match="exactly one edition must be the default"):
        load_registry(two_defaults)


# ---------------------------------------------------------------------------------------------
# The validator.

GOOD_CSV = b"id,parent,title,text\nC1,,Students,Student performance is evaluated\nC1.1,C1,Advising,\nC2,,Outcomes,\"Multi-line\ntext, with a comma\"\nC2.1,C2,Assessment,x\n"


def problems_of(data: bytes, fmt: str | None = None, filename: str | None = None) -> list[str]:
    with pytest.raises(CatalogInvalid) as info:
        parse_catalog(data, fmt, filename=filename)
    return [str(p) for p in info.value.problems]


def test_a_good_csv_file():
    catalog = parse_catalog(GOOD_CSV, "csv")
    assert [(i.code, i.parent, i.line) for i in catalog.items] == [
        ("C1", None, 2), ("C1.1", "C1", 3), ("C2", None, 4), ("C2.1", "C2", 6)
    ]
    assert catalog.items[2].text == "Multi-line\ntext, with a comma"
    assert catalog.items[1].text is None
    assert (catalog.depth, catalog.roots) == (2, 2)


def test_csv_dialects_synonyms_and_bom():
    semicolons = "\ufeffCode;Parent ID;Name;Description;Notes\nA;;Alpha;first;ignored\nB;A;Beta;;\n".encode()
    catalog = parse_catalog(semicolons, "csv")
    assert [(i.code, i.parent, i.title, i.text) for i in catalog.items] == [("A", None, "Alpha", "first"), ("B", "A", "Beta", None)]
    tabs = b"id\ttitle\nA\tAlpha\n"
    assert parse_catalog(tabs, "csv").items[0].title == "Alpha"


def test_bad_csv_files_name_the_line():
    assert problems_of(b"id,parent,title,text\nA,,Alpha,\nB,A,Beta,\nA,,Again,\n", "csv") == [
        "line 4: duplicate id 'A' (first at line 2)"
    ]
    assert problems_of(b"id,parent,title\nA,,Alpha\nB,Z,Beta\n", "csv") == ["line 3: unknown parent 'Z': no item has that id"]
    assert problems_of(b"id,parent,title\nA,C,Alpha\nB,A,Beta\nC,B,Gamma\n", "csv") == [
        "line 2: cycle in parents: 'A' → 'C' → 'B' → 'A'"
    ]
    assert problems_of(b"id,parent,title\nA,,Alpha\nB,A,\n", "csv") == ["line 3: missing title"]
    assert problems_of(b"id,parent,title\nA,,Alpha\n,A,Orphan\n", "csv") == ["line 3: missing id"]
    assert problems_of(b"id,parent,title\nA,A,Self\n", "csv") == ["line 2: 'A' is its own parent"]
    assert problems_of(b"code,name\nA,Alpha,extra\n", "csv") == ["line 2: 3 fields, but the header has 2"]
    header = problems_of(b"number,heading\n1,One\n", "csv")
    assert len(header) == 1 and header[0].startswith("line 1: the header row must name the columns id, parent, title, text")
    assert problems_of(b"id,parent,title\n", "csv") == ["file: the file has a header row but no items"]
    assert problems_of(b"id,title\n\"A,Alpha\n", "csv")[0].startswith("line ")
    long_id = b"id,title\n" + b"x" * 65 + b",Long\n"
    assert problems_of(long_id, "csv") == ["line 2: id is 65 characters; the limit is 64"]


def test_several_problems_are_listed_in_reading_order():
    found = problems_of(b"id,parent,title\nA,,Alpha\nA,,Dup\nB,Q,Beta\nC,,\n", "csv")
    assert found == [
        "line 3: duplicate id 'A' (first at line 2)",
        "line 4: unknown parent 'Q': no item has that id",
        "line 5: missing title",
    ]


def test_empty_and_badly_encoded_files():
    for empty in (b"", b"   \n", b"\xef\xbb\xbf"):
        assert problems_of(empty, "csv") == ["file: the file is empty"]
    assert problems_of(b"id,title\nA,Caf\xe9\n", "csv") == [
        "line 2: bad encoding: byte 0xe9 is not valid UTF-8; save the file as UTF-8"
    ]
    assert problems_of("id,title\nA,x\n".encode("utf-16"), "csv") == ["file: the file is encoded as UTF-16; save it as UTF-8"]
    assert "binary" in problems_of(b"PK\x03\x04\x00\x00 a workbook", "csv")[0]
    assert problems_of(b"[]", "json") == ["file: the file has no items"]
    assert problems_of(b"null", "json") == ["file: the file is empty"]


def test_limits_items_depth_and_size():
    rows = "".join(f"S{n},,Standard {n}\n" for n in range(MAX_ITEMS + 1))
    assert problems_of(("id,parent,title\n" + rows).encode(), "csv") == [f"file: more than {MAX_ITEMS:,} items; the limit is {MAX_ITEMS:,}"]
    at_limit = "".join(f"S{n},,Standard {n}\n" for n in range(MAX_ITEMS))
    assert len(parse_catalog(("id,parent,title\n" + at_limit).encode(), "csv").items) == MAX_ITEMS
    chain = "L1,,Level 1\n" + "".join(f"L{n},L{n - 1},Level {n}\n" for n in range(2, MAX_DEPTH + 2))
    assert problems_of(("id,parent,title\n" + chain).encode(), "csv") == [
        f"line {MAX_DEPTH + 2}: nested {MAX_DEPTH + 1} levels deep; the limit is {MAX_DEPTH}"
    ]
    ok_chain = "L1,,Level 1\n" + "".join(f"L{n},L{n - 1},Level {n}\n" for n in range(2, MAX_DEPTH + 1))
    assert parse_catalog(("id,parent,title\n" + ok_chain).encode(), "csv").depth == MAX_DEPTH
    big = b"id,title,text\n" + b"A,Alpha," + b"x" * MAX_FILE_BYTES + b"\n"
    assert problems_of(big, "csv") == ["file: the file is larger than 5 MB, the limit; split it or trim long texts"]


def test_good_json_and_yaml_files_flat_and_nested():
    flat = json.dumps({"name": "ABET EAC", "version": "2025-2026", "items": [
        {"id": "1", "title": "Students", "text": "Student performance"},
        {"id": "1.1", "parent": "1", "title": "Evaluation"},
        {"code": 3, "name": "Student Outcomes"},
    ]}).encode()
    catalog = parse_catalog(flat, "json")
    assert (catalog.name, catalog.version) == ("ABET EAC", "2025-2026")
    assert [(i.code, i.parent, i.index) for i in catalog.items] == [("1", None, 1), ("1.1", "1", 2), ("3", None, 3)]
    nested = b"""
name: State rules
items:
  - id: "R1"
    title: Licensure
    children:
      - id: "R1.1"
        title: Annual report
        text: |
          Filed every year.
      - {id: "R1.2", title: Site visits}
  - id: R2
    title: Finance
"""
    catalog = parse_catalog(nested, "yaml")
    assert [(i.code, i.parent) for i in catalog.items] == [("R1", None), ("R1.1", "R1"), ("R1.2", "R1"), ("R2", None)]
    assert catalog.items[1].text == "Filed every year."
    assert parse_items([{"id": "A", "title": "Alpha", "children": [{"id": "B", "title": "Beta"}]}]).depth == 2


def test_bad_json_and_yaml_files_name_the_item():
    items = [{"id": "1", "title": "One"}, {"id": "1", "title": "Again"}, {"id": "2", "parent": "9", "title": "Two"}, {"id": "3"}]
    assert problems_of(json.dumps(items).encode(), "json") == [
        "item 2 (id '1'): duplicate id '1' (first at item 1)",
        "item 3 (id '2'): unknown parent '9': no item has that id",
        "item 4 (id '3'): missing title",
    ]
    assert problems_of(b'[{"id": "A", "title": "a"},\n {"id": "B" "title": "b"}]', "json") == [
        "line 2, column 13: not valid JSON: Expecting ',' delimiter"
    ]
    assert problems_of(b'["just text"]', "json") == ["item 1: an item must be an object with id and title, not text"]
    assert problems_of(b'{"title": "no items"}', "json") == ["file: expected a list of items, or an object with an `items` list"]
    assert problems_of(b"- id: 1.10\n  title: Trailing zero\n", "yaml") == [
        "item 1: id is the number 1.1, which loses trailing zeros (1.10 becomes 1.1); write it in quotes"
    ]
    assert problems_of(b"- id: A\n  title: x\n  children:\n    - id: B\n      parent: Z\n      title: y\n", "yaml") == [
        "item 1 > 1 (id 'B'): parent is 'Z' but the item is listed among the children of 'A'"
    ]
    cycle = b"- {id: A, parent: B, title: a}\n- {id: B, parent: A, title: b}\n"
    assert problems_of(cycle, "yaml") == ["item 1 (id 'A'): cycle in parents: 'A' → 'B' → 'A'"]
    assert problems_of(b"items:\n  - id: A\n    title: [unclosed\n", "yaml")[0].startswith("line 4, column 1: not valid YAML")
    bomb = b'a: &a ["x","x"]\nb: &b [*a,*a]\nc: &c [*b,*b]\nitems: [*c]\n'
    assert problems_of(bomb, "yaml") == ["line 2: YAML aliases (*name) are not accepted; write the values out"]
    assert problems_of(b"!!python/object:os.system {}\n", "yaml")[0].startswith("line 1, column 1: not valid YAML")
    deep = b"[" * 200 + b"]" * 200
    assert problems_of(deep, "json") in (["file: the JSON is nested too deeply"], ["item 1: an item must be an object with id and title, not a list"])
    assert problems_of(b"x: " + b"[" * 100 + b"]" * 100, "yaml") == ["line 1: the YAML is nested too deeply"]


def test_format_detection():
    assert detect_format("abet.CSV") == "csv"
    assert detect_format("rules.yml") == "yaml"
    assert detect_format(None, "application/json") == "json"
    assert detect_format(None, None, b'  [{"id": 1}]') == "json"
    assert detect_format(None, None, b"id,parent,title\n") == "csv"
    assert detect_format(None, None, b"items:\n  - id: A\n") == "yaml"


# ---------------------------------------------------------------------------------------------
# `a3e standards validate FILE`.


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "a3e", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_cli_validate_exit_codes_and_messages(tmp_path):
    good = tmp_path / "abet.csv"
    good.write_bytes(GOOD_CSV)
    result = run_cli("standards", "validate", str(good), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid CSV catalog: 4 items, 2 at the top level, 2 levels deep" in result.stdout

    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"id,parent,title\nA,,Alpha\nA,,Again\nB,Z,Beta\n")
    result = run_cli("standards", "validate", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert "invalid: 2 problems" in result.stdout
    assert "line 3: duplicate id 'A' (first at line 2)" in result.stdout
    assert "line 4: unknown parent 'Z'" in result.stdout

    yaml_file = tmp_path / "rules.yaml"
    yaml_file.write_text("- {id: A, title: a}\n- {id: B, parent: A}\n")
    result = run_cli("standards", "validate", "--json", str(yaml_file), cwd=tmp_path)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert report["problems"] == [{"location": "item 2 (id 'B')", "message": "missing title", "item": 2}]

    both = run_cli("standards", "validate", str(good), str(tmp_path / "missing.json"), cwd=tmp_path)
    assert both.returncode == 1 and "cannot read it" in both.stdout

    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    assert run_cli("standards", "validate", str(empty), cwd=tmp_path).returncode == 1

    assert run_cli("standards", "validate", cwd=tmp_path).returncode == 64  # usage error
