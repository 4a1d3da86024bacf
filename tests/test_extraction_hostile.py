"""Encrypted, corrupt and hostile input: every one ends in ExtractionFailed (or UnsupportedFile)
with a reason a person can act on, quickly and without exhausting memory."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import pytest

from a3e.evidence.extraction import (
    ExtractionFailed,
    ExtractionLimits,
    Kind,
    UnsupportedFile,
    extract,
    iter_zip_documents,
    sniff,
    unpack_zip,
)
from tests.documents import (
    deep_html,
    make_dimension_bomb_xlsx,
    make_docx,
    make_encrypted_pdf,
    make_pdf,
    make_pdf_claiming_pages,
    make_raw_xlsx,
    make_xlsx,
    make_zip,
    make_zip_bomb,
    make_zip_bomb_docx,
    prose,
    replace_zip_member,
    sheet_xml,
    truncate,
)


def failure(path: Path, kind: Kind, limits: ExtractionLimits | None = None) -> str:
    with pytest.raises(ExtractionFailed) as caught:
        extract(path, kind, limits or ExtractionLimits())
    assert caught.value.status_code == 422 and caught.value.code == "extraction_failed"
    return caught.value.reason


# ---- encrypted and corrupt ----------------------------------------------------------------------


def test_encrypted_pdf(tmp_path: Path) -> None:
    path = make_encrypted_pdf(tmp_path / "a.pdf", ["Confidential minutes"])
    assert sniff(path, "minutes.pdf") is Kind.PDF
    assert failure(path, Kind.PDF) == "The PDF is encrypted (password protected)"


def test_password_protected_office_file(tmp_path: Path) -> None:
    # Office writes a password-protected .docx/.xlsx as an OLE2 container, not as a ZIP.
    path = tmp_path / "a.docx"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 2048)
    assert sniff(path, "report.docx") is Kind.DOCX
    assert failure(path, Kind.DOCX).startswith("The DOCX is encrypted (password protected)")
    assert failure(path, Kind.XLSX).startswith("The XLSX is encrypted (password protected)")


@pytest.mark.parametrize(
    ("name", "kind", "maker"),
    [
        ("a.pdf", Kind.PDF, lambda p: make_pdf(p, [prose(20)] * 3)),
        ("a.docx", Kind.DOCX, lambda p: make_docx(p, [("p", prose(20))] * 5)),
        ("a.xlsx", Kind.XLSX, lambda p: make_xlsx(p, {"S": [[n, prose(2)] for n in range(50)]})),
    ],
)
def test_truncated_files_are_reported_as_corrupt(tmp_path: Path, name: str, kind: Kind, maker) -> None:
    path = truncate(maker(tmp_path / name), keep=0.6)
    assert sniff(path, name) is kind  # the damage is reported by extraction, precisely
    assert failure(path, kind).startswith("The file is corrupt")


def test_docx_with_broken_xml(tmp_path: Path) -> None:
    path = replace_zip_member(make_docx(tmp_path / "a.docx", [("p", "x")]), "word/document.xml", b"<w:document><w:body>")
    assert "is not well-formed XML" in failure(path, Kind.DOCX)


def test_docx_without_its_document_part(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.docx", [("[Content_Types].xml", b"<Types/>"), ("word/styles.xml", b"<x/>")])
    assert failure(path, Kind.DOCX) == "The file is corrupt: the DOCX has no word/document.xml"


def test_corrupt_pdf_body(tmp_path: Path) -> None:
    path = tmp_path / "a.pdf"
    path.write_bytes(b"%PDF-1.7\n" + b"garbage " * 500)
    assert failure(path, Kind.PDF).startswith("The file is corrupt")


# ---- decompression bombs ----------------------------------------------------------------------


def test_docx_zip_bomb_is_refused_before_decompressing(tmp_path: Path) -> None:
    path = make_zip_bomb_docx(tmp_path / "bomb.docx", uncompressed_bytes=300_000_000)
    assert path.stat().st_size < 1_000_000
    assert sniff(path, "bomb.docx") is Kind.DOCX
    started = time.monotonic()
    assert failure(path, Kind.DOCX) == (
        "The DOCX expands to more than 200 MB when decompressed — refused as a possible decompression bomb"
    )
    assert time.monotonic() - started < 1


def test_docx_member_with_an_absurd_ratio_is_refused(tmp_path: Path) -> None:
    path = make_zip_bomb_docx(tmp_path / "bomb.docx", uncompressed_bytes=50_000_000)
    reason = failure(path, Kind.DOCX)
    assert reason.startswith("The DOCX's member 'word/document.xml' is compressed")
    assert reason.endswith("(the limit is 100 to 1) — refused as a possible decompression bomb")


def test_docx_bomb_with_lying_headers_stops_at_the_declared_size(tmp_path: Path) -> None:
    # The headers claim 1,000 bytes; the stream holds 50 MB. Refused from the headers alone.
    path = make_zip_bomb_docx(tmp_path / "bomb.docx", uncompressed_bytes=50_000_000, lie_about_size=True)
    started = time.monotonic()
    reason = failure(path, Kind.DOCX)
    assert time.monotonic() - started < 1
    assert reason.startswith("The DOCX's member 'word/document.xml' declares 1,000 bytes but holds ")
    assert reason.endswith("bytes of compressed data — its headers are forged; refused")


def test_lying_headers_that_look_plausible_still_stop_at_the_declared_size(tmp_path: Path) -> None:
    # Declared 60,000 bytes, about as much as the compressed data: plausible, and false. zipfile never
    # produces more than the declared size, our counter agrees, and the checksum then fails.
    from tests.documents import deflate_repeated, write_raw_zip

    data, crc, size = deflate_repeated(b"", b" " * 1_048_576, 50, b"")
    path = write_raw_zip(tmp_path / "a.zip", [("filler.txt", data, crc, len(data), len(data))])
    started = time.monotonic()
    with pytest.raises(ExtractionFailed, match="filler.txt"):
        with unpack_zip(path):
            pass
    assert time.monotonic() - started < 1


def test_the_uncompressed_budget_covers_all_members(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "a.docx", [("p", prose(40))] * 20)
    limits = ExtractionLimits(max_uncompressed_bytes=20_000)
    assert failure(path, Kind.DOCX, limits).startswith("The DOCX expands to more than 0 MB")
    assert extract(path, Kind.DOCX).blocks  # fine with the default limits


def test_xml_entity_bomb_is_refused(tmp_path: Path) -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
        b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r>'
        b"<w:t>&lol3;</w:t></w:r></w:p></w:body></w:document>"
    )
    path = replace_zip_member(make_docx(tmp_path / "a.docx", [("p", "x")]), "word/document.xml", laughs)
    assert failure(path, Kind.DOCX) == (
        "The DOCX's word/document.xml contains a DTD (document type declaration) — refused as unsafe"
    )


def test_deeply_nested_docx_xml(tmp_path: Path) -> None:
    body = b"<w:sdt>" * 300 + b"</w:sdt>" * 300
    xml = (b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
           + body + b"</w:body></w:document>")
    path = replace_zip_member(make_docx(tmp_path / "a.docx", [("p", "x")]), "word/document.xml", xml)
    assert failure(path, Kind.DOCX) == "The DOCX's word/document.xml is nested more than 256 levels deep"


def test_too_many_zip_members_in_a_docx(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "a.docx", [("p", "x")])
    limits = ExtractionLimits(max_zip_members=5)
    assert failure(path, Kind.DOCX, limits).endswith("files; the limit is 5")


# ---- spreadsheets -------------------------------------------------------------------------------


def test_xlsx_declaring_the_whole_grid_costs_nothing(tmp_path: Path) -> None:
    path = make_dimension_bomb_xlsx(tmp_path / "a.xlsx")
    assert sniff(path, "a.xlsx") is Kind.XLSX
    started = time.monotonic()
    extracted = extract(path, Kind.XLSX)
    assert time.monotonic() - started < 1
    assert [(b.sheet, b.row, b.text) for b in extracted.blocks] == [
        ("Data", 1, "Header | Value"), ("Data", 1_048_576, "Last row | 42"),
    ]


def test_xlsx_with_too_many_rows(tmp_path: Path) -> None:
    path = make_raw_xlsx(tmp_path / "a.xlsx", sheet_xml({n: [f"r{n}", "x"] for n in range(1, 61)}))
    assert failure(path, Kind.XLSX, ExtractionLimits(max_rows=50)) == "The workbook has more than 50 rows; the limit is 50"
    assert failure(path, Kind.XLSX, ExtractionLimits(max_cells=100)) == (
        "The workbook has more than 100 filled cells; the limit is 100"
    )
    assert len(extract(path, Kind.XLSX).blocks) == 60


def test_csv_with_too_many_rows(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a,b\n" + "".join(f"{n},x\n" for n in range(100)))
    assert failure(path, Kind.CSV, ExtractionLimits(max_rows=20)) == "The CSV has more than 20 rows; the limit is 20"


# ---- PDF, HTML and text limits ----------------------------------------------------------------------


def test_pdf_with_more_pages_than_the_limit(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "a.pdf", [f"Page {n}" for n in range(12)])
    assert failure(path, Kind.PDF, ExtractionLimits(max_pages=10)) == "The PDF has 12 pages; the limit is 10"


def test_pdf_claiming_a_million_pages(tmp_path: Path) -> None:
    path = make_pdf_claiming_pages(tmp_path / "a.pdf", 1_000_000)
    assert failure(path, Kind.PDF) == "The PDF has 1,000,000 pages; the limit is 5,000"
    # Allowed that many, the claim falls apart at the first missing page.
    reason = failure(path, Kind.PDF, ExtractionLimits(max_pages=2_000_000))
    assert reason.startswith("The file is corrupt: page 2 of the PDF cannot be read")


@pytest.mark.parametrize("depth", [300, 100_000])
def test_deeply_nested_html(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "a.html"
    path.write_text(deep_html(depth))
    started = time.monotonic()
    assert failure(path, Kind.HTML) == "The HTML is nested more than 256 levels deep"
    assert time.monotonic() - started < 2


def test_html_nesting_limit_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "a.html"
    path.write_text(deep_html(60))
    assert failure(path, Kind.HTML, ExtractionLimits(max_nesting_depth=50)) == "The HTML is nested more than 50 levels deep"
    assert extract(path, Kind.HTML).text == "Deep inside."


def test_too_much_text(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text(prose(40))
    assert failure(path, Kind.TXT, ExtractionLimits(max_characters=1_000)) == (
        "The document has more than 1,000 characters of text; the limit is 1,000"
    )


def test_a_zip_is_not_one_document(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFile, match="iter_zip_documents"):
        extract(make_zip(tmp_path / "a.zip", [("a.txt", b"x")]), Kind.ZIP)


# ---- bulk ZIP uploads -------------------------------------------------------------------------------


def test_bulk_zip_unpacks_documents_and_skips_the_rest(tmp_path: Path) -> None:
    inner_pdf = make_pdf(tmp_path / "inner.pdf", ["Inner page"]).read_bytes()
    nested = make_zip(tmp_path / "nested.zip", [("x.txt", b"x")]).read_bytes()
    archive = make_zip(tmp_path / "bulk.zip", [
        ("Reports/", b""),
        ("Reports/2024/annual.pdf", inner_pdf),
        ("notes.txt", b"Plain notes"),
        ("Reports\\windows.md", b"# From Windows"),
        ("__MACOSX/Reports/._annual.pdf", b"junk"),
        (".DS_Store", b"junk"),
        ("Reports/.hidden.txt", b"junk"),
        ("~$lock.docx", b"junk"),
        ("archive/older.zip", nested),
    ])
    with unpack_zip(archive) as contents:
        names = [document.name for document in contents.documents]
        assert names == ["Reports/2024/annual.pdf", "notes.txt", "Reports/windows.md"]
        pdf = contents.documents[0]
        assert sniff(pdf.path, pdf.name) is Kind.PDF
        assert extract(pdf.path, Kind.PDF).text == "Inner page"
        assert contents.documents[1].path.read_bytes() == b"Plain notes"
        assert [(s.name, s.reason) for s in contents.skipped] == [
            ("archive/older.zip", "an archive inside the archive; nested archives are not unpacked"),
        ]
        directory = pdf.path.parent
    assert not directory.exists()  # removed when the block ends

    listed = [(name, path.read_bytes()[:5]) for name, path in iter_zip_documents(archive)]
    assert listed == [("Reports/2024/annual.pdf", b"%PDF-"), ("notes.txt", b"Plain"), ("Reports/windows.md", b"# Fro")]


@pytest.mark.parametrize(
    ("member", "fragment"),
    [
        ("../../etc/cron.d/evil", "points outside the archive"),
        ("docs/../../evil.txt", "points outside the archive"),
        ("..\\..\\evil.txt", "points outside the archive"),
        ("/etc/passwd", "absolute path"),
        ("C:/Windows/evil.txt", "absolute path"),
    ],
)
def test_bulk_zip_with_unsafe_names_is_refused_whole(tmp_path: Path, member: str, fragment: str) -> None:
    archive = make_zip(tmp_path / "bulk.zip", [("fine.txt", b"fine"), (member, b"evil")])
    with pytest.raises(ExtractionFailed) as caught:
        with unpack_zip(archive):
            pass
    assert fragment in caught.value.reason and "refused as unsafe" in caught.value.reason
    assert not (tmp_path / "evil.txt").exists()


def test_bulk_zip_bombs(tmp_path: Path) -> None:
    honest = make_zip_bomb(tmp_path / "a.zip", 300_000_000, extra_members=[("ok.txt", b"ok")])
    with pytest.raises(ExtractionFailed, match="The ZIP expands to more than 200 MB when decompressed"):
        with unpack_zip(honest):
            pass
    ratio = make_zip_bomb(tmp_path / "b.zip", 20_000_000)
    with pytest.raises(ExtractionFailed, match="compressed .* to 1"):
        with unpack_zip(ratio):
            pass
    lying = make_zip_bomb(tmp_path / "c.zip", 20_000_000, lie_about_size=True)
    started = time.monotonic()
    with pytest.raises(ExtractionFailed, match="'filler.txt' declares 1,000 bytes .* its headers are forged"):
        with unpack_zip(lying):
            pass
    assert time.monotonic() - started < 2


def test_bulk_zip_member_count_is_read_before_listing(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "many.zip", [(f"f{n}.txt", b"x") for n in range(30)])
    with pytest.raises(ExtractionFailed, match="The ZIP contains 30 files; the limit is 10"):
        with unpack_zip(archive, ExtractionLimits(max_zip_members=10)):
            pass


def test_bulk_zip_skips_encrypted_members(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", [("secret.txt", b"x"), ("open.txt", b"y")])
    data = bytearray(archive.read_bytes())
    # Set the "encrypted" flag of the first member in its local and central headers.
    with zipfile.ZipFile(archive) as reader:
        first = reader.infolist()[0]
    data[first.header_offset + 6] |= 0x1
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x1
    archive.write_bytes(bytes(data))
    with unpack_zip(archive) as contents:
        assert [d.name for d in contents.documents] == ["open.txt"]
        assert [(s.name, s.reason) for s in contents.skipped] == [("secret.txt", "encrypted (password protected)")]


def test_truncated_bulk_zip(tmp_path: Path) -> None:
    archive = truncate(make_zip(tmp_path / "a.zip", [("a.txt", b"hello " * 1000)]), keep=0.5)
    assert sniff(archive, "a.zip") is Kind.ZIP
    with pytest.raises(ExtractionFailed, match="The file is corrupt"):
        with unpack_zip(archive):
            pass
