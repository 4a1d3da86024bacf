"""Throughput of evidence extraction on one core: sniff + extract + split_passages, in-process and
through extract_isolated (the worker process the job runner uses), on a generated corpus of
realistic prose (300 text-PDF pages in 30 files, 50 DOCX). Also measures the libraries we chose
against the alternatives (pypdf for PDF text, python-docx for DOCX) and the isolation overhead
per call. Needs the test extra (the corpus generators live in tests/documents.py):

    ./scripts/test tests/test_extraction.py -q      # once, to install the test extra into .venv
    .venv/bin/python bench/bench_extraction.py [--rounds 3] [--json]

Figures are the best of `--rounds` wall-clock runs, pinned to one core (the worker inherits the pin).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PDF_FILES, PAGES_PER_PDF, DOCX_FILES = 30, 10, 50


def build_corpus(directory: Path) -> tuple[list[Path], list[Path]]:
    from tests.documents import make_docx, make_pdf, prose

    pdfs = [
        make_pdf(directory / f"report-{n:02d}.pdf", [prose(22, seed=n + page) for page in range(PAGES_PER_PDF)], font_size=10)
        for n in range(PDF_FILES)
    ]
    docxs = []
    for n in range(DOCX_FILES):
        blocks: list[tuple[str, object]] = [("title", f"Program Review {n}")]
        for section in range(5):
            blocks.append(("h1", f"Standard {section + 1}: Faculty and resources"))
            blocks.append(("h2", "Evidence"))
            blocks.extend(("p", prose(4, seed=n + section + k)) for k in range(5))
        blocks.append(("table", [["Name", "Degree", "Discipline"]] + [[f"Person {k}", "PhD", "Biology"] for k in range(10)]))
        docxs.append(make_docx(directory / f"review-{n:02d}.docx", blocks))
    return pdfs, docxs


def best_of(rounds: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    options = parser.parse_args()
    try:
        import docx  # noqa: F401
        import fpdf  # noqa: F401
        import pypdf  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"missing {exc.name}: install the test extra first (./scripts/test installs it)") from None
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from a3e.evidence.extraction import ExtractionPool, Kind, extract, sniff, split_passages

    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="a3e-bench-") as name:
        directory = Path(name)
        started = time.perf_counter()
        pdfs, docxs = build_corpus(directory)
        figures["corpus_seconds"] = time.perf_counter() - started
        pdf_mb = sum(path.stat().st_size for path in pdfs) / 1e6
        docx_mb = sum(path.stat().st_size for path in docxs) / 1e6
        pages = PDF_FILES * PAGES_PER_PDF
        tiny = directory / "tiny.txt"
        tiny.write_text("One short paragraph.\n")

        def in_process(paths: list[Path]) -> int:
            count = 0
            for path in paths:
                count += len(split_passages(extract(path, sniff(path, path.name))))
            return count

        pool = ExtractionPool()
        started = time.perf_counter()
        pool.extract(tiny, Kind.TXT)
        figures["worker_start_ms"] = (time.perf_counter() - started) * 1000

        def isolated(paths: list[Path]) -> int:
            count = 0
            for path in paths:
                count += len(split_passages(pool.extract(path, sniff(path, path.name))))
            return count

        passages_per_page = in_process(pdfs) / pages
        for label, paths, units, megabytes in (("pdf", pdfs, pages, pdf_mb), ("docx", docxs, len(docxs), docx_mb)):
            unit = "pages" if label == "pdf" else "docs"
            for mode, runner in (("in_process", in_process), ("isolated", isolated)):
                seconds = best_of(options.rounds, lambda: runner(paths))
                figures[f"{label}_{mode}_{unit}_per_s"] = units / seconds
                figures[f"{label}_{mode}_mb_per_s"] = megabytes / seconds

        # The libraries not chosen, text only (no sniff, no passages), same files.
        def pdfium_text_only() -> None:
            import pypdfium2 as pdfium

            for path in pdfs:
                document = pdfium.PdfDocument(str(path))
                for page in document:
                    page.get_textpage().get_text_range()
                document.close()

        def pypdf_text_only() -> None:
            from pypdf import PdfReader

            for path in pdfs:
                for page in PdfReader(path).pages:
                    page.extract_text()

        def ours_docx_only() -> None:
            for path in docxs:
                extract(path, Kind.DOCX)

        def python_docx_only() -> None:
            from docx import Document

            for path in docxs:
                document = Document(str(path))
                [paragraph.text for paragraph in document.paragraphs]
                [cell.text for table in document.tables for row in table.rows for cell in row.cells]

        figures["pypdfium2_text_pages_per_s"] = pages / best_of(options.rounds, pdfium_text_only)
        figures["pypdf_text_pages_per_s"] = pages / best_of(options.rounds, pypdf_text_only)
        figures["lxml_iterparse_docx_per_s"] = len(docxs) / best_of(options.rounds, ours_docx_only)
        figures["python_docx_per_s"] = len(docxs) / best_of(options.rounds, python_docx_only)

        calls = 200
        figures["call_in_process_ms"] = best_of(options.rounds, lambda: [extract(tiny, Kind.TXT) for _ in range(calls)]) / calls * 1000
        figures["call_isolated_ms"] = best_of(options.rounds, lambda: [pool.extract(tiny, Kind.TXT) for _ in range(calls)]) / calls * 1000
        figures["passages_per_pdf_page"] = passages_per_page
        pool.close()

    if options.json:
        print(json.dumps({key: round(value, 2) for key, value in figures.items()}, indent=2))
        return
    print(f"corpus: {pages} PDF pages in {PDF_FILES} files ({pdf_mb:.1f} MB), {DOCX_FILES} DOCX ({docx_mb:.1f} MB); "
          f"built in {figures['corpus_seconds']:.1f} s; one core, best of {options.rounds}")
    print(f"{'sniff + extract + split':<34}{'in-process':>14}{'isolated':>14}")
    print(f"{'PDF pages/s':<34}{figures['pdf_in_process_pages_per_s']:>14,.0f}{figures['pdf_isolated_pages_per_s']:>14,.0f}")
    print(f"{'PDF MB/s':<34}{figures['pdf_in_process_mb_per_s']:>14,.1f}{figures['pdf_isolated_mb_per_s']:>14,.1f}")
    print(f"{'DOCX documents/s':<34}{figures['docx_in_process_docs_per_s']:>14,.0f}{figures['docx_isolated_docs_per_s']:>14,.0f}")
    print(f"{'DOCX MB/s':<34}{figures['docx_in_process_mb_per_s']:>14,.1f}{figures['docx_isolated_mb_per_s']:>14,.1f}")
    print(f"passages per PDF page: {figures['passages_per_pdf_page']:.2f}")
    print(f"PDF text only: pypdfium2 {figures['pypdfium2_text_pages_per_s']:,.0f} pages/s, pypdf {figures['pypdf_text_pages_per_s']:,.0f} pages/s")
    print(f"DOCX only: lxml iterparse (ours) {figures['lxml_iterparse_docx_per_s']:,.0f} docs/s, python-docx {figures['python_docx_per_s']:,.0f} docs/s")
    print(f"per call, tiny file: in-process {figures['call_in_process_ms']:.2f} ms, isolated {figures['call_isolated_ms']:.2f} ms; "
          f"worker start {figures['worker_start_ms']:.0f} ms")


if __name__ == "__main__":
    main()
