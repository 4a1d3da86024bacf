"""Real documents for tests, generated on the spot: text and scanned PDFs, encrypted PDFs, DOCX,
XLSX, ZIPs, and hostile files (decompression bombs, lying headers, dimension bombs, deep nesting).

Every generator writes to the path it is given and returns it. Reusable by any test:

    make_pdf(path, ["page one text", "page two text"])
    make_docx(path, [("h1", "Faculty"), ("p", "All faculty hold …"), ("table", [["Name", "Degree"], …])])
    make_xlsx(path, {"Budget": [["Item", "Amount"], ["Library", 1200]]})
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PROSE = (
    "The institution maintains a systematic process for evaluating the qualifications of its faculty. "
    "Each academic department reviews credentials against the discipline's expectations before appointment, "
    "and the provost's office verifies official transcripts for every instructor of record. "
    "Faculty who teach general education courses hold a master's degree with at least eighteen graduate "
    "semester hours in the teaching discipline. Exceptions are documented with evidence of professional "
    "experience, licensure or continuous documented excellence in teaching. "
)


def prose(sentences: int, seed: int = 0) -> str:
    """Realistic accreditation-style prose of about `sentences` sentences (varied by `seed`)."""
    parts = [part.strip() + "." for part in PROSE.split(".") if part.strip()]
    return " ".join(parts[(seed + index) % len(parts)] for index in range(sentences))


# ---- PDF ------------------------------------------------------------------------------------


def make_pdf(path: Path, pages: Sequence[str], *, font_size: int = 11) -> Path:
    """A PDF with a real text layer: one page per string (long text wraps on its page)."""
    from fpdf import FPDF

    pdf = FPDF(format="letter")
    pdf.set_auto_page_break(False)
    pdf.set_font("Helvetica", size=font_size)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, font_size * 0.45, text.encode("latin-1", "replace").decode("latin-1"))
    pdf.output(str(path))
    return path


def make_scanned_pdf(path: Path, pages: Sequence[str]) -> Path:
    """A PDF whose pages are images of text (as a scanner makes them): no text layer at all."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    pdf = FPDF(format="letter")
    pdf.set_auto_page_break(False)
    for text in pages:
        image = Image.new("L", (850, 1100), color=255)
        draw = ImageDraw.Draw(image)
        for number, line in enumerate(text.splitlines() or [text]):
            draw.text((60, 60 + 20 * number), line, fill=0)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        buffer.seek(0)
        pdf.add_page()
        pdf.image(buffer, x=0, y=0, w=pdf.w, h=pdf.h)
    pdf.output(str(path))
    return path


def make_encrypted_pdf(path: Path, pages: Sequence[str], password: str = "secret") -> Path:
    """A text PDF that cannot be opened without `password`."""
    from pypdf import PdfWriter

    make_pdf(path, pages)
    writer = PdfWriter(clone_from=str(path))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="RC4-128")
    encrypted = io.BytesIO()
    writer.write(encrypted)
    path.write_bytes(encrypted.getvalue())
    return path


def make_pdf_claiming_pages(path: Path, claimed: int = 1_000_000) -> Path:
    """A one-page PDF whose page tree claims `claimed` pages (PDF readers believe /Count)."""
    make_pdf(path, ["The only real page."])
    data = path.read_bytes()
    assert data.count(b"/Count 1") == 1
    path.write_bytes(data.replace(b"/Count 1", b"/Count %d" % claimed))
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut the file to a fraction of its size (a broken upload)."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


# ---- DOCX -----------------------------------------------------------------------------------


def make_docx(path: Path, blocks: Iterable[tuple[str, Any]]) -> Path:
    """A Word document from ("h1".."h9", text), ("title", text), ("p", text) and
    ("table", [[cell, …], …]) items, in order."""
    from docx import Document

    document = Document()
    for kind, content in blocks:
        if kind == "title":
            document.add_heading(content, level=0)
        elif kind.startswith("h") and kind[1:].isdigit():
            document.add_heading(content, level=int(kind[1:]))
        elif kind == "p":
            document.add_paragraph(content)
        elif kind == "table":
            rows = list(content)
            table = document.add_table(rows=len(rows), cols=max(len(row) for row in rows))
            for row_cells, row in zip(table.rows, rows):
                for cell, value in zip(row_cells.cells, row):
                    cell.text = str(value)
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    document.save(str(path))
    return path


def replace_zip_member(path: Path, member: str, data: bytes) -> Path:
    """Rewrite the ZIP at `path` with `member` replaced (or added)."""
    with zipfile.ZipFile(path) as source:
        items = [(info, source.read(info)) for info in source.infolist() if info.filename != member]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info, content in items:
            target.writestr(info, content)
        target.writestr(member, data)
    return path


# ---- XLSX -----------------------------------------------------------------------------------


def make_xlsx(path: Path, sheets: dict[str, Sequence[Sequence[Any]]]) -> Path:
    """An Excel workbook: sheet name → rows of values (str, int, float, date, datetime, bool, None)."""
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.remove(workbook.active)
    for name, rows in sheets.items():
        sheet = workbook.create_sheet(title=name)
        for row in rows:
            sheet.append(list(row))
    workbook.save(str(path))
    return path


_XLSX_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    "</Types>"
)
_XLSX_ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
    "</Relationships>"
)
_XLSX_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="{name}" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_XLSX_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>'
    "</Relationships>"
)


