"""The built-in accreditor catalogs: versioned data packages in `a3e/standards/data/`.

One JSON file per accreditor and edition (`sacscoc-2018.json`, `hlc-2025.json`, …). They are
read once, on first use, checked with the same validator as custom frameworks plus the rules of
a shipped catalog (our own description and typical evidence on every node, one default edition
per accreditor), and kept in memory with their API answers already serialized. A broken data
file makes these endpoints fail loudly (and the tests fail); it never stops the service starting.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from a3e.standards.validator import CatalogInvalid, Item, Problem, parse_catalog

DATA_PACKAGE = "a3e.standards.data"
FORMAT = "a3e-catalog/1"


class CatalogDataError(RuntimeError):
    """A shipped data file is invalid: a packaging bug, reported with every problem found."""


@dataclass(frozen=True)
class Node:
    code: str
    parent: str | None
    title: str
    description: str
    typical_evidence: tuple[str, ...]
    kind: str
    depth: int
    position: int


@dataclass
class Edition:
    accreditor: str
    edition: str
    title: str
    effective: str | None
    default: bool
    numbering: str | None
    notes: str | None
    nodes: list[Node]
    by_code: dict[str, Node]
    children: dict[str | None, list[Node]]
    tree_json: bytes = b""  # the `items` array of the standards answer, serialized once
    etag: str = ""

    @property
    def standard_count(self) -> int:
        return len(self.nodes)

    @property
    def top_level_count(self) -> int:
        return len(self.children.get(None, []))

    def tree(self) -> list[dict[str, Any]]:
        return [self._node_dict(node) for node in self.children.get(None, [])]

    def _node_dict(self, node: Node) -> dict[str, Any]:
        return {
            "code": node.code,
            "parent": node.parent,
            "title": node.title,
            "kind": node.kind,
            "description": node.description,
            "typical_evidence": list(node.typical_evidence),
            "edition": self.edition,
            "children": [self._node_dict(child) for child in self.children.get(node.code, [])],
        }

    def summary(self) -> dict[str, Any]:
        return {
            "edition": self.edition,
            "title": self.title,
            "effective": self.effective,
            "default": self.default,
            "standard_count": self.standard_count,
            "top_level_count": self.top_level_count,
            "numbering": self.numbering,
            "notes": self.notes,
        }


@dataclass
class Accreditor:
    code: str
    name: str
    editions: dict[str, Edition] = field(default_factory=dict)  # in the order of their files

    @property
    def default_edition(self) -> Edition:
        return next(edition for edition in self.editions.values() if edition.default)

    def edition(self, edition: str | None) -> Edition | None:
        if edition is None:
            return self.default_edition
        return self.editions.get(edition.strip())

    def summary(self) -> dict[str, Any]:
        default = self.default_edition
        return {
            "code": self.code,
            "name": self.name,
            "default_edition": default.edition,
            "standard_count": default.standard_count,
            "editions": [edition.summary() for edition in self.editions.values()],
        }


@dataclass
class Registry:
    accreditors: dict[str, Accreditor]  # by code, in a stable order
    list_json: bytes = b""
    list_etag: str = ""

    def get(self, code: str) -> Accreditor | None:
        return self.accreditors.get(code.strip().upper())


# The six US institutional accreditors, in the order the API lists them.
ACCREDITOR_ORDER = ("SACSCOC", "HLC", "MSCHE", "NECHE", "NWCCU", "WSCUC")

_lock = threading.Lock()
_registry: Registry | None = None


def registry() -> Registry:
    """The built-in catalogs, loaded and validated on first use."""
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                _registry = load_registry(_data_files())
    return _registry


def _data_files() -> list[tuple[str, bytes]]:
    folder = resources.files(DATA_PACKAGE)
    return sorted(
        (entry.name, entry.read_bytes()) for entry in folder.iterdir() if entry.name.endswith(".json")
    )


def load_registry(files: Iterable[tuple[str, bytes]]) -> Registry:
    problems: list[str] = []
    accreditors: dict[str, Accreditor] = {}
    for name, data in files:
        try:
            edition, code, full_name = load_edition(name, data)
        except CatalogDataError as exc:
            problems.append(str(exc))
            continue
        accreditor = accreditors.setdefault(code, Accreditor(code, full_name))
        if accreditor.name != full_name:
            problems.append(f"{name}: accreditor name {full_name!r} differs from {accreditor.name!r}")
        if edition.edition in accreditor.editions:
            problems.append(f"{name}: {code} edition {edition.edition!r} is shipped twice")
        accreditor.editions[edition.edition] = edition
    for code, accreditor in accreditors.items():
        defaults = [e.edition for e in accreditor.editions.values() if e.default]
        if len(defaults) != 1:
            problems.append(f"{code}: exactly one edition must be the default, found {defaults or 'none'}")
    if problems:
        raise CatalogDataError("invalid built-in catalogs:\n  " + "\n  ".join(problems))
    ordered = {code: accreditors[code] for code in ACCREDITOR_ORDER if code in accreditors}
    ordered.update({code: a for code, a in sorted(accreditors.items()) if code not in ordered})
    for accreditor in ordered.values():
        accreditor.editions = dict(sorted(accreditor.editions.items(), key=lambda kv: kv[0]))
    reg = Registry(ordered)
    reg.list_json = _dumps({"items": [a.summary() for a in ordered.values()], "total": len(ordered)})
    reg.list_etag = '"' + hashlib.sha256(reg.list_json).hexdigest()[:32] + '"'
    return reg


def load_edition(name: str, data: bytes) -> tuple[Edition, str, str]:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise CatalogDataError(f"{name}: not valid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CatalogDataError(f"{name}: not an {FORMAT} file")
    accreditor = document.get("accreditor") or {}
    code, full_name = accreditor.get("code"), accreditor.get("name")
    edition_name, title = document.get("edition"), document.get("title")
    missing = [k for k, v in (("accreditor.code", code), ("accreditor.name", full_name), ("edition", edition_name), ("title", title)) if not v]
    if missing:
        raise CatalogDataError(f"{name}: missing {', '.join(missing)}")
    try:
        parsed = parse_catalog(data, "json", filename=name)
    except CatalogInvalid as exc:
        raise CatalogDataError(f"{name}: " + "; ".join(str(p) for p in exc.problems)) from None
    problems = [str(p) for p in _shipped_rules(parsed.items)]
    if problems:
        raise CatalogDataError(f"{name}: " + "; ".join(problems))
    depth: dict[str, int] = {}
    nodes: list[Node] = []
    children: dict[str | None, list[Node]] = {}
    for position, item in enumerate(parsed.items):
        level = 1 if item.parent is None else depth[item.parent] + 1 if item.parent in depth else 0
        if level == 0:
            raise CatalogDataError(f"{name}: {item.where}: a parent must come before its children")
        depth[item.code] = level
        node = Node(
            code=item.code,
            parent=item.parent,
            title=item.title,
            description=item.text or "",
            typical_evidence=tuple(item.extra["typical_evidence"]),
            kind=item.extra["kind"],
            depth=level,
            position=position,
        )
        nodes.append(node)
        children.setdefault(item.parent, []).append(node)
    edition = Edition(
        accreditor=code,
        edition=str(edition_name),
        title=title,
        effective=document.get("effective"),
        default=bool(document.get("default")),
        numbering=document.get("numbering"),
        notes=document.get("notes"),
        nodes=nodes,
        by_code={node.code: node for node in nodes},
        children=children,
    )
    edition.tree_json = _dumps(edition.tree())
    edition.etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    return edition, code, full_name


def _normalized(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .")


def _repeats(description: str, title: str) -> bool:
    """The description says nothing the title does not: the same words, or a subset of them."""
    words = set(_normalized(description).replace(",", " ").split())
    return _normalized(description) == _normalized(title) or words <= set(_normalized(title).replace(",", " ").split())


def _shipped_rules(items: list[Item]) -> list[Problem]:
    """What a shipped catalog needs beyond a valid tree: our own description (never just the
    title again), typical evidence and a kind on every node."""
    problems: list[Problem] = []
    for item in items:
        where = f"{item.where} (id {item.code!r})"
        description = item.text or ""
        if not description.strip():
            problems.append(Problem(where, "missing description"))
        elif _repeats(description, item.title):
            problems.append(Problem(where, "the description repeats the title; describe what the standard asks for"))
        evidence = item.extra.get("typical_evidence")
        if not isinstance(evidence, list) or not evidence or not all(isinstance(e, str) and e.strip() for e in evidence):
            problems.append(Problem(where, "typical_evidence must be a non-empty list of text"))
        if not isinstance(item.extra.get("kind"), str) or not item.extra["kind"]:
            problems.append(Problem(where, "missing kind"))
    return problems


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
