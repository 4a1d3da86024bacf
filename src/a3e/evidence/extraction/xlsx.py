"""XLSX: each sheet's rows as text blocks ("Sheet 'Budget', row 12"), streamed from the sheet XML.

Parsed directly with lxml's iterparse rather than openpyxl: the declared <dimension> is never
used and empty rows and cells are never materialised, so a workbook claiming A1:XFD1048576 or
a lone cell in row 1,048,576 costs nothing. Dates are shown as dates (by their number format).
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from a3e.evidence.extraction.base import BlockKind, BlockSink, Extracted, ExtractionFailed, ExtractionLimits, Kind
from a3e.evidence.extraction.sniff import OLE2_MAGIC
from a3e.evidence.extraction.xmlsafe import iter_xml
from a3e.evidence.extraction.zipsafe import ByteBudget, CountingReader, open_checked_zip

_MAIN = ("http://schemas.openxmlformats.org/spreadsheetml/2006/main", "http://purl.oclc.org/ooxml/spreadsheetml/main")
_PACKAGE_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
_BUILTIN_DATE_FORMATS = {14: "date", 15: "date", 16: "date", 17: "date", 18: "time", 19: "time", 20: "time",
                         21: "time", 22: "datetime", 45: "time", 46: "time", 47: "time"}
_BUILTIN_DATE_FORMATS.update({n: "date" for n in (*range(27, 37), *range(50, 59))})
_FORMAT_NOISE = re.compile(r'"[^"]*"|\\.|\[(?!h\]|m\]|s\])[^\]]*\]|_.|\*.', re.I)
_MAX_SERIAL = 2_958_465  # 9999-12-31


def _tags(*names: str) -> dict[str, str]:
    return {f"{{{ns}}}{name}": name for ns in _MAIN for name in names}


_CELL_TAGS = _tags("row", "c", "v", "is")
_ROW_TAGS = tuple(f"{{{ns}}}row" for ns in _MAIN)
_SST_TAGS = _tags("si", "t", "r", "rPh")


def extract_xlsx(path: Path, limits: ExtractionLimits) -> Extracted:
    with path.open("rb") as handle:
        if handle.read(8) == OLE2_MAGIC:
            raise ExtractionFailed(
                "The XLSX is encrypted (password protected) — or it is an old Excel 97–2003 file renamed to .xlsx"
            )
    archive = open_checked_zip(path, limits, "XLSX")
    with archive:
        budget = ByteBudget(limits, "XLSX")
        reader = _Workbook(archive, budget, limits)
        sink = BlockSink(limits)
        reader.read_sheets(sink)
    return Extracted(Kind.XLSX, sink.blocks)


class _Workbook:
    def __init__(self, archive: zipfile.ZipFile, budget: ByteBudget, limits: ExtractionLimits) -> None:
        self.archive = archive
        self.budget = budget
        self.limits = limits
        self.members = {info.filename: info for info in archive.infolist()}
        self.rows = 0
        self.cells = 0

    def _events(self, name: str, ends_of: tuple[str, ...] | None = None) -> Any:
        info = self.members.get(name)
        if info is None:
            return None
        stream = CountingReader(self.archive, info, self.budget, "XLSX")
        return iter_xml(stream, self.limits, f"XLSX's {name}", ends_of=ends_of)

    def read_sheets(self, sink: BlockSink) -> None:
        if "xl/workbook.xml" not in self.members:
            raise ExtractionFailed("The file is corrupt: the XLSX has no xl/workbook.xml")
        relations = self._relations("xl/_rels/workbook.xml.rels")
        sheets: list[tuple[str, str]] = []
        date1904 = False
        for event, element in self._events("xl/workbook.xml"):
            if event != "end":
                continue
            if element.tag.endswith("}sheet"):
                target = next((relations.get(v) for k, v in element.attrib.items() if k.endswith("}id")), None)
                if target and target[1].endswith("/worksheet"):
                    sheets.append((element.get("name") or "?", target[0]))
            elif element.tag.endswith("}workbookPr"):
                date1904 = element.get("date1904") in ("1", "true")
        by_type = {kind.rsplit("/", 1)[-1]: target for target, kind in relations.values()}
        strings = self._shared_strings(by_type.get("sharedStrings", "xl/sharedStrings.xml"))
        formats = self._cell_formats(by_type.get("styles", "xl/styles.xml"))
        epoch = datetime(1904, 1, 1) if date1904 else None
        for name, target in sheets:
            if target not in self.members:
                raise ExtractionFailed(f"The file is corrupt: the XLSX's sheet {name!r} is missing ({target})")
            self._read_sheet(name, target, strings, formats, epoch, sink)

    def _relations(self, name: str) -> dict[str, tuple[str, str]]:
        """Id → (member path, relationship type)."""
        relations: dict[str, tuple[str, str]] = {}
        events = self._events(name)
        if events is None:
            return relations
        base = posixpath.dirname(posixpath.dirname(name))  # xl/_rels/x.rels → xl
        for event, element in events:
            if event == "end" and element.tag == f"{{{_PACKAGE_RELS}}}Relationship":
                target = element.get("Target") or ""
                path = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join(base, target))
                relations[element.get("Id") or ""] = (path, element.get("Type") or "")
        return relations

    def _shared_strings(self, name: str) -> list[str]:
        strings: list[str] = []
        events = self._events(name, ends_of=tuple(f"{{{ns}}}si" for ns in _MAIN))
        if events is None:
            return strings
        for _, element in events:
            parts = []
            for child in element:
                tag = _SST_TAGS.get(child.tag)
                if tag == "t":
                    parts.append(child.text or "")
                elif tag == "r":
                    parts.extend(grandchild.text or "" for grandchild in child if _SST_TAGS.get(grandchild.tag) == "t")
            strings.append("".join(parts))
            element.clear()
        return strings

    def _cell_formats(self, name: str) -> list[str | None]:
        """Per cell style index: "date", "time", "datetime" or None (a plain number)."""
        custom: dict[int, str | None] = {}
        formats: list[str | None] = []
        events = self._events(name)
        if events is None:
            return formats
        in_cell_xfs = False
        for event, element in events:
            tag = element.tag.rsplit("}", 1)[-1]
            if tag == "cellXfs":
                in_cell_xfs = event == "start"
            elif event == "end" and tag == "numFmt":
                try:
                    custom[int(element.get("numFmtId") or "")] = _date_format_kind(element.get("formatCode") or "")
                except ValueError:
                    pass
            elif event == "end" and tag == "xf" and in_cell_xfs:
                try:
                    number_format = int(element.get("numFmtId") or "0")
                except ValueError:
                    number_format = 0
                formats.append(custom[number_format] if number_format in custom else _BUILTIN_DATE_FORMATS.get(number_format))
        return formats

    def _read_sheet(self, sheet: str, member: str, strings: list[str], formats: list[str | None],
                    epoch: datetime | None, sink: BlockSink) -> None:
        limits = self.limits
        row_number = 0
        for _, row in self._events(member, ends_of=_ROW_TAGS):
            declared = row.get("r")
            row_number = int(declared) if declared and declared.isdigit() else row_number + 1
            values = []
            for cell in row:
                if _CELL_TAGS.get(cell.tag) != "c":
                    continue
                value = _cell_text(cell, strings, formats, epoch)
                if value:
                    values.append(value)
            if values:
                self.cells += len(values)
                if self.cells > limits.max_cells:
                    raise ExtractionFailed(f"The workbook has more than {limits.max_cells:,} filled cells; the limit is {limits.max_cells:,}")
                self.rows += 1
                if self.rows > limits.max_rows:
                    raise ExtractionFailed(f"The workbook has more than {limits.max_rows:,} rows; the limit is {limits.max_rows:,}")
                sink.add(" | ".join(values), BlockKind.ROW, sheet=sheet, row=row_number)
            row.clear()
            parent = row.getparent()
            if parent is not None:
                while row.getprevious() is not None:
                    del parent[0]


def _cell_text(cell: Any, strings: list[str], formats: list[str | None], epoch: datetime | None) -> str:
    kind = cell.get("t")
    raw: str | None = None
    inline: list[str] = []
    for child in cell:
        tag = _CELL_TAGS.get(child.tag)
        if tag == "v":
            raw = child.text
        elif tag == "is":
            inline.extend(text for text in child.itertext())
    if kind == "inlineStr":
        return "".join(inline).strip()
    if raw is None:
        return ""
    raw = raw.strip()
    if kind == "s":
        try:
            return strings[int(raw)].strip()
        except (ValueError, IndexError):
            return ""
    if kind == "b":
        return "TRUE" if raw == "1" else "FALSE"
    if kind in ("e", "str", "d"):
        return raw
    try:
        number = float(raw)
    except ValueError:
        return raw
    style = cell.get("s")
    if style and style.isdigit() and int(style) < len(formats):
        shown = formats[int(style)]
        if shown is not None:
            return _format_serial(number, shown, epoch) or _format_number(number)
    return _format_number(number)


def _format_number(number: float) -> str:
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return format(number, ".15g")


def _date_format_kind(code: str) -> str | None:
    stripped = _FORMAT_NOISE.sub("", code).lower()
    if not stripped or stripped == "general":
        return None
    has_day_or_year = bool(re.search(r"[dy]", stripped))
    has_time = bool(re.search(r"[hs]", stripped))
    has_month_or_minute = "m" in stripped
    if has_day_or_year or (has_month_or_minute and not has_time):
        return "datetime" if has_time else "date"
    return "time" if has_time else None


def _format_serial(serial: float, shown: str, epoch: datetime | None) -> str | None:
    if not 0 <= serial <= _MAX_SERIAL:
        return None
    if epoch is None:  # the 1900 system, with Lotus's phantom 29 February 1900
        epoch = datetime(1899, 12, 31) if serial < 60 else datetime(1899, 12, 30)
    moment = epoch + timedelta(seconds=round(serial * 86_400))
    if shown == "date":
        return moment.date().isoformat()
    clock = moment.strftime("%H:%M:%S" if moment.second else "%H:%M")
    if shown == "time":
        return clock
    return f"{moment.date().isoformat()} {clock}"