def make_raw_xlsx(path: Path, sheet_xml: str, sheet_name: str = "Data") -> Path:
    """A one-sheet workbook whose worksheet XML is exactly `sheet_xml` (inline strings, no styles)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _XLSX_CONTENT_TYPES)
        archive.writestr("_rels/.rels", _XLSX_ROOT_RELS)
        archive.writestr("xl/workbook.xml", _XLSX_WORKBOOK.format(name=sheet_name))
        archive.writestr("xl/_rels/workbook.xml.rels", _XLSX_WORKBOOK_RELS)
        archive.writestr("xl/worksheets/sheet1.xml", sheet_xml)
    return path


def sheet_xml(rows: dict[int, Sequence[str]], dimension: str | None = None) -> str:
    """Worksheet XML with inline-string cells at the given row numbers."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">']
    if dimension:
        parts.append(f'<dimension ref="{dimension}"/>')
    parts.append("<sheetData>")
    for number, values in rows.items():
        cells = "".join(
            f'<c r="{chr(65 + column)}{number}" t="inlineStr"><is><t>{value}</t></is></c>' for column, value in enumerate(values)
        )
        parts.append(f'<row r="{number}">{cells}</row>')
    parts.append("</sheetData></worksheet>")
    return "".join(parts)


def make_dimension_bomb_xlsx(path: Path) -> Path:
    """Declares the whole grid (A1:XFD1048576) and fills the first and the very last row."""
    rows = {1: ["Header", "Value"], 1_048_576: ["Last row", "42"]}
    return make_raw_xlsx(path, sheet_xml(rows, dimension="A1:XFD1048576"))


# ---- ZIP ------------------------------------------------------------------------------------


def make_zip(path: Path, members: Iterable[tuple[str, bytes]]) -> Path:
    """A ZIP with members named exactly as given (names like "../x" or "/etc/x" are kept as is)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def deflate_repeated(prefix: bytes, unit: bytes, repeats: int, suffix: bytes) -> tuple[bytes, int, int]:
    """A raw deflate stream of prefix + unit*repeats + suffix, built without compressing every
    repetition (a full flush makes each repetition's compressed form identical), with its CRC-32
    and uncompressed size."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeated = compressor.compress(unit) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.compress(suffix) + compressor.flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    for _ in range(repeats):
        crc = zlib.crc32(unit, crc)
    crc = zlib.crc32(suffix, crc)
    return head + repeated * repeats + tail, crc, len(prefix) + len(unit) * repeats + len(suffix)


def write_raw_zip(path: Path, members: Sequence[tuple[str, bytes, int, int, int]]) -> Path:
    """A ZIP from already-deflated members: (name, deflated data, crc, uncompressed size to
    declare, compressed size). The declared sizes are written as given, true or not."""
    out = io.BytesIO()
    central = []
    for name, data, crc, declared_size, _ in members:
        encoded = name.encode()
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), declared_size, len(encoded), 0))
        out.write(encoded)
        out.write(data)
        central.append(
            struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), declared_size,
                        len(encoded), 0, 0, 0, 0, 0, offset) + encoded
        )
    start = out.tell()
    for entry in central:
        out.write(entry)
    size = out.tell() - start
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), size, start, 0))
    path.write_bytes(out.getvalue())
    return path


def _bomb_member(name: str, uncompressed_bytes: int, lie_about_size: bool, prefix: bytes = b"", suffix: bytes = b""):
    unit = b" " * 1_048_576
    repeats = max(1, (uncompressed_bytes - len(prefix) - len(suffix)) // len(unit))
    data, crc, size = deflate_repeated(prefix, unit, repeats, suffix)
    declared = 1_000 if lie_about_size else size
    return name, data, crc, declared, len(data)


def make_zip_bomb(path: Path, uncompressed_bytes: int = 300_000_000, *, lie_about_size: bool = False,
                  extra_members: Sequence[tuple[str, bytes]] = ()) -> Path:
    """A small ZIP holding one member ("filler.txt") that inflates to `uncompressed_bytes` of
    spaces; with lie_about_size, its headers claim 1,000 bytes."""
    members = [_plain_member(name, data) for name, data in extra_members]
    members.append(_bomb_member("filler.txt", uncompressed_bytes, lie_about_size))
    return write_raw_zip(path, members)


def _plain_member(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    deflated = compressor.compress(data) + compressor.flush()
    return name, deflated, zlib.crc32(data), len(data), len(deflated)


def make_zip_bomb_docx(path: Path, uncompressed_bytes: int = 300_000_000, *, lie_about_size: bool = False) -> Path:
    """A real DOCX whose word/document.xml inflates to `uncompressed_bytes` (whitespace inside a
    paragraph, so it is even well-formed); about 300 KB on disk for 300 MB."""
    template = make_docx(path, [("p", "placeholder")])
    with zipfile.ZipFile(template) as source:
        others = [(info.filename, source.read(info)) for info in source.infolist() if info.filename != "word/document.xml"]
    prefix = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
              b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>')
    suffix = b"</w:t></w:r></w:p></w:body></w:document>"
    members = [_plain_member(name, data) for name, data in others]
    members.append(_bomb_member("word/document.xml", uncompressed_bytes, lie_about_size, prefix, suffix))
    return write_raw_zip(path, members)


# ---- HTML -----------------------------------------------------------------------------------


def deep_html(depth: int) -> str:
    """An HTML page with `depth` nested <div> elements around one sentence."""
    return "<html><body>" + "<div>" * depth + "<p>Deep inside.</p>" + "</div>" * depth + "</body></html>"
