"""Reading and checking a catalog file: CSV, JSON or YAML, one tree of standards.

The same checks run on the built-in catalogs (at load), on a custom framework uploaded into a
workspace, and in `a3e standards validate FILE`. Every problem names where it is — the line of a
CSV file, the item (its position and id) of a JSON or YAML file — and what is wrong, so that the
person who made the file can fix it without guessing.

Formats
- CSV: a header row naming the columns `id`, `parent`, `title`, `text` (`id` and `title` are
  required; `code`, `parent_id`, `name` and `description` are accepted as synonyms), then one
  standard per row. Comma, semicolon or tab separated; UTF-8 (a byte-order mark is fine).
- JSON or YAML: a list of items, or an object with `items` (and optionally `name`, `version` or
  `edition`, `description`). An item has `id` (or `code`), `parent`, `title`, `text` (or
  `description`), and may hold its sub-items in `children` instead of naming a parent.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_ITEMS = 5000
MAX_CODE_LENGTH = 64
MAX_DEPTH = 12
MAX_TITLE_LENGTH = 500
MAX_TEXT_LENGTH = 20_000
MAX_NAME_LENGTH = 200
MAX_VERSION_LENGTH = 64
MAX_PROBLEMS = 200  # a file with thousands of mistakes gets the first ones and a count
_MAX_NESTING = 64  # JSON/YAML structure depth (not the tree depth): refuses pathological files

FORMATS = ("csv", "json", "yaml")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_COLUMN_SYNONYMS = {
    "id": "id",
    "code": "id",
    "identifier": "id",
    "parent": "parent",
    "parent_id": "parent",
    "parent id": "parent",
    "parent_code": "parent",
    "title": "title",
    "name": "title",
    "text": "text",
    "description": "text",
}
_KEY_SYNONYMS = {
    "id": ("id", "code"),
    "parent": ("parent", "parent_id", "parent_code"),
    "title": ("title", "name"),
    "text": ("text", "description"),
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file, and where."""

    where: str  # "line 7", "item 3 (id '1.2')", "file"
    message: str
    line: int | None = None
    item: int | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"location": self.where, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        if self.item is not None:
            out["item"] = self.item
        return out


class CatalogInvalid(ValueError):
    """The file is not a valid catalog; `problems` says why, each with its location."""

    def __init__(self, problems: list[Problem], *, more: int = 0) -> None:
        self.problems = problems
        self.more = more
        first = problems[0] if problems else Problem("file", "invalid")
        suffix = f" (and {len(problems) - 1 + more} more)" if len(problems) + more > 1 else ""
        super().__init__(f"{first}{suffix}")


@dataclass
class Item:
    """One standard as read from a file, before it is stored."""

    code: str
    parent: str | None
    title: str
    text: str | None
    where: str
    line: int | None = None
    index: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParsedCatalog:
    format: str
    items: list[Item]  # in the file's order, which is the order of siblings
    name: str | None = None
    version: str | None = None
    description: str | None = None
    depth: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def roots(self) -> int:
        return sum(1 for item in self.items if item.parent is None)


@dataclass
class _Record:
    """An item's raw fields and where they came from."""

    fields: dict[str, Any]
    where: str
    line: int | None = None
    index: int | None = None
    implied_parent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Problems:
    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.dropped = 0

    def add(self, where: str, message: str, *, line: int | None = None, item: int | None = None) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(Problem(where, message, line, item))
        else:
            self.dropped += 1

    def __bool__(self) -> bool:
        return bool(self.items)

    def fail(self) -> CatalogInvalid:
        # In reading order: problems of the whole file first, then by line or item.
        ordered = sorted(self.items, key=lambda p: (0, 0) if p.line is None and p.item is None else (1, p.line or p.item or 0))
        return CatalogInvalid(ordered, more=self.dropped)


# ---- format and decoding -----------------------------------------------------------------------


def detect_format(filename: str | None = None, content_type: str | None = None, data: bytes = b"") -> str:
    """csv, json or yaml: from the file's extension, else its declared type, else its content."""
    suffix = PurePath(filename).suffix.lower() if filename else ""
    by_suffix = {".csv": "csv", ".tsv": "csv", ".json": "json", ".yaml": "yaml", ".yml": "yaml"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in ("text/csv", "application/csv", "text/tab-separated-values"):
        return "csv"
    if kind in ("application/json", "text/json"):
        return "json"
    if kind in ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"):
        return "yaml"
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] in (b"{", b"["):
        return "json"
    first_line = head.split(b"\n", 1)[0].lower()
    if b"id" in first_line and (b"," in first_line or b";" in first_line or b"\t" in first_line) and b":" not in first_line:
        return "csv"
    return "yaml"


