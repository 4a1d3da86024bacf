"""Splitting extracted text into passages: the unit that is searched, mapped and cited.

A passage is a slice of `Extracted.text` (`text[char_start:char_end] == passage.text`). Passages
are packed from whole blocks, then paragraphs, then sentences, then words, up to about
`target_chars` and never more than `max_chars`; they never cross a PDF page or a spreadsheet
sheet, a heading always starts a new passage, and nothing is ever cut inside a word (a single
"word" longer than max_chars, such as an encoded blob, is the one exception).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from a3e.evidence.extraction.base import Block, BlockKind, Extracted, Kind

DEFAULT_TARGET_CHARS = 1_000
DEFAULT_MAX_CHARS = 1_600
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(\s+)")
_LINE_BREAK = re.compile(r"\s*\n\s*")
_MAX_HEADING_IN_PATH = 120


@dataclass(frozen=True, slots=True)
class PassageDraft:
    ordinal: int  # 0-based, stable for the same extracted input
    text: str
    char_start: int
    char_end: int
    page: int | None  # PDF only
    heading: str | None  # the surrounding headings, outermost first: "Faculty > Qualifications"
    location: str  # for people: "p. 3", "Sheet 'Budget', rows 2–14", "§ Faculty Qualifications"


@dataclass
class _Open:
    start: int
    end: int
    blocks: list[Block]
    has_content: bool = False
    heading: str | None = None


def split_passages(
    extracted: Extracted, target_chars: int = DEFAULT_TARGET_CHARS, max_chars: int = DEFAULT_MAX_CHARS
) -> list[PassageDraft]:
    if not 50 <= target_chars <= max_chars:
        raise ValueError("split_passages needs 50 <= target_chars <= max_chars")
    text = extracted.text
    passages: list[PassageDraft] = []
    headings: list[tuple[int, str]] = []  # (level, text) of the open headings
    current: _Open | None = None
    group: object = None
    ordinals = _content_ordinals(extracted.blocks)
    minimum = target_chars // 3

    def path() -> str | None:
        if not headings:
            return None
        return " > ".join(_short(title) for _, title in headings)

    def flush() -> None:
        nonlocal current
        if current is not None:
            heading = current.heading if current.has_content else path()
            if extracted.kind is Kind.XLSX and current.blocks[0].sheet is not None:
                heading = current.blocks[0].sheet
            passages.append(
                PassageDraft(
                    ordinal=len(passages),
                    text=text[current.start : current.end],
                    char_start=current.start,
                    char_end=current.end,
                    page=current.blocks[0].page,
                    heading=heading,
                    location=_location(extracted.kind, current.blocks, heading, ordinals),
                )
            )
        current = None

    for block, start in zip(extracted.blocks, extracted.block_starts):
        key = (block.page, block.sheet)
        if key != group:
            flush()
            group = key
        if block.kind is BlockKind.HEADING and len(block.text) <= max_chars // 2:  # longer: split as text
            if current is not None and current.has_content:
                flush()
            level = block.level or 1
            while headings and headings[-1][0] >= level:
                headings.pop()
            headings.append((level, block.text))
            if current is None:
                current = _Open(start, start + len(block.text), [block])
            else:
                current.end = start + len(block.text)
                current.blocks.append(block)
            continue
        for atom_start, atom_end in _atoms(text, start, start + len(block.text), target_chars, max_chars):
            if current is not None:
                length = atom_end - current.start
                fits = length <= target_chars or (current.end - current.start < minimum and length <= max_chars)
                if not fits:
                    flush()
            if current is None:
                current = _Open(atom_start, atom_end, [block])
            else:
                current.end = atom_end
                if current.blocks[-1] is not block:
                    current.blocks.append(block)
            if not current.has_content:
                current.has_content = True
                current.heading = path()
    flush()
    return passages


def _short(title: str) -> str:
    title = " ".join(title.split())
    return title if len(title) <= _MAX_HEADING_IN_PATH else title[: _MAX_HEADING_IN_PATH - 1].rstrip() + "…"


def _content_ordinals(blocks: list[Block]) -> dict[int, int]:
    """id(block) → 1-based number among the non-heading blocks (for "¶ 3–5")."""
    numbers: dict[int, int] = {}
    for block in blocks:
        if block.kind is not BlockKind.HEADING:
            numbers[id(block)] = len(numbers) + 1
    return numbers


def _span(label: str, first: int, last: int) -> str:
    return f"{label} {first}" if first == last else f"{label}s {first}–{last}"


def _location(kind: Kind, blocks: list[Block], heading: str | None, ordinals: dict[int, int]) -> str:
    first = blocks[0]
    if kind is Kind.PDF and first.page is not None:
        return f"p. {first.page}"
    rows = [block.row for block in blocks if block.row is not None and block.kind is BlockKind.ROW]
    if kind is Kind.XLSX and first.sheet is not None and rows:
        return f"Sheet '{first.sheet}', {_span('row', min(rows), max(rows))}"
    if kind is Kind.CSV and rows:
        return _span("row", min(rows), max(rows))
    if heading:
        return f"§ {heading.rsplit(' > ', 1)[-1]}"
    numbers = [ordinals[id(block)] for block in blocks if id(block) in ordinals]
    if not numbers:
        return "§ (heading)"
    first_number, last_number = min(numbers), max(numbers)
    return f"¶ {first_number}" if first_number == last_number else f"¶ {first_number}–{last_number}"


def _atoms(text: str, start: int, end: int, target: int, maximum: int) -> list[tuple[int, int]]:
    """The block's span cut into pieces no longer than `target` where the text allows (paragraphs,
    then sentences, then lines), and never longer than `maximum` (then between words)."""
    if end - start <= target:
        return [(start, end)]
    pieces: list[tuple[int, int]] = []
    for paragraph in _split(text, start, end, _PARAGRAPH_BREAK, keep_left=False):
        if paragraph[1] - paragraph[0] <= target:
            pieces.append(paragraph)
            continue
        for sentence in _split(text, *paragraph, _SENTENCE_END, keep_left=True):
            if sentence[1] - sentence[0] <= maximum:
                pieces.append(sentence)
                continue
            for line in _split(text, *sentence, _LINE_BREAK, keep_left=False):
                pieces.extend(_words(text, *line, maximum))
    return [piece for piece in pieces if piece[1] > piece[0]]


def _split(text: str, start: int, end: int, pattern: re.Pattern[str], *, keep_left: bool) -> list[tuple[int, int]]:
    """Spans between matches of `pattern` in text[start:end]. With keep_left, only the pattern's
    group 1 (the whitespace) separates, so punctuation stays with the sentence it ends."""
    spans = []
    position = start
    for match in pattern.finditer(text, start, end):
        cut_start, cut_end = (match.start(1), match.end(1)) if keep_left else (match.start(), match.end())
        if cut_start > position:
            spans.append(_trimmed(text, position, cut_start))
        position = cut_end
    if position < end:
        spans.append(_trimmed(text, position, end))
    return [span for span in spans if span[1] > span[0]]


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _words(text: str, start: int, end: int, maximum: int) -> list[tuple[int, int]]:
    pieces = []
    while end - start > maximum:
        cut = -1
        for index in range(start + maximum, start, -1):
            if text[index].isspace():
                cut = index
                break
        if cut <= start:
            cut = start + maximum  # one unbroken token longer than a passage: no word boundary to use
            pieces.append((start, cut))
            start = cut
        else:
            pieces.append(_trimmed(text, start, cut))
            start = cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        pieces.append((start, end))
    return pieces
