"""Document type detection, structure-preserving text extraction, passage splitting, and
running all of it safely on hostile files. Pure library: no database, no HTTP.

    kind = sniff(path, filename)                      # UnsupportedFile if wrong or unknown
    extracted = extract_isolated(path, kind, limits)  # ExtractionFailed if encrypted/corrupt/hostile
    passages = split_passages(extracted)

Parsers (PDFium, lxml) are imported only when a document of their kind is read.
"""

from a3e.evidence.extraction.base import (
    BLOCK_SEPARATOR,
    DEFAULT_LIMITS,
    NO_TEXT_MESSAGE,
    Block,
    BlockKind,
    Extracted,
    ExtractionFailed,
    ExtractionLimits,
    ExtractionStatus,
    Kind,
    UnsupportedFile,
)
from a3e.evidence.extraction.extractor import extract
from a3e.evidence.extraction.isolation import ExtractionPool, extract_isolated
from a3e.evidence.extraction.passages import PassageDraft, split_passages
from a3e.evidence.extraction.sniff import sniff
from a3e.evidence.extraction.zipfiles import SkippedMember, ZipContents, ZipDocument, iter_zip_documents, unpack_zip

__all__ = [
    "BLOCK_SEPARATOR",
    "DEFAULT_LIMITS",
    "NO_TEXT_MESSAGE",
    "Block",
    "BlockKind",
    "Extracted",
    "ExtractionFailed",
    "ExtractionLimits",
    "ExtractionPool",
    "ExtractionStatus",
    "Kind",
    "PassageDraft",
    "SkippedMember",
    "UnsupportedFile",
    "ZipContents",
    "ZipDocument",
    "extract",
    "extract_isolated",
    "iter_zip_documents",
    "sniff",
    "split_passages",
    "unpack_zip",
]