def _decode(data: bytes, problems: _Problems) -> str | None:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        problems.add("file", "the file is encoded as UTF-16; save it as UTF-8")
        return None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        byte = data[exc.start : exc.start + 1].hex()
        problems.add(
            f"line {line}",
            f"bad encoding: byte 0x{byte} is not valid UTF-8; save the file as UTF-8",
            line=line,
        )
        return None
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        problems.add(f"line {line}", "the file contains NUL bytes: it is binary (a spreadsheet? export it as CSV)", line=line)
        return None
    return text


def parse_catalog(data: bytes, fmt: str | None = None, *, filename: str | None = None, max_bytes: int = MAX_FILE_BYTES) -> ParsedCatalog:
    """Read and check a catalog file. Raises CatalogInvalid listing every problem found."""
    problems = _Problems()
    if not data or not data.strip(b"\xef\xbb\xbf \t\r\n"):
        problems.add("file", "the file is empty")
        raise problems.fail()
    if len(data) > max_bytes:
        problems.add("file", f"the file is larger than {_size(max_bytes)}, the limit; split it or trim long texts")
        raise problems.fail()
    fmt = (fmt or detect_format(filename, None, data)).lower()
    if fmt == "yml":
        fmt = "yaml"
    if fmt not in FORMATS:
        problems.add("file", f"unknown format {fmt!r}; use csv, json or yaml")
        raise problems.fail()
    text = _decode(data, problems)
    if text is None:
        raise problems.fail()
    if fmt == "csv":
        records, meta = _csv_records(text, problems), {}
    else:
        document = _load_json(text, problems) if fmt == "json" else _load_yaml(text, problems)
        if problems:
            raise problems.fail()
        records, meta = _document_records(document, problems)
    if problems:
        raise problems.fail()
    catalog = validate_records(records, problems, fmt=fmt)
    if problems:
        raise problems.fail()
    catalog.name = _meta_text(meta, ("name", "title"), MAX_NAME_LENGTH, problems)
    catalog.version = _meta_text(meta, ("version", "edition"), MAX_VERSION_LENGTH, problems)
    catalog.description = _meta_text(meta, ("description",), MAX_TEXT_LENGTH, problems)
    catalog.meta = meta
    if problems:
        raise problems.fail()
    return catalog


def parse_items(items: Any, *, fmt: str = "json") -> ParsedCatalog:
    """Check items already decoded from a JSON request body (a list of objects)."""
    problems = _Problems()
    records, _ = _document_records({"items": items}, problems)
    if problems:
        raise problems.fail()
    catalog = validate_records(records, problems, fmt=fmt)
    if problems:
        raise problems.fail()
    return catalog


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB" if n >= 1024 * 1024 else f"{n:,} bytes"


def _meta_text(meta: dict[str, Any], keys: Iterable[str], limit: int, problems: _Problems) -> str | None:
    for key in keys:
        value = meta.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            problems.add("file", f"{key} must be text")
            return None
        text = str(value).strip()
        if len(text) > limit:
            problems.add("file", f"{key} is {len(text)} characters; the limit is {limit}")
            return None
        return text or None
    return None


# ---- CSV -----------------------------------------------------------------------------------------


def _delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _csv_records(text: str, problems: _Problems) -> list[_Record]:
    first_line = text.split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first_line))
    records: list[_Record] = []
    columns: dict[int, str] | None = None
    width = 0
    previous_end = 0
    try:
        for row in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if columns is None:
                columns, width = _csv_header(row, start, problems)
                if columns is None:
                    return []
                continue
            if len(row) > width and any(cell.strip() for cell in row[width:]):
                problems.add(f"line {start}", f"{len(row)} fields, but the header has {width}", line=start)
                continue
            fields = {name: row[i] if i < len(row) else "" for i, name in columns.items()}
            records.append(_Record(fields, f"line {start}", line=start))
            if len(records) > MAX_ITEMS:
                break
    except csv.Error as exc:
        line = reader.line_num or previous_end + 1
        problems.add(f"line {line}", f"not valid CSV: {exc}", line=line)
        return []
    if columns is None:
        problems.add("file", "the file has no header row and no items")
    elif not records and not problems:
        problems.add("file", "the file has a header row but no items")
    return records


def _csv_header(row: list[str], line: int, problems: _Problems) -> tuple[dict[int, str] | None, int]:
    columns: dict[int, str] = {}
    seen: dict[str, str] = {}
    for index, raw in enumerate(row):
        name = raw.strip().lower()
        canonical = _COLUMN_SYNONYMS.get(name)
        if canonical is None:
            continue  # other columns are ignored
        if canonical in seen:
            problems.add(f"line {line}", f"columns {seen[canonical]!r} and {raw.strip()!r} both give the {canonical}", line=line)
            return None, 0
        seen[canonical] = raw.strip()
        columns[index] = canonical
    missing = [name for name in ("id", "title") if name not in seen]
    if missing:
        found = ", ".join(repr(cell.strip()) for cell in row) or "nothing"
        problems.add(
            f"line {line}",
            f"the header row must name the columns id, parent, title, text; {' and '.join(missing)} missing (found {found})",
            line=line,
        )
        return None, 0
    return columns, len(row)


