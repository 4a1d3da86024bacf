"""DOCX: headings (with level), paragraphs and table rows, streamed from word/document.xml with
lxml's iterparse (faster than python-docx and bounded in memory: each body element is dropped
once read)."""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from a3e.evidence.extraction.base import BlockKind, BlockSink, Extracted, ExtractionFailed, ExtractionLimits, Kind
from a3e.evidence.extraction.sniff import OLE2_MAGIC
from a3e.evidence.extraction.xmlsafe import iter_xml, parse_xml
from a3e.evidence.extraction.zipsafe import ByteBudget, CountingReader, open_checked_zip

_NAMESPACES = (
    "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
    "http://purl.oclc.org/ooxml/wordprocessingml/main",  # Strict OOXML
)
# Skipped whole: mc:Fallback repeats what mc:Choice holds; moveFrom is text moved elsewhere (tracked changes).
_SKIPPED = frozenset(
    {"{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"}
    | {f"{{{ns}}}moveFrom" for ns in _NAMESPACES}
)
_LOCAL = ("p", "r", "t", "tab", "br", "cr", "noBreakHyphen", "pStyle", "outlineLvl", "tbl", "tr", "tc", "body")
_TAGS: dict[str, str] = {f"{{{ns}}}{name}": name for ns in _NAMESPACES for name in _LOCAL}
_VAL = tuple(f"{{{ns}}}val" for ns in _NAMESPACES)
_HEADING_NAME = re.compile(r"^heading\s*([1-9])$", re.I)
_MAX_BASED_ON = 10


def extract_docx(path: Path, limits: ExtractionLimits) -> Extracted:
    with path.open("rb") as handle:
        if handle.read(8) == OLE2_MAGIC:
            raise ExtractionFailed(
                "The DOCX is encrypted (password protected) — or it is an old Word 97–2003 file renamed to .docx"
            )
    archive = open_checked_zip(path, limits, "DOCX")
    with archive:
        budget = ByteBudget(limits, "DOCX")
        try:
            main = archive.getinfo("word/document.xml")
        except KeyError:
            raise ExtractionFailed("The file is corrupt: the DOCX has no word/document.xml") from None
        levels = _style_levels(archive, budget, limits)
        sink = BlockSink(limits)
        with CountingReader(archive, main, budget, "DOCX") as stream:
            _read_body(iter_xml(stream, limits, "DOCX's word/document.xml"), levels, sink)
    return Extracted(Kind.DOCX, sink.blocks)


def _val(element: Any) -> str | None:
    for name in _VAL:
        value = element.get(name)
        if value is not None:
            return value
    return None


def _style_levels(archive: zipfile.ZipFile, budget: ByteBudget, limits: ExtractionLimits) -> dict[str, int | None]:
    """styleId → heading level (1 = top) for paragraph styles, following basedOn chains.
    styles.xml is parsed whole and walked in C (lxml's iterchildren/find): Word's default
    template alone has a few hundred KB of styles, too many to stream event by event in Python."""
    try:
        info = archive.getinfo("word/styles.xml")
    except KeyError:
        return {}
    with CountingReader(archive, info, budget, "DOCX") as stream:
        root = parse_xml(stream.read_all(), "DOCX's word/styles.xml")
    namespace = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    w = f"{{{namespace}}}"
    own: dict[str, int | None] = {}
    based_on: dict[str, str] = {}
    for style in root.iterchildren(f"{w}style"):
        style_id = style.get(f"{w}styleId")
        if not style_id:
            continue
        level: int | None = None
        name = style.find(f"{w}name")
        name_text = (name.get(f"{w}val") or "").strip() if name is not None else ""
        match = _HEADING_NAME.match(name_text)
        if match:
            level = int(match.group(1))
        elif name_text.lower() == "title":
            level = 1
        else:
            outline = style.find(f"{w}pPr/{w}outlineLvl")
            if outline is not None:
                level = _outline_level(outline.get(f"{w}val"))
        parent = style.find(f"{w}basedOn")
        if parent is not None and parent.get(f"{w}val"):
            based_on[style_id] = parent.get(f"{w}val")
        own[style_id] = level
    resolved: dict[str, int | None] = {}
    for style_id in own:
        current: str | None = style_id
        level = None
        for _ in range(_MAX_BASED_ON):
            if current is None:
                break
            level = own.get(current)
            if level is not None:
                break
            current = based_on.get(current)
        resolved[style_id] = level
    return resolved


