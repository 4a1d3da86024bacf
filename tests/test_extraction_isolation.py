"""extract_isolated(): the same result as extract(), while a crash, a hang or running out of
memory in the worker becomes ExtractionFailed and the caller carries on."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from a3e.evidence.extraction import (
    ExtractionFailed,
    ExtractionLimits,
    ExtractionPool,
    Kind,
    UnsupportedFile,
    extract,
    extract_isolated,
)
from tests.documents import make_docx, make_encrypted_pdf, make_pdf, make_xlsx, prose


@pytest.fixture
def pool() -> Iterator[ExtractionPool]:
    own = ExtractionPool()
    yield own
    own.close()


def slow_csv(path: Path, rows: int = 1_500_000) -> Path:
    """A CSV that takes seconds to extract (a real file, no test hook)."""
    line = "BIO 101,Introduction to biology,4,Fall\n"
    path.write_text("Course,Title,Credits,Term\n" + line * rows)
    return path


GENEROUS = ExtractionLimits(max_rows=10_000_000, max_characters=200_000_000)


def test_isolated_extraction_equals_in_process_extraction(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "a.pdf", [prose(10), prose(5, 2)])
    docx = make_docx(tmp_path / "a.docx", [("h1", "Faculty"), ("p", prose(3)), ("table", [["a", "b"]])])
    xlsx = make_xlsx(tmp_path / "a.xlsx", {"Budget": [["Item", "Amount"], ["Library", 1200]]})
    for path, kind in ((pdf, Kind.PDF), (docx, Kind.DOCX), (xlsx, Kind.XLSX)):
        assert extract_isolated(path, kind) == extract(path, kind)


def test_failures_keep_their_type_and_reason(tmp_path: Path) -> None:
    encrypted = make_encrypted_pdf(tmp_path / "a.pdf", ["secret"])
    with pytest.raises(ExtractionFailed, match=r"^The PDF is encrypted \(password protected\)$"):
        extract_isolated(encrypted, Kind.PDF)
    with pytest.raises(UnsupportedFile):
        extract_isolated(encrypted, Kind.ZIP)
    two_pages = make_pdf(tmp_path / "b.pdf", ["x", "y"])
    with pytest.raises(ExtractionFailed, match="^The PDF has 2 pages; the limit is 1$"):
        extract_isolated(two_pages, Kind.PDF, ExtractionLimits(max_pages=1))


def test_workers_are_reused(tmp_path: Path, pool: ExtractionPool) -> None:
    path = make_docx(tmp_path / "a.docx", [("p", "hello")])
    pool.extract(path, Kind.DOCX)
    first = pool.worker_pids
    for _ in range(5):
        pool.extract(path, Kind.DOCX)
    assert pool.worker_pids == first and len(first) == 1


def test_a_worker_is_replaced_after_its_task_quota(tmp_path: Path) -> None:
    pool = ExtractionPool(max_tasks_per_worker=2)
    try:
        path = make_docx(tmp_path / "a.docx", [("p", "hello")])
        pool.extract(path, Kind.DOCX)
        first = pool.worker_pids
        pool.extract(path, Kind.DOCX)
        assert pool.worker_pids == []  # retired after its second task
        pool.extract(path, Kind.DOCX)
        assert pool.worker_pids != first
    finally:
        pool.close()


def test_a_hang_is_stopped_at_the_timeout(tmp_path: Path, pool: ExtractionPool) -> None:
    path = slow_csv(tmp_path / "a.csv")
    limits = ExtractionLimits(max_rows=10_000_000, max_characters=200_000_000, timeout_seconds=0.5)
    pool.extract(make_docx(tmp_path / "warm.docx", [("p", "x")]), Kind.DOCX)  # start-up is not part of a task
    (worker,) = pool.worker_pids
    started = time.monotonic()
    with pytest.raises(ExtractionFailed, match=r"^Extraction took longer than 0.5 seconds and was stopped$"):
        pool.extract(path, Kind.CSV, limits)
    assert 0.5 <= time.monotonic() - started < 3
    assert pool.worker_pids == [] and not _alive(worker)
    assert pool.extract(tmp_path / "warm.docx", Kind.DOCX).text == "x"  # the caller carries on


def test_a_crashing_worker_becomes_extraction_failed(tmp_path: Path, pool: ExtractionPool) -> None:
    path = slow_csv(tmp_path / "a.csv")
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            pool.extract(path, Kind.CSV, GENEROUS)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not pool.worker_pids and time.monotonic() < deadline:
        time.sleep(0.01)
    (worker,) = pool.worker_pids
    time.sleep(0.3)  # well inside the seconds the extraction takes
    os.kill(worker, signal.SIGSEGV)  # what a parser bug on a hostile file does
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], ExtractionFailed)
    assert outcome[0].reason == "The extraction process crashed (SIGSEGV) while reading this file"
    assert pool.worker_pids == []
    assert pool.extract(make_pdf(tmp_path / "a.pdf", ["Still working"]), Kind.PDF).text == "Still working"


def test_a_file_that_needs_more_memory_than_the_cap(tmp_path: Path, pool: ExtractionPool) -> None:
    path = tmp_path / "huge.txt"
    path.write_bytes((prose(5) + "\n\n").encode() * 180_000)  # about 120 MB: reading and decoding it needs twice that
    limits = ExtractionLimits(memory_mb=256, max_characters=500_000_000)
    with pytest.raises(ExtractionFailed, match=r"^Extraction ran out of memory \(the limit is 256 MB\)$"):
        pool.extract(path, Kind.TXT, limits)
    assert pool.worker_pids == []  # a worker that ran out of memory is not reused
    small = make_docx(tmp_path / "a.docx", [("p", "fine")])
    assert pool.extract(small, Kind.DOCX, limits).text == "fine"


def test_concurrent_callers_get_their_own_workers(tmp_path: Path, pool: ExtractionPool) -> None:
    paths = [make_pdf(tmp_path / f"{n}.pdf", [f"Document {n}"]) for n in range(4)]
    results: dict[int, str] = {}

    def run(index: int) -> None:
        results[index] = pool.extract(paths[index], Kind.PDF).text

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {n: f"Document {n}" for n in range(4)}
    assert 1 <= len(pool.worker_pids) <= max(1, os.cpu_count() or 1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
