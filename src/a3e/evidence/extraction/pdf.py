"""PDF text with PDFium (pypdfium2): one block per page, 1-based page numbers."""

from __future__ import annotations

from pathlib import Path

from a3e.evidence.extraction.base import (
    NO_TEXT_MESSAGE,
    BlockKind,
    BlockSink,
    Extracted,
    ExtractionFailed,
    ExtractionLimits,
    ExtractionStatus,
    Kind,
)

# PDFium's FPDF_GetLastError codes, as pypdfium2 reports them on PdfiumError.err_code.
_ERR_FILE, _ERR_FORMAT, _ERR_PASSWORD, _ERR_SECURITY = 2, 3, 4, 5


def extract_pdf(path: Path, limits: ExtractionLimits) -> Extracted:
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == _ERR_PASSWORD or "password" in str(exc).lower():
            raise ExtractionFailed("The PDF is encrypted (password protected)") from None
        if code == _ERR_SECURITY:
            raise ExtractionFailed("The PDF uses an unsupported security handler (DRM); it cannot be read") from None
        raise ExtractionFailed(f"The file is corrupt: the PDF cannot be opened ({_plain(exc)})") from None
    try:
        page_count = len(document)
        if page_count > limits.max_pages:
            raise ExtractionFailed(f"The PDF has {page_count:,} pages; the limit is {limits.max_pages:,}")
        if page_count == 0:
            raise ExtractionFailed("The file is corrupt: the PDF has no pages")
        sink = BlockSink(limits)
        without_text: list[int] = []
        for index in range(page_count):
            number = index + 1
            try:
                page = document[index]
            except pdfium.PdfiumError as exc:
                raise ExtractionFailed(f"The file is corrupt: page {number} of the PDF cannot be read ({_plain(exc)})") from None
            try:
                textpage = page.get_textpage()
                try:
                    text = textpage.get_text_range()
                finally:
                    textpage.close()
            finally:
                page.close()
            before = len(sink.blocks)
            sink.add(text, BlockKind.PAGE, page=number)
            if len(sink.blocks) == before:
                without_text.append(number)
    finally:
        document.close()
    if not sink.blocks:
        return Extracted(
            Kind.PDF, [], page_count=page_count, status=ExtractionStatus.NO_TEXT,
            message=NO_TEXT_MESSAGE, pages_without_text=without_text,
        )
    return Extracted(Kind.PDF, sink.blocks, page_count=page_count, pages_without_text=without_text)


def _plain(exc: Exception) -> str:
    message = str(exc)
    return message.split("(PDFium: ", 1)[-1].rstrip(").") if "(PDFium: " in message else message
