"""The shapes every extractor shares: kinds, limits, blocks, the extracted result and the errors.

The canonical text of a revision is its blocks' texts joined by `BLOCK_SEPARATOR`; passages and
blocks carry exact offsets into that text, so `extracted.text[start:end]` is what they quote.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from functools import cached_property
from typing import Any

from a3e.core.errors import AppError

BLOCK_SEPARATOR = "\n\n"
NO_TEXT_MESSAGE = "no text found — scanned document?"


class Kind(StrEnum):
    PDF = "pdf"
    DOCX = "docx"
    XLSX = "xlsx"
    CSV = "csv"
    TXT = "txt"
    MD = "md"
    HTML = "html"
    ZIP = "zip"


class BlockKind(StrEnum):
    PAGE = "page"  # a PDF page's text
    HEADING = "heading"
    PARAGRAPH = "paragraph"
    ROW = "row"  # a spreadsheet, CSV or table row


class ExtractionStatus(StrEnum):
    OK = "ok"
    NO_TEXT = "no_text"  # a successful extraction that found nothing to read (a scanned PDF)


class UnsupportedFile(AppError):
    """The file is not a type we read, or its name and content disagree."""

    status_code = 415
    code = "unsupported_file"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ExtractionFailed(AppError):
    """The file is of a supported type but cannot be read: encrypted, corrupt, or hostile."""

    status_code = 422
    code = "extraction_failed"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def megabytes(count: int) -> str:
    return f"{count / 1_000_000:,.0f} MB"


@dataclass(frozen=True)
class ExtractionLimits:
    """What one document may cost. Defaults fit real accreditation evidence with a wide margin."""

    max_pages: int = 5_000
    max_uncompressed_bytes: int = 200_000_000  # all members of one OOXML file or bulk ZIP together
    max_compression_ratio: float = 100.0  # per member, for members large enough to matter
    max_zip_members: int = 10_000
    max_nesting_depth: int = 256  # XML and HTML elements
    max_rows: int = 200_000  # spreadsheet and CSV rows with content
    max_cells: int = 2_000_000  # spreadsheet cells with content
    max_characters: int = 20_000_000  # of extracted text
    timeout_seconds: float = 120.0  # wall clock, enforced by extract_isolated
    memory_mb: int = 1_024  # address space of the isolated worker

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ExtractionLimits.{item.name} must be a positive number, not {value!r}")
        if self.max_compression_ratio < 1:
            raise ValueError("ExtractionLimits.max_compression_ratio must be at least 1")
        if self.memory_mb < 64:
            raise ValueError("ExtractionLimits.memory_mb must be at least 64 (the interpreter itself needs some)")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_LIMITS = ExtractionLimits()


@dataclass(frozen=True, slots=True)
class Block:
    """One unit of structure: a PDF page, a heading, a paragraph, a row."""

    text: str
    kind: BlockKind
    level: int | None = None  # headings: 1 is the top level
    page: int | None = None  # PDF, 1-based
    sheet: str | None = None  # XLSX
    row: int | None = None  # XLSX / CSV: the row number as a spreadsheet shows it; DOCX/HTML tables: 1-based
    table: int | None = None  # DOCX / HTML: 1-based table number


@dataclass
class Extracted:
    kind: Kind
    blocks: list[Block]
    page_count: int | None = None  # PDF
    status: ExtractionStatus = ExtractionStatus.OK
    message: str | None = None  # shown with the status, e.g. NO_TEXT_MESSAGE
    pages_without_text: list[int] = field(default_factory=list)  # PDF pages that had no text layer

    @cached_property
    def block_starts(self) -> list[int]:
        """Offset of each block's text in `text`."""
        starts, position = [], 0
        for block in self.blocks:
            starts.append(position)
            position += len(block.text) + len(BLOCK_SEPARATOR)
        return starts

    @cached_property
    def text(self) -> str:
        """The canonical full text: the blocks joined by BLOCK_SEPARATOR."""
        return BLOCK_SEPARATOR.join(block.text for block in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "page_count": self.page_count,
            "status": self.status.value,
            "message": self.message,
            "pages_without_text": self.pages_without_text,
            "blocks": [
                [b.text, b.kind.value, b.level, b.page, b.sheet, b.row, b.table] for b in self.blocks
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Extracted:
        blocks = [
            Block(text, BlockKind(kind), level, page, sheet, row, table)
            for text, kind, level, page, sheet, row, table in data["blocks"]
        ]
        return cls(
            kind=Kind(data["kind"]),
            blocks=blocks,
            page_count=data["page_count"],
            status=ExtractionStatus(data["status"]),
            message=data["message"],
            pages_without_text=list(data["pages_without_text"]),
        )


# Control characters never belong in extracted text (tab and newline do).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff\u00ad]")
_TRAILING_SPACE = re.compile(r"[ \t\u00a0]+\n")
_BLANK_RUNS = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Newlines normalised, control characters and soft hyphens dropped, blank runs collapsed."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("\n", text)
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


class BlockSink:
    """Collects blocks, drops empty ones and enforces the character limit as text arrives."""

    def __init__(self, limits: ExtractionLimits) -> None:
        self.blocks: list[Block] = []
        self.characters = 0
        self._limit = limits.max_characters

    def add(self, text: str, kind: BlockKind, **location: Any) -> None:
        text = clean_text(text)
        if not text:
            return
        self.characters += len(text) + len(BLOCK_SEPARATOR)
        if self.characters > self._limit:
            raise ExtractionFailed(
                f"The document has more than {self._limit:,} characters of text; the limit is {self._limit:,}"
            )
        self.blocks.append(Block(text, kind, **location))
