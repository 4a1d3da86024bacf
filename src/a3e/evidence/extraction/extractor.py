"""extract(): the one entry point that picks the reader for a kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from a3e.evidence.extraction.base import DEFAULT_LIMITS, Extracted, ExtractionFailed, ExtractionLimits, Kind, UnsupportedFile


def _reader(kind: Kind) -> Callable[[Path, ExtractionLimits], Extracted]:
    # Imported here so that importing the package loads no parser (PDFium, lxml) until needed.
    if kind is Kind.PDF:
        from a3e.evidence.extraction.pdf import extract_pdf

        return extract_pdf
    if kind is Kind.DOCX:
        from a3e.evidence.extraction.docx import extract_docx

        return extract_docx
    if kind is Kind.XLSX:
        from a3e.evidence.extraction.xlsx import extract_xlsx

        return extract_xlsx
    if kind is Kind.HTML:
        from a3e.evidence.extraction.html import extract_html

        return extract_html
    from a3e.evidence.extraction import text

    readers = {Kind.TXT: text.extract_txt, Kind.MD: text.extract_md, Kind.CSV: text.extract_csv}
    if kind in readers:
        return readers[kind]
    raise UnsupportedFile("A ZIP archive is not one document: unpack it with iter_zip_documents and extract each file")


def extract(path: Path, kind: Kind | str, limits: ExtractionLimits = DEFAULT_LIMITS) -> Extracted:
    """Structure-preserving text of the file at `path`, already identified as `kind` by sniff().
    Raises ExtractionFailed (encrypted, corrupt, over a limit) or UnsupportedFile."""
    reader = _reader(Kind(kind))
    try:
        return reader(Path(path), limits)
    except (ExtractionFailed, UnsupportedFile):
        raise
    except RecursionError:
        raise ExtractionFailed(f"The {Kind(kind).value.upper()} is nested too deeply to read") from None
    except MemoryError:
        raise
    except OSError as exc:
        raise ExtractionFailed(f"The file cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # a parser's own error on malformed input: corrupt, not a crash
        raise ExtractionFailed(f"The file is corrupt: {type(exc).__name__}: {exc}"[:500]) from None
