"""Deciding whether bytes are text, and decoding them: BOMs first, then UTF-8, then cp1252 only
when the result is clearly text (no NUL, no stray control characters)."""

from __future__ import annotations

import codecs
import re

# C0 controls other than tab, newline, carriage return and form feed (and DEL): never in real text.
_BINARY_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.I)
_HTML_SIGNS = re.compile(
    r"<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>]|<(?:p|div|h[1-6]|table|ul|ol|span|a|br|title|meta|section|article)[\s>/]",
    re.I,
)


def decode_text(data: bytes, *, complete: bool = True, declared: str | None = None) -> tuple[str, str] | None:
    """(text, encoding) when `data` is text, else None. With complete=False, `data` is a prefix
    of the file and a multi-byte character cut at its end is not held against it."""
    if data.startswith(codecs.BOM_UTF8):
        candidates = ["utf-8-sig"]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ["utf-16"]
    else:
        candidates = ["utf-8"]
        if declared:
            candidates.append(declared)
        candidates.append("cp1252")
    for encoding in candidates:
        try:
            text = codecs.getincrementaldecoder(encoding)(errors="strict").decode(data, final=complete)
        except (UnicodeDecodeError, LookupError):
            continue
        if _BINARY_CONTROLS.search(text):
            return None
        return text, encoding
    return None


def declared_html_charset(data: bytes) -> str | None:
    match = _META_CHARSET.search(data[:4096])
    if not match:
        return None
    name = match.group(1).decode("ascii").lower()
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def looks_like_html(text: str) -> bool:
    return bool(_HTML_SIGNS.search(text[:65536]))