# ---- JSON and YAML -------------------------------------------------------------------------------


def _load_json(text: str, problems: _Problems) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.add(f"line {exc.lineno}, column {exc.colno}", f"not valid JSON: {exc.msg}", line=exc.lineno)
    except RecursionError:
        problems.add("file", "the JSON is nested too deeply")
    return None


def _yaml_loader() -> Any:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(text: str, problems: _Problems) -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        problems.add("file", "YAML files need PyYAML, which is not installed")
        return None
    loader = _yaml_loader()
    try:
        # First pass over the events only: refuse aliases (a few lines can expand to gigabytes)
        # and absurd nesting before anything is built.
        depth = 0
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, yaml.AliasEvent):
                line = event.start_mark.line + 1 if event.start_mark else None
                problems.add(f"line {line}" if line else "file", "YAML aliases (*name) are not accepted; write the values out", line=line)
                return None
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > _MAX_NESTING:
                    line = event.start_mark.line + 1 if event.start_mark else None
                    problems.add(f"line {line}" if line else "file", "the YAML is nested too deeply", line=line)
                    return None
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        where = f"line {line}, column {mark.column + 1}" if mark else "file"
        problems.add(where, f"not valid YAML: {exc.problem or exc.context}", line=line)
    except yaml.YAMLError as exc:
        problems.add("file", f"not valid YAML: {exc}")
    except RecursionError:
        problems.add("file", "the YAML is nested too deeply")
    return None


def _document_records(document: Any, problems: _Problems) -> tuple[list[_Record], dict[str, Any]]:
    meta: dict[str, Any] = {}
    if document is None:
        problems.add("file", "the file is empty")
        return [], meta
    if isinstance(document, dict):
        items = None
        for key in ("items", "standards"):
            if key in document:
                items = document[key]
                break
        if items is None:
            problems.add("file", "expected a list of items, or an object with an `items` list")
            return [], meta
        meta = {k: v for k, v in document.items() if k not in ("items", "standards")}
    else:
        items = document
    if not isinstance(items, list):
        problems.add("file", f"`items` must be a list, not {_type_name(items)}")
        return [], meta
    if not items:
        problems.add("file", "the file has no items")
        return [], meta
    records: list[_Record] = []
    for record in _walk(items, problems):
        records.append(record)
        if len(records) > MAX_ITEMS:
            break
    return records, meta