def _outline_level(value: str | None) -> int | None:
    try:
        level = int(value or "")
    except ValueError:
        return None
    return level + 1 if 0 <= level <= 8 else None  # 9 means body text


@dataclass
class _Paragraph:
    parts: list[str] = field(default_factory=list)
    style: str | None = None
    outline: int | None = None


@dataclass
class _Table:
    number: int | None  # None for a table nested in another table's cell
    rows: int = 0
    row: list[str] | None = None
    cell: list[str] | None = None


def _heading_level(paragraph: _Paragraph, levels: dict[str, int | None]) -> int | None:
    if paragraph.outline is not None:
        return paragraph.outline
    if not paragraph.style:
        return None
    if paragraph.style in levels:
        return levels[paragraph.style]
    match = re.match(r"^heading\s*([1-9])$", paragraph.style, re.I)  # no styles part: trust the id
    return int(match.group(1)) if match else (1 if paragraph.style.lower() == "title" else None)


def _read_body(events: Any, levels: dict[str, int | None], sink: BlockSink) -> None:
    paragraphs: list[_Paragraph] = []
    tables: list[_Table] = []
    run_depth = 0
    skipping = 0  # depth inside a _SKIPPED element
    table_count = 0
    for event, element in events:
        if skipping:
            skipping += 1 if event == "start" else -1
            continue
        if event == "start":
            if element.tag in _SKIPPED:
                skipping = 1
                continue
            name = _TAGS.get(element.tag)
            if name is None:
                continue
            if name == "p":
                paragraphs.append(_Paragraph())
            elif name == "r":
                run_depth += 1
            elif name == "pStyle" and paragraphs and run_depth == 0:
                paragraphs[-1].style = _val(element)
            elif name == "outlineLvl" and paragraphs and run_depth == 0:
                paragraphs[-1].outline = _outline_level(_val(element))
            elif name == "tbl":
                if tables:
                    tables.append(_Table(None))
                else:
                    table_count += 1
                    tables.append(_Table(table_count))
            elif name == "tr" and tables:
                tables[-1].row = []
            elif name == "tc" and tables:
                tables[-1].cell = []
            continue

        name = _TAGS.get(element.tag)
        if name is None:
            continue
        if name == "t":
            if paragraphs and run_depth:
                paragraphs[-1].parts.append(element.text or "")
        elif name == "tab":
            if paragraphs and run_depth:
                paragraphs[-1].parts.append("\t")
        elif name in ("br", "cr"):
            if paragraphs and run_depth:
                paragraphs[-1].parts.append("\n")
        elif name == "noBreakHyphen":
            if paragraphs and run_depth:
                paragraphs[-1].parts.append("-")
        elif name == "r":
            run_depth = max(0, run_depth - 1)
        elif name == "p" and paragraphs:
            paragraph = paragraphs.pop()
            text = "".join(paragraph.parts).strip()
            if tables and tables[-1].cell is not None:
                if text:
                    tables[-1].cell.append(text)
            elif text:
                level = _heading_level(paragraph, levels)
                if level is not None and "\n" not in text and len(text) <= 300:
                    sink.add(text, BlockKind.HEADING, level=level)
                else:
                    sink.add(text, BlockKind.PARAGRAPH)
        elif name == "tc" and tables:
            table = tables[-1]
            if table.row is not None and table.cell is not None:
                table.row.append(" ".join(table.cell))
            table.cell = None
        elif name == "tr" and tables:
            table = tables[-1]
            cells = [cell for cell in (table.row or []) if cell]
            table.row = None
            if cells:
                table.rows += 1
                text = " | ".join(cells)
                if len(tables) > 1 and tables[-2].cell is not None:
                    tables[-2].cell.append(text)
                else:
                    sink.add(text, BlockKind.ROW, table=table.number, row=table.rows)
        elif name == "tbl" and tables:
            tables.pop()
        if not paragraphs and not tables and name in ("p", "tbl"):
            # A finished top-level body element: free it and everything before it.
            element.clear()
            parent = element.getparent()
            if parent is not None:
                while element.getprevious() is not None:
                    del parent[0]
