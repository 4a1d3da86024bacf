"""HTML: headings and paragraphs, table rows, lists; scripts, styles and other non-text dropped.

Parsed with libxml2's HTML parser (lxml), which is linear in the nesting depth where an HTML5
tree builder is quadratic (100,000 nested <div>s take seconds there); the depth is checked
while walking, and libxml2's own limit is reported the same way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from a3e.evidence.extraction.base import BlockKind, BlockSink, Extracted, ExtractionFailed, ExtractionLimits, Kind
from a3e.evidence.extraction.text import read_text
from a3e.evidence.extraction.textcodec import declared_html_charset

_DROPPED = frozenset({
    "script", "style", "noscript", "template", "head", "title", "meta", "link", "svg", "math",
    "iframe", "object", "embed", "canvas", "select", "option", "button", "input", "textarea",
})
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCKS = frozenset({
    "p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "blockquote",
    "li", "ul", "ol", "dl", "dt", "dd", "pre", "figure", "figcaption", "address", "hr", "form",
    "fieldset", "legend", "details", "summary", "caption", "body", "html", "center",
})
_SPACE = re.compile(r"[ \t\n\r\f\u00a0]+")


def extract_html(path: Path, limits: ExtractionLimits) -> Extracted:
    from lxml import etree

    with path.open("rb") as handle:
        declared = declared_html_charset(handle.read(4096))
    text = read_text(path, limits, "HTML file", declared=declared)
    parser = etree.HTMLParser(
        recover=True, no_network=True, remove_comments=True, remove_pis=True, huge_tree=True, default_doctype=False,
    )
    try:
        root = etree.fromstring(text, parser) if text.strip() else None
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise ExtractionFailed(f"The file is corrupt: the HTML cannot be parsed ({exc})") from None
    if any("Excessive depth" in entry.message for entry in parser.error_log):  # libxml2's own cap: 2048 levels
        raise ExtractionFailed(f"The HTML is nested more than {min(limits.max_nesting_depth, 2048)} levels deep")
    sink = BlockSink(limits)
    if root is not None:
        _Walker(sink, limits.max_nesting_depth).walk(root)
    return Extracted(Kind.HTML, sink.blocks)


class _Table:
    def __init__(self, number: int | None) -> None:
        self.number = number  # None for a table inside another table's cell
        self.rows = 0
        self.row: list[str] | None = None
        self.cell: list[str] | None = None


class _Walker:
    def __init__(self, sink: BlockSink, max_depth: int) -> None:
        self.sink = sink
        self.max_depth = max_depth
        self.inline: list[str] = []
        self.table_count = 0
        self.tables: list[_Table] = []

    def _cell(self) -> list[str] | None:
        return self.tables[-1].cell if self.tables else None

    def _take_inline(self) -> str:
        text = _SPACE.sub(" ", "".join(self.inline)).strip()
        self.inline = []
        return text

    def flush(self, kind: BlockKind = BlockKind.PARAGRAPH, level: int | None = None) -> None:
        if not self.inline:
            return
        text = self._take_inline()
        cell = self._cell()
        if cell is not None:
            if text:
                cell.append(text)
        elif kind is BlockKind.HEADING:
            self.sink.add(text, kind, level=level)
        else:
            self.sink.add(text, kind)

    def walk(self, root: Any) -> None:
        # An explicit stack (no recursion): (True, element, depth) opens, (False, …) closes after the children.
        stack: list[tuple[bool, Any, int]] = [(True, root, 1)]
        while stack:
            opening, element, depth = stack.pop()
            tag = element.tag.lower() if isinstance(element.tag, str) else ""
            if not opening:
                self.close(tag)
                self.inline.append(element.tail or "")
                continue
            if depth > self.max_depth:
                raise ExtractionFailed(f"The HTML is nested more than {self.max_depth} levels deep")
            if not tag or tag in _DROPPED:
                self.inline.append(element.tail or "")
                continue
            self.open(tag)
            self.inline.append(element.text or "")
            stack.append((False, element, depth))
            stack.extend((True, child, depth + 1) for child in reversed(element))
        self.flush()

    def open(self, tag: str) -> None:
        if tag == "br":
            self.inline.append("\n")
        elif tag == "table":
            self.flush()
            if self.tables and self.tables[-1].cell is not None:
                self.tables.append(_Table(None))
            else:
                self.table_count += 1
                self.tables.append(_Table(self.table_count))
        elif tag == "tr" and self.tables:
            self.flush()
            self.tables[-1].row = []
        elif tag in ("td", "th") and self.tables:
            self.flush()
            self.tables[-1].cell = []
        elif tag in _HEADINGS or tag in _BLOCKS:
            self.flush()

    def close(self, tag: str) -> None:
        if tag in _HEADINGS:
            self.flush(BlockKind.HEADING, _HEADINGS[tag])
        elif tag in ("td", "th") and self.tables:
            self.flush()
            table = self.tables[-1]
            if table.row is not None and table.cell is not None:
                table.row.append(" ".join(table.cell))
            table.cell = None
        elif tag == "tr" and self.tables:
            self.flush()
            table = self.tables[-1]
            cells = [cell for cell in table.row or [] if cell]
            table.row = None
            if cells:
                table.rows += 1
                text = " | ".join(cells)
                if table.number is None and len(self.tables) > 1 and self.tables[-2].cell is not None:
                    self.tables[-2].cell.append(text)
                else:
                    self.sink.add(text, BlockKind.ROW, table=table.number, row=table.rows)
        elif tag == "table" and self.tables:
            self.flush()
            self.tables.pop()
        elif tag in _BLOCKS:
            self.flush()
