"""The real type of an upload, from its content; the name's extension must agree."""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePath

from a3e.evidence.extraction.base import Kind, UnsupportedFile
from a3e.evidence.extraction.textcodec import decode_text, declared_html_charset, looks_like_html
from a3e.evidence.extraction.zipsafe import declared_member_count

HEAD_BYTES = 65_536
# Past this many members we do not list a ZIP's directory here (extraction refuses it anyway).
_SNIFF_MAX_MEMBERS = 100_000
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

EXTENSION_KINDS: dict[str, Kind] = {
    ".pdf": Kind.PDF,
    ".docx": Kind.DOCX,
    ".xlsx": Kind.XLSX,
    ".csv": Kind.CSV,
    ".txt": Kind.TXT,
    ".md": Kind.MD,
    ".markdown": Kind.MD,
    ".html": Kind.HTML,
    ".htm": Kind.HTML,
    ".zip": Kind.ZIP,
}
TEXT_KINDS = frozenset({Kind.CSV, Kind.TXT, Kind.MD, Kind.HTML})
KIND_NAMES: dict[Kind, str] = {
    Kind.PDF: "a PDF document",
    Kind.DOCX: "a Word document",
    Kind.XLSX: "an Excel workbook",
    Kind.ZIP: "a ZIP archive",
}
SUPPORTED = "PDF, Word (.docx), Excel (.xlsx), CSV, text (.txt), Markdown (.md), HTML and ZIP"
_LEGACY_OFFICE = {
    ".doc": "Word 97–2003 (.doc) files are not supported; save the document as .docx or PDF and upload that",
    ".xls": "Excel 97–2003 (.xls) files are not supported; save the workbook as .xlsx and upload that",
    ".ppt": "PowerPoint files are not supported; save the presentation as PDF and upload that",
    ".pptx": "PowerPoint files are not supported; save the presentation as PDF and upload that",
}
_MAGIC: list[tuple[bytes, str]] = [
    (b"\x89PNG\r\n\x1a\n", "an image (PNG)"),
    (b"\xff\xd8\xff", "an image (JPEG)"),
    (b"GIF87a", "an image (GIF)"),
    (b"GIF89a", "an image (GIF)"),
    (b"II*\x00", "an image (TIFF)"),
    (b"MM\x00*", "an image (TIFF)"),
    (b"BM", "an image (BMP)"),
    (OLE2_MAGIC, "a legacy Microsoft Office file (Office 97–2003) or a password-protected Office file"),
    (b"MZ", "a Windows program"),
    (b"\x7fELF", "a program (ELF)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"{\\rtf", "an RTF document"),
    (b"%!PS", "a PostScript file"),
]


class _Content:
    """What the bytes are: a kind we read, or a description of what they are instead."""

    def __init__(self, kind: Kind | None, description: str, *, text: str | None = None, damaged_zip: bool = False) -> None:
        self.kind = kind
        self.description = description
        self.text = text  # the decoded head, when the content is text
        self.damaged_zip = damaged_zip


def sniff(path: Path, filename: str) -> Kind:
    """The kind of document at `path`, uploaded as `filename`. Raises UnsupportedFile with a
    plain-English reason when the type is not supported or the name and content disagree."""
    extension = PurePath(filename).suffix.lower()
    if extension in _LEGACY_OFFICE:
        raise UnsupportedFile(_LEGACY_OFFICE[extension])
    if extension and extension not in EXTENSION_KINDS:
        raise UnsupportedFile(f"Files of type {extension} are not supported; supported types are {SUPPORTED}")
    named = EXTENSION_KINDS.get(extension)
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
        complete = len(head) < HEAD_BYTES or handle.read(1) == b""
    if not head:
        raise UnsupportedFile("The file is empty")
    content = _content_of(path, head, complete, named)

    if named is None:  # no extension: the content decides
        if content.kind is None:
            raise UnsupportedFile(f"The file's content is {content.description}, which is not supported; supported types are {SUPPORTED}")
        return content.kind
    if content.text is not None:
        if named not in TEXT_KINDS:
            raise UnsupportedFile(f"The file is named {extension} but its content is plain text")
        if named is Kind.HTML and not looks_like_html(content.text):
            raise UnsupportedFile(f"The file is named {extension} but its content is plain text, not HTML")
        return named
    if content.kind is named:
        return named
    if content.damaged_zip and named in (Kind.DOCX, Kind.XLSX, Kind.ZIP):
        return named  # extraction reports the damage precisely
    if content.description.startswith("a legacy Microsoft Office") and named in (Kind.DOCX, Kind.XLSX):
        return named  # a password-protected .docx/.xlsx is an OLE2 container; extraction says so
    raise UnsupportedFile(f"The file is named {extension} but its content is {content.description}")


def _content_of(path: Path, head: bytes, complete: bool, named: Kind | None) -> _Content:
    if b"%PDF-" in head[:1024]:
        return _Content(Kind.PDF, KIND_NAMES[Kind.PDF])
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return _zip_content(path)
    for magic, description in _MAGIC:
        if head.startswith(magic):
            return _Content(None, description)
    if head[8:12] == b"WEBP" and head.startswith(b"RIFF"):
        return _Content(None, "an image (WebP)")
    declared = declared_html_charset(head) if named is Kind.HTML else None
    decoded = decode_text(head, complete=complete, declared=declared)
    if decoded is None:
        return _Content(None, "binary data, not text")
    return _Content(Kind.TXT, "text", text=decoded[0])


def _zip_content(path: Path) -> _Content:
    count = declared_member_count(path)
    if count is None:
        return _Content(None, "a damaged ZIP-based file", damaged_zip=True)
    if count > _SNIFF_MAX_MEMBERS:
        return _Content(Kind.ZIP, KIND_NAMES[Kind.ZIP], damaged_zip=True)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            mimetype = b""
            if "mimetype" in names:
                with archive.open("mimetype") as member:
                    mimetype = member.read(100)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError, RuntimeError):
        return _Content(None, "a damaged ZIP-based file", damaged_zip=True)
    if "[Content_Types].xml" in names or "word/document.xml" in names or "xl/workbook.xml" in names:
        if "word/document.xml" in names:
            return _Content(Kind.DOCX, KIND_NAMES[Kind.DOCX])
        if "xl/workbook.xml" in names:
            return _Content(Kind.XLSX, KIND_NAMES[Kind.XLSX])
        if "ppt/presentation.xml" in names:
            return _Content(None, "a PowerPoint presentation")
        return _Content(None, "an Office document of an unsupported kind")
    if mimetype.startswith(b"application/vnd.oasis.opendocument"):
        return _Content(None, "an OpenDocument file (LibreOffice/OpenOffice)")
    if mimetype.startswith(b"application/epub"):
        return _Content(None, "an EPUB e-book")
    return _Content(Kind.ZIP, KIND_NAMES[Kind.ZIP])
