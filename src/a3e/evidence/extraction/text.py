"""Plain text, Markdown and CSV."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from a3e.evidence.extraction.base import BlockKind, BlockSink, Extracted, ExtractionFailed, ExtractionLimits, Kind
from a3e.evidence.extraction.textcodec import decode_text

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def read_text(path: Path, limits: ExtractionLimits, what: str, declared: str | None = None) -> str:
    size = path.stat().st_size
    # Four bytes per character is the most any encoding we accept needs: a larger file cannot fit.
    if size > 4 * limits.max_characters + 4:
        raise ExtractionFailed(
            f"The document has more than {limits.max_characters:,} characters of text; the limit is {limits.max_characters:,}"
        )
    decoded = decode_text(path.read_bytes(), declared=declared)
    if decoded is None:
        raise ExtractionFailed(f"The file is not readable as text: the {what} contains binary data or an unknown encoding")
    text = decoded[0]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\f", "\n\n")


def extract_txt(path: Path, limits: ExtractionLimits) -> Extracted:
    text = read_text(path, limits, "text file")
    sink = BlockSink(limits)
    for paragraph in _PARAGRAPH_BREAK.split(text):
        sink.add(paragraph, BlockKind.PARAGRAPH)
    return Extracted(Kind.TXT, sink.blocks)


def extract_md(path: Path, limits: ExtractionLimits) -> Extracted:
    """Headings (ATX `#` and setext underlines) and blank-line separated paragraphs; fenced code
    is kept as one paragraph and never read as headings."""
    text = read_text(path, limits, "Markdown file")
    sink = BlockSink(limits)
    paragraph: list[str] = []
    fence: str | None = None

    def flush() -> None:
        if paragraph:
            sink.add("\n".join(paragraph), BlockKind.PARAGRAPH)
            paragraph.clear()

    for line in text.split("\n"):
        if fence is not None:
            paragraph.append(line)
            if line.strip().startswith(fence):
                fence = None
                flush()
            continue
        opening = _FENCE.match(line)
        if opening:
            flush()
            fence = opening.group(1)[0] * 3
            paragraph.append(line)
            continue
        heading = _ATX_HEADING.match(line)
        if heading:
            flush()
            sink.add(heading.group(2) or "", BlockKind.HEADING, level=len(heading.group(1)))
            continue
        underline = _SETEXT_UNDERLINE.match(line)
        if underline and paragraph:
            title = " ".join(part.strip() for part in paragraph)
            paragraph.clear()
            sink.add(title, BlockKind.HEADING, level=1 if underline.group(1)[0] == "=" else 2)
            continue
        if not line.strip():
            flush()
            continue
        paragraph.append(line)
    flush()
    return Extracted(Kind.MD, sink.blocks)


def extract_csv(path: Path, limits: ExtractionLimits) -> Extracted:
    """One block per row; the header row is shown once as it is, and gives every later row its
    context: "Course: BIO 101; Credits: 3"."""
    raw = read_text(path, limits, "CSV file")
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(raw[:65_536], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    sink = BlockSink(limits)
    header: list[str] | None = None
    rows = 0
    try:
        for number, cells in enumerate(csv.reader(io.StringIO(raw, newline=""), dialect), start=1):
            values = [cell.strip() for cell in cells]
            if not any(values):
                continue
            rows += 1
            if rows > limits.max_rows:
                raise ExtractionFailed(f"The CSV has more than {limits.max_rows:,} rows; the limit is {limits.max_rows:,}")
            if header is None:
                header = values
                sink.add(" | ".join(value for value in values if value), BlockKind.ROW, row=number)
                continue
            parts = []
            for index, value in enumerate(values):
                if not value:
                    continue
                name = header[index] if index < len(header) else ""
                parts.append(f"{name}: {value}" if name else value)
            sink.add("; ".join(parts), BlockKind.ROW, row=number)
    except csv.Error as exc:
        raise ExtractionFailed(f"The file is corrupt: the CSV cannot be parsed ({exc})") from None
    return Extracted(Kind.CSV, sink.blocks)
