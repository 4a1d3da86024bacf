"""Type detection, extraction per type (content and locations), and passages with exact offsets."""

from __future__ import annotations

import codecs
import datetime as dt
from pathlib import Path

import pytest

from a3e.evidence.extraction import (
    BLOCK_SEPARATOR,
    NO_TEXT_MESSAGE,
    BlockKind,
    Extracted,
    ExtractionStatus,
    Kind,
    UnsupportedFile,
    extract,
    sniff,
    split_passages,
)
from tests.documents import make_docx, make_pdf, make_scanned_pdf, make_xlsx, make_zip, prose


def check_passages(extracted: Extracted, **options: int) -> list:
    """The invariants every passage list keeps; returns the passages."""
    passages = split_passages(extracted, **options)
    text = extracted.text
    maximum = options.get("max_chars", 1600)
    for ordinal, passage in enumerate(passages):
        assert passage.ordinal == ordinal
        assert text[passage.char_start : passage.char_end] == passage.text
        assert passage.text == passage.text.strip() and passage.text
        assert len(passage.text) <= maximum
        # Never cut inside a word: each end is at the text's edge or next to whitespace.
        assert passage.char_start == 0 or text[passage.char_start - 1].isspace()
        assert passage.char_end == len(text) or text[passage.char_end].isspace()
    starts = [passage.char_start for passage in passages]
    assert starts == sorted(starts)
    assert split_passages(extracted, **options) == passages  # stable
    return passages


def write(path: Path, data: str | bytes, encoding: str = "utf-8") -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode(encoding))
    return path


# ---- sniff ----------------------------------------------------------------------------------


def test_sniff_tells_every_supported_kind_by_content(tmp_path: Path) -> None:
    files = {
        "report.pdf": make_pdf(tmp_path / "a", ["Hello"]),
        "report.docx": make_docx(tmp_path / "b", [("p", "Hello")]),
        "budget.xlsx": make_xlsx(tmp_path / "c", {"Budget": [["a", 1]]}),
        "bundle.zip": make_zip(tmp_path / "d", [("a.txt", b"hello")]),
        "notes.txt": write(tmp_path / "e", "Plain notes\n"),
        "notes.md": write(tmp_path / "f", "# Title\n\nBody\n"),
        "notes.markdown": write(tmp_path / "g", "# Title\n"),
        "rows.csv": write(tmp_path / "h", "a,b\n1,2\n"),
        "page.html": write(tmp_path / "i", "<!DOCTYPE html><html><body><p>Hi</p></body></html>"),
        "page.HTM": write(tmp_path / "j", "<p>Hi</p>"),
    }
    expected = {
        "report.pdf": Kind.PDF, "report.docx": Kind.DOCX, "budget.xlsx": Kind.XLSX, "bundle.zip": Kind.ZIP,
        "notes.txt": Kind.TXT, "notes.md": Kind.MD, "notes.markdown": Kind.MD, "rows.csv": Kind.CSV,
        "page.html": Kind.HTML, "page.HTM": Kind.HTML,
    }
    assert {name: sniff(path, name) for name, path in files.items()} == expected
    # Without an extension the content decides.
    assert sniff(files["report.docx"], "upload") is Kind.DOCX
    assert sniff(files["notes.txt"], "README") is Kind.TXT


