"""Streaming XML from untrusted OOXML parts: no DTDs, no entity expansion, no network, bounded depth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from a3e.evidence.extraction.base import ExtractionFailed, ExtractionLimits


class Readable(Protocol):
    def read(self, size: int = -1) -> bytes: ...


class _NoDoctype:
    """Refuses a DOCTYPE in the prolog: OOXML parts never have one, and a DTD is how entity bombs start."""

    def __init__(self, stream: Readable, where: str) -> None:
        self._stream = stream
        self._where = where
        self._head = b""

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if len(self._head) < 4096:
            self._head += data[:4096]
            if b"<!DOCTYPE" in self._head or b"<!ENTITY" in self._head:
                raise ExtractionFailed(f"The {self._where} contains a DTD (document type declaration) — refused as unsafe")
        return data


def iter_xml(
    stream: Readable, limits: ExtractionLimits, where: str, *, ends_of: tuple[str, ...] | None = None
) -> Iterator[tuple[str, Any]]:
    """("start" | "end", element) events, with the nesting depth checked and parse errors
    turned into ExtractionFailed. `where` names the part in messages ("DOCX's word/document.xml").

    With `ends_of` (qualified tag names), only the end events of those elements, filtered inside
    lxml: much faster for row-by-row parts, and libxml2's own depth limit (256) then applies."""
    from lxml import etree

    parser = etree.iterparse(
        _NoDoctype(stream, where),
        events=("end",) if ends_of else ("start", "end"),
        tag=ends_of,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    depth = 0
    maximum = limits.max_nesting_depth
    try:
        if ends_of:
            yield from parser
            return
        for event, element in parser:
            if event == "start":
                depth += 1
                if depth > maximum:
                    raise ExtractionFailed(f"The {where} is nested more than {maximum} levels deep")
            else:
                depth -= 1
            yield event, element
    except etree.XMLSyntaxError as exc:
        message = str(exc)
        if "Excessive depth" in message:
            raise ExtractionFailed(f"The {where} is nested more than {min(maximum, 256)} levels deep") from None
        raise ExtractionFailed(f"The file is corrupt: the {where} is not well-formed XML ({message})") from None


def parse_xml(data: bytes, where: str) -> Any:
    """A whole (small) part as a tree, with the same protections as iter_xml; libxml2's own
    depth limit (256) applies."""
    from lxml import etree

    head = data[:4096]
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        raise ExtractionFailed(f"The {where} contains a DTD (document type declaration) — refused as unsafe")
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True, remove_pis=True,
    )
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        message = str(exc)
        if "Excessive depth" in message:
            raise ExtractionFailed(f"The {where} is nested more than 256 levels deep") from None
        raise ExtractionFailed(f"The file is corrupt: the {where} is not well-formed XML ({message})") from None