def _walk(items: list[Any], problems: _Problems, path: tuple[int, ...] = (), parent: str | None = None) -> Iterator[_Record]:
    for position, raw in enumerate(items, start=1):
        here = (*path, position)
        label = "item " + " > ".join(str(p) for p in here)
        index = here[0] if len(here) == 1 else None
        if not isinstance(raw, dict):
            problems.add(label, f"an item must be an object with id and title, not {_type_name(raw)}", item=index)
            continue
        fields: dict[str, Any] = {}
        for name, keys in _KEY_SYNONYMS.items():
            present = [key for key in keys if key in raw]
            if len(present) > 1:
                problems.add(label, f"both {present[0]!r} and {present[1]!r} are given", item=index)
            fields[name] = raw[present[0]] if present else None
        extra = {k: v for k, v in raw.items() if k not in {key for keys in _KEY_SYNONYMS.values() for key in keys} | {"children"}}
        record = _Record(fields, label, index=index, implied_parent=parent, extra=extra)
        yield record
        children = raw.get("children")
        if children is None:
            continue
        if not isinstance(children, list):
            problems.add(label, f"children must be a list, not {_type_name(children)}", item=index)
            continue
        code = _as_code(fields["id"])
        if code is None:
            problems.add(label, "an item with children needs an id", item=index)
            continue
        yield from _walk(children, problems, here, code)


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _as_code(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


# ---- the checks ----------------------------------------------------------------------------------


def _text_field(record: _Record, name: str, problems: _Problems, label: str) -> str | None:
    value = record.fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        problems.add(label, f"{name} must be text, not true/false", line=record.line, item=record.index)
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        problems.add(
            label,
            f"{name} is the number {value!r}, which loses trailing zeros (1.10 becomes 1.1); write it in quotes",
            line=record.line,
            item=record.index,
        )
        return None
    if not isinstance(value, str):
        problems.add(label, f"{name} must be text, not {_type_name(value)}", line=record.line, item=record.index)
        return None
    return value.strip()


def validate_records(records: list[_Record], problems: _Problems, *, fmt: str) -> ParsedCatalog:
    if len(records) > MAX_ITEMS:
        problems.add("file", f"more than {MAX_ITEMS:,} items; the limit is {MAX_ITEMS:,}")
        return ParsedCatalog(fmt, [])
    if not records and not problems:
        problems.add("file", "the file has no items")
    items: list[Item] = []
    first_seen: dict[str, Item] = {}
    every_code: set[str] = set()  # also the ids of items with other problems: no false "unknown parent"
    for record in records:
        raw_id = record.fields.get("id")
        label = record.where
        if record.line is None and isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) and str(raw_id).strip():
            label = f"{record.where} (id {str(raw_id).strip()[:MAX_CODE_LENGTH]!r})"
        code = _text_field(record, "id", problems, label)
        title = _text_field(record, "title", problems, label)
        text = _text_field(record, "text", problems, label)
        parent = _text_field(record, "parent", problems, label)
        where = dict(line=record.line, item=record.index)
        ok = True
        if code:
            every_code.add(code)
        if not code:
            if record.fields.get("id") is None or code == "":
                problems.add(label, "missing id", **where)
            ok = False
        elif len(code) > MAX_CODE_LENGTH:
            problems.add(label, f"id is {len(code)} characters; the limit is {MAX_CODE_LENGTH}", **where)
            ok = False
        elif _CONTROL.search(code):
            problems.add(label, "id contains a line break or control character", **where)
            ok = False
        if not title:
            if record.fields.get("title") is None or title == "":
                problems.add(label, "missing title", **where)
            ok = False
        elif len(title) > MAX_TITLE_LENGTH:
            problems.add(label, f"title is {len(title)} characters; the limit is {MAX_TITLE_LENGTH}", **where)
            ok = False
        if text and len(text) > MAX_TEXT_LENGTH:
            problems.add(label, f"text is {len(text):,} characters; the limit is {MAX_TEXT_LENGTH:,}", **where)
            ok = False
        implied = record.implied_parent
        if parent and implied and parent != implied:
            problems.add(label, f"parent is {parent!r} but the item is listed among the children of {implied!r}", **where)
            ok = False
        parent = parent or implied or None
        if parent and len(parent) > MAX_CODE_LENGTH:
            problems.add(label, f"parent is {len(parent)} characters; the limit is {MAX_CODE_LENGTH}", **where)
            ok = False
        if code and parent == code:
            problems.add(label, f"{code!r} is its own parent", **where)
            ok = False
        if code and code in first_seen:
            first = first_seen[code]
            problems.add(label, f"duplicate id {code!r} (first at {first.where})", **where)
            continue
        if not ok or not code or not title:
            continue
        item = Item(code, parent, title, text or None, record.where, record.line, record.index, record.extra)
        first_seen[code] = item
        items.append(item)
    for item in items:
        if item.parent is not None and item.parent not in every_code:
            problems.add(_label(item), f"unknown parent {item.parent!r}: no item has that id", line=item.line, item=item.index)
    depth = _check_tree(items, first_seen, problems)
    return ParsedCatalog(fmt, items, depth=depth)


def _label(item: Item) -> str:
    return item.where if item.line is not None else f"{item.where} (id {item.code!r})"


def _check_tree(items: list[Item], by_code: dict[str, Item], problems: _Problems) -> int:
    """Cycles and depth. Every parent exists by now; roots have depth 1."""
    depth: dict[str, int] = {}  # 0: in a cycle, or below one
    reported: set[str] = set()
    for item in items:
        chain: list[str] = []
        on_chain: set[str] = set()
        code: str | None = item.code
        while code is not None and code not in depth and code not in on_chain:
            chain.append(code)
            on_chain.add(code)
            code = by_code[code].parent
            if code is not None and code not in by_code:  # unknown, or an item with other problems
                code = None
        if code is not None and code in on_chain:
            cycle = chain[chain.index(code) :]
            if not reported.intersection(cycle):
                reported.update(cycle)
                first = by_code[cycle[0]]
                path = " → ".join(repr(c) for c in [*cycle, cycle[0]])
                problems.add(_label(first), f"cycle in parents: {path}", line=first.line, item=first.index)
            for member in chain:
                depth[member] = 0
            continue
        base = 0 if code is None else depth[code]
        if code is not None and base == 0:  # hangs below a cycle, already reported
            for member in chain:
                depth[member] = 0
            continue
        for member in reversed(chain):
            base += 1
            depth[member] = base
    deepest = 0
    for item in items:
        level = depth.get(item.code, 0)
        if level > MAX_DEPTH:
            problems.add(
                _label(item), f"nested {level} levels deep; the limit is {MAX_DEPTH}", line=item.line, item=item.index
            )
            break  # one report is enough: the rest of that branch is deeper still
        deepest = max(deepest, level)
    return deepest