@pytest.mark.parametrize(
    ("encoding", "prefix"),
    [("utf-8", b""), ("utf-8", codecs.BOM_UTF8), ("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE), ("cp1252", b"")],
)
def test_text_in_each_encoding_is_text(tmp_path: Path, encoding: str, prefix: bytes) -> None:
    content = "Café résumé – “quoted” naïve\n\nSecond paragraph\n"
    path = write(tmp_path / "x", prefix + content.encode(encoding))
    assert sniff(path, "notes.txt") is Kind.TXT
    extracted = extract(path, Kind.TXT)
    assert [block.text for block in extracted.blocks] == ["Café résumé – “quoted” naïve", "Second paragraph"]


@pytest.mark.parametrize(
    ("name", "maker", "reason"),
    [
        ("report.pdf", lambda p: make_docx(p, [("p", "x")]), "The file is named .pdf but its content is a Word document"),
        ("report.docx", lambda p: make_pdf(p, ["x"]), "The file is named .docx but its content is a PDF document"),
        ("budget.xlsx", lambda p: make_docx(p, [("p", "x")]), "The file is named .xlsx but its content is a Word document"),
        ("notes.txt", lambda p: make_pdf(p, ["x"]), "The file is named .txt but its content is a PDF document"),
        ("notes.txt", lambda p: write(p, b"\x00\x01\x02binary\x00" * 50), "The file is named .txt but its content is binary data, not text"),
        ("notes.csv", lambda p: write(p, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64), "The file is named .csv but its content is an image (PNG)"),
        ("report.pdf", lambda p: write(p, "just some words\n"), "The file is named .pdf but its content is plain text"),
        ("page.html", lambda p: write(p, "no markup at all, only words\n"), "The file is named .html but its content is plain text, not HTML"),
        ("bundle.zip", lambda p: make_xlsx(p, {"S": [["a"]]}), "The file is named .zip but its content is an Excel workbook"),
    ],
)
def test_a_lying_extension_is_refused_with_a_plain_reason(tmp_path: Path, name: str, maker, reason: str) -> None:
    path = maker(tmp_path / "upload")
    with pytest.raises(UnsupportedFile) as caught:
        sniff(path, name)
    assert caught.value.reason == reason
    assert caught.value.status_code == 415 and caught.value.code == "unsupported_file"


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("photo.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "Files of type .png are not supported"),
        ("setup.exe", b"MZ\x90\x00" + b"\x00" * 64, "Files of type .exe are not supported"),
        ("old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64, "Word 97–2003 (.doc) files are not supported"),
        ("upload", b"MZ\x90\x00" + b"\x00" * 64, "The file's content is a Windows program, which is not supported"),
        ("slides.pptx", b"PK\x03\x04", "PowerPoint files are not supported"),
        ("empty.txt", b"", "The file is empty"),
    ],
)
def test_unsupported_types_are_refused(tmp_path: Path, name: str, content: bytes, fragment: str) -> None:
    path = write(tmp_path / "upload", content)
    with pytest.raises(UnsupportedFile) as caught:
        sniff(path, name)
    assert fragment in caught.value.reason


def test_a_renamed_powerpoint_is_named_for_what_it_is(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "p", [("[Content_Types].xml", b"<Types/>"), ("ppt/presentation.xml", b"<p/>")])
    with pytest.raises(UnsupportedFile, match="content is a PowerPoint presentation"):
        sniff(path, "deck.docx")


# ---- PDF ------------------------------------------------------------------------------------


def test_pdf_has_one_block_per_page_and_passages_never_cross_pages(tmp_path: Path) -> None:
    pages = [prose(4, 0), prose(40, 1), "Short closing page."]
    path = make_pdf(tmp_path / "a.pdf", pages)
    extracted = extract(path, Kind.PDF)
    assert extracted.status is ExtractionStatus.OK and extracted.message is None
    assert extracted.page_count == 3
    assert [block.page for block in extracted.blocks] == [1, 2, 3]
    assert all(block.kind is BlockKind.PAGE for block in extracted.blocks)
    assert extracted.blocks[2].text == "Short closing page."
    assert " ".join(extracted.blocks[0].text.split()) == pages[0]
    assert extracted.text == BLOCK_SEPARATOR.join(block.text for block in extracted.blocks)

    passages = check_passages(extracted)
    assert [p.page for p in passages][0] == 1 and passages[-1].page == 3
    assert {p.location for p in passages} == {"p. 1", "p. 2", "p. 3"}
    page_two = [p for p in passages if p.page == 2]
    assert len(page_two) >= 3  # a long page is split, on sentence boundaries
    assert all(p.text.endswith(".") for p in page_two)
    for passage in passages:
        block = extracted.blocks[passage.page - 1]
        start = extracted.block_starts[passage.page - 1]
        assert start <= passage.char_start and passage.char_end <= start + len(block.text)


def test_scanned_pdf_is_a_successful_extraction_with_no_text(tmp_path: Path) -> None:
    path = make_scanned_pdf(tmp_path / "scan.pdf", ["Faculty roster\nPage one", "Page two"])
    assert sniff(path, "scan.pdf") is Kind.PDF
    extracted = extract(path, Kind.PDF)
    assert extracted.status is ExtractionStatus.NO_TEXT
    assert extracted.message == NO_TEXT_MESSAGE == "no text found — scanned document?"
    assert extracted.page_count == 2 and extracted.pages_without_text == [1, 2]
    assert extracted.blocks == [] and split_passages(extracted) == []


def test_pdf_with_a_blank_page_reports_it(tmp_path: Path) -> None:
    extracted = extract(make_pdf(tmp_path / "a.pdf", ["Text here.", "", "More text."]), Kind.PDF)
    assert extracted.status is ExtractionStatus.OK
    assert extracted.pages_without_text == [2]
    assert [block.page for block in extracted.blocks] == [1, 3]


# ---- DOCX -----------------------------------------------------------------------------------


def test_docx_headings_paragraphs_and_tables(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "a.docx", [
        ("title", "Self-Study Report"),
        ("h1", "Faculty"),
        ("p", "Intro to the faculty section."),
        ("h2", "Qualifications"),
        ("p", prose(10)),
        ("table", [["Name", "Degree", "Discipline"], ["A. Smith", "PhD", "Biology"], ["", "", ""], ["B. Jones", "MS", "Chemistry"]]),
        ("h2", "Workload"),
        ("p", "Full-time faculty teach twelve credit hours.\tEach term."),
        ("h1", "Finances"),
        ("p", "Audited statements are attached."),
    ])
    extracted = extract(path, Kind.DOCX)
    summary = [(block.kind.value, block.level, block.text[:30]) for block in extracted.blocks]
    assert summary[:5] == [
        ("heading", 1, "Self-Study Report"),
        ("heading", 1, "Faculty"),
        ("paragraph", None, "Intro to the faculty section."),
        ("heading", 2, "Qualifications"),
        ("paragraph", None, prose(10)[:30]),
    ]
    rows = [block for block in extracted.blocks if block.kind is BlockKind.ROW]
    assert [(row.table, row.row, row.text) for row in rows] == [
        (1, 1, "Name | Degree | Discipline"), (1, 2, "A. Smith | PhD | Biology"), (1, 3, "B. Jones | MS | Chemistry"),
    ]
    assert "Full-time faculty teach twelve credit hours.\tEach term." in extracted.text

    passages = check_passages(extracted, target_chars=400, max_chars=700)
    by_heading = {p.heading for p in passages}
    assert "Faculty > Qualifications" in by_heading
    assert "Finances" in by_heading
    qualification = next(p for p in passages if p.heading == "Faculty > Qualifications")
    assert qualification.location == "§ Qualifications"
    assert qualification.text.startswith("Qualifications")  # a heading opens its passage
    assert qualification.page is None
    finances = [p for p in passages if "Audited statements" in p.text][0]
    assert finances.heading == "Finances" and finances.text.startswith("Finances")


def test_docx_heading_styles_are_found_through_based_on_chains(tmp_path: Path) -> None:
    from docx import Document
    from docx.enum.style import WD_STYLE_TYPE

    document = Document()
    custom = document.styles.add_style("Chapter Title", WD_STYLE_TYPE.PARAGRAPH)
    custom.base_style = document.styles["Heading 2"]
    document.add_paragraph("Custom heading", style="Chapter Title")
    document.add_paragraph("Body text.")
    document.save(str(tmp_path / "a.docx"))
    blocks = extract(tmp_path / "a.docx", Kind.DOCX).blocks
    assert [(b.kind, b.level, b.text) for b in blocks] == [
        (BlockKind.HEADING, 2, "Custom heading"), (BlockKind.PARAGRAPH, None, "Body text."),
    ]


# ---- XLSX -----------------------------------------------------------------------------------


def test_xlsx_rows_per_sheet_with_locations_and_dates(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "a.xlsx", {
        "Budget": [
            ["Item", "Amount", "Approved"],
            ["Library", 1200, dt.date(2024, 7, 15)],
            [None, None, None],
            ["Labs", 3400.5, dt.datetime(2024, 8, 1, 13, 30)],
            ["Total", 4600.5, True],
        ],
        "Notes": [["Prepared by the budget office"]],
    })
    extracted = extract(path, Kind.XLSX)
    assert [(b.sheet, b.row, b.text) for b in extracted.blocks] == [
        ("Budget", 1, "Item | Amount | Approved"),
        ("Budget", 2, "Library | 1200 | 2024-07-15"),
        ("Budget", 4, "Labs | 3400.5 | 2024-08-01 13:30"),
        ("Budget", 5, "Total | 4600.5 | TRUE"),
        ("Notes", 1, "Prepared by the budget office"),
    ]
    passages = check_passages(extracted)
    assert [(p.location, p.heading) for p in passages] == [
        ("Sheet 'Budget', rows 1–5", "Budget"), ("Sheet 'Notes', row 1", "Notes"),
    ]


def test_xlsx_many_rows_split_into_row_ranges(tmp_path: Path) -> None:
    rows = [["Course", "Title", "Credits"]] + [[f"BIO {100 + n}", f"Biology topic number {n}", 3] for n in range(200)]
    extracted = extract(make_xlsx(tmp_path / "a.xlsx", {"Catalog": rows}), Kind.XLSX)
    passages = check_passages(extracted, target_chars=500, max_chars=800)
    assert len(passages) > 5
    assert passages[0].location.startswith("Sheet 'Catalog', rows 1–")
    assert passages[-1].location.endswith("201")


# ---- text, Markdown, CSV, HTML ----------------------------------------------------------------


def test_txt_paragraphs(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "First paragraph\nstill first.\r\n\r\n\r\nSecond.\f Third after a form feed.\n")
    extracted = extract(path, Kind.TXT)
    assert [b.text for b in extracted.blocks] == ["First paragraph\nstill first.", "Second.", "Third after a form feed."]
    passages = check_passages(extracted)
    assert [p.location for p in passages] == ["¶ 1–3"]


def test_markdown_headings_paragraphs_and_code(tmp_path: Path) -> None:
    text = (
        "Mission\n=======\n\nWe serve students.\n\n## Goals ##\n\n- one\n- two\n\n"
        "```\n# not a heading\n```\n\nSetext two\n----------\nBody.\n"
    )
    extracted = extract(write(tmp_path / "a.md", text), Kind.MD)
    assert [(b.kind.value, b.level, b.text) for b in extracted.blocks] == [
        ("heading", 1, "Mission"),
        ("paragraph", None, "We serve students."),
        ("heading", 2, "Goals"),
        ("paragraph", None, "- one\n- two"),
        ("paragraph", None, "```\n# not a heading\n```"),
        ("heading", 2, "Setext two"),
        ("paragraph", None, "Body."),
    ]
    passages = check_passages(extracted)
    assert [(p.heading, p.location) for p in passages] == [
        ("Mission", "§ Mission"), ("Mission > Goals", "§ Goals"), ("Mission > Setext two", "§ Setext two"),
    ]


def test_csv_rows_carry_the_header_as_context(tmp_path: Path) -> None:
    text = 'Course,Title,Credits\nBIO 101,"Intro, Biology",4\n\nCHEM 110,"General\nChemistry",\n'
    extracted = extract(write(tmp_path / "a.csv", text), Kind.CSV)
    assert [(b.row, b.text) for b in extracted.blocks] == [
        (1, "Course | Title | Credits"),
        (2, "Course: BIO 101; Title: Intro, Biology; Credits: 4"),
        (4, "Course: CHEM 110; Title: General\nChemistry"),
    ]
    assert [p.location for p in check_passages(extracted)] == ["rows 1–4"]


def test_csv_with_semicolons(tmp_path: Path) -> None:
    extracted = extract(write(tmp_path / "a.csv", "Name;Score\nAda;9\nBob;7\n"), Kind.CSV)
    assert [b.text for b in extracted.blocks] == ["Name | Score", "Name: Ada; Score: 9", "Name: Bob; Score: 7"]


def test_html_headings_paragraphs_tables_and_no_scripts(tmp_path: Path) -> None:
    html = """<!DOCTYPE html><html><head><title>Ignored title</title><style>p{color:red}</style>
    <script>var secret = "do not index";</script></head><body>
    <nav>Home | About</nav>
    <h1>Assessment</h1><p>Programs assess   <b>learning</b>
    outcomes annually.</p><div>Loose text in a div<br>with a break</div>
    <h2>Results</h2><table><tr><th>Program</th><th>Met</th></tr><tr><td>Biology</td><td>Yes</td></tr></table>
    <ul><li>First point</li><li>Second point</li></ul><noscript>Enable JS</noscript>
    </body></html>"""
    extracted = extract(write(tmp_path / "a.html", html), Kind.HTML)
    assert [(b.kind.value, b.level, b.text) for b in extracted.blocks] == [
        ("paragraph", None, "Home | About"),
        ("heading", 1, "Assessment"),
        ("paragraph", None, "Programs assess learning outcomes annually."),
        ("paragraph", None, "Loose text in a div with a break"),
        ("heading", 2, "Results"),
        ("row", None, "Program | Met"),
        ("row", None, "Biology | Yes"),
        ("paragraph", None, "First point"),
        ("paragraph", None, "Second point"),
    ]
    assert "secret" not in extracted.text and "Ignored title" not in extracted.text and "color" not in extracted.text
    rows = [b for b in extracted.blocks if b.kind is BlockKind.ROW]
    assert [(b.table, b.row) for b in rows] == [(1, 1), (1, 2)]
    passages = check_passages(extracted)
    assert [p.heading for p in passages] == [None, "Assessment", "Assessment > Results"]


def test_html_in_a_declared_legacy_charset(tmp_path: Path) -> None:
    html = '<html><head><meta charset="iso-8859-1"></head><body><p>Caf\xe9 cr\xe8me</p></body></html>'
    path = write(tmp_path / "a.html", html, encoding="latin-1")
    assert sniff(path, "a.html") is Kind.HTML
    assert extract(path, Kind.HTML).text == "Café crème"


# ---- passages -----------------------------------------------------------------------------------


def test_passages_split_long_unbroken_text_between_words(tmp_path: Path) -> None:
    words = " ".join(f"word{n}" for n in range(3000))  # no sentence ends, no line breaks
    extracted = extract(write(tmp_path / "a.txt", words), Kind.TXT)
    passages = check_passages(extracted, target_chars=500, max_chars=800)
    assert len(passages) >= 19
    assert " ".join(p.text for p in passages) == words


def test_passages_cut_a_single_giant_token_only_when_nothing_else_is_possible(tmp_path: Path) -> None:
    blob = "A" * 5000
    extracted = extract(write(tmp_path / "a.txt", f"Intro sentence.\n\n{blob}\n\nOutro."), Kind.TXT)
    passages = split_passages(extracted, target_chars=500, max_chars=800)
    assert all(len(p.text) <= 800 for p in passages)
    pieces = [p.text.replace("Intro sentence.", "").replace("Outro.", "").strip() for p in passages]
    assert "".join(pieces) == blob
    for passage in passages:
        assert extracted.text[passage.char_start : passage.char_end] == passage.text


def test_passage_options_are_validated() -> None:
    with pytest.raises(ValueError):
        split_passages(Extracted(Kind.TXT, []), target_chars=900, max_chars=500)


def test_extracted_round_trips_through_its_dict_form(tmp_path: Path) -> None:
    extracted = extract(make_docx(tmp_path / "a.docx", [("h1", "A"), ("p", "b"), ("table", [["c", "d"]])]), Kind.DOCX)
    again = Extracted.from_dict(extracted.to_dict())
    assert again == extracted and again.text == extracted.text


def test_docx_tracked_changes_text_boxes_and_hyperlinks(tmp_path: Path) -> None:
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    xml = f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="{w}" xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"
  xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape"><w:body>
<w:p><w:pPr><w:pStyle w:val="Heading1"/><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr><w:r><w:t>Mission</w:t></w:r></w:p>
<w:p><w:r><w:t xml:space="preserve">We </w:t></w:r><w:ins><w:r><w:t>proudly </w:t></w:r></w:ins><w:del><w:r><w:delText>barely </w:delText></w:r></w:del>
<w:r><w:t>serve</w:t><w:tab/><w:t>students</w:t><w:br/><w:t>of the region, see </w:t></w:r>
<w:hyperlink><w:r><w:t>our site</w:t></w:r></w:hyperlink><w:moveFrom><w:r><w:t>moved away</w:t></w:r></w:moveFrom><w:r><w:t>.</w:t></w:r></w:p>
<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing><wps:txbx><w:txbxContent>
<w:p><w:r><w:t>Text box words</w:t></w:r></w:p></w:txbxContent></wps:txbx></w:drawing></mc:Choice>
<mc:Fallback><w:pict><w:txbxContent><w:p><w:r><w:t>Text box words</w:t></w:r></w:p></w:txbxContent></w:pict></mc:Fallback>
</mc:AlternateContent></w:r><w:r><w:t>Anchor paragraph</w:t></w:r></w:p>
<w:p><w:pPr><w:outlineLvl w:val="2"/></w:pPr><w:r><w:t>Outline level three</w:t></w:r></w:p>
</w:body></w:document>""".encode()
    from tests.documents import replace_zip_member

    path = replace_zip_member(make_docx(tmp_path / "a.docx", [("p", "x")]), "word/document.xml", xml)
    blocks = [(b.kind.value, b.level, b.text) for b in extract(path, Kind.DOCX).blocks]
    assert blocks == [
        ("heading", 1, "Mission"),
        ("paragraph", None, "We proudly serve\tstudents\nof the region, see our site."),
        ("paragraph", None, "Text box words"),
        ("paragraph", None, "Anchor paragraph"),
        ("heading", 3, "Outline level three"),
    ]


def test_an_absurdly_long_heading_is_split_like_text(tmp_path: Path) -> None:
    html = f"<h1>{prose(40)}</h1><p>After.</p>"
    extracted = extract(write(tmp_path / "a.html", html), Kind.HTML)
    assert extracted.blocks[0].kind is BlockKind.HEADING
    passages = check_passages(extracted, target_chars=500, max_chars=800)
    assert len(passages) > 3
