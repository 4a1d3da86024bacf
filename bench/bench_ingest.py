"""The `ingest` section: end-to-end ingestion of a generated corpus through the real service —
upload (`POST /api/v1/workspaces/{id}/documents`) to every document's current revision `ready`
with its passages written.

Corpus (generated once per run into a temporary directory, fixed seeds): text PDFs of realistic
prose with 1,000 pages in all (100 files of 2 to 20 pages) and 200 DOCX files with headings,
paragraphs and a table (tests/documents.py's generators). `--quick` takes a tenth.

Configurations (each a row of the report):

- PostgreSQL + Redis + `a3e worker` processes: the scale-out deployment. `a3e serve` (one web
  process) receives the uploads and queues one `evidence.process_revision` job per document in
  Redis; N `a3e worker --workers T` processes consume them, each extracting in its own isolated
  extraction subprocess (src/a3e/evidence/extraction/isolation.py). A "worker" in the tables is one
  `a3e worker` process; T is the jobs it runs at once.
- SQLite, embedded jobs: `a3e serve` alone, as `scripts/serve` runs it (A3E_JOB_WORKERS threads
  in the web process consume the SQLite queue file).

Each configuration runs the PDFs and the DOCX files separately (so that the PDF pages/s figure is
clean), each into a new workspace, with `--ingest-concurrency` uploads in flight. The clock starts
just before the first upload is sent and stops at the last revision's `processed_at` (written by
the worker in the same transaction as the passages); the list endpoint is polled meanwhile to see
when everything is ready. CPU seconds of every server-side process (web, workers and their
extraction subprocesses, PostgreSQL with its backends, Redis) are read with psutil, exited
children included; peak RSS is sampled every 50 ms, summed over each process tree.

Every figure is checked: each document must end `ready` (none failed), with passages, and the
PDFs' page counts must add up to the corpus's. All traffic goes to 127.0.0.1; every process is
stopped on exit (bench/lib.py).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil

from bench_auth import (
    Cluster,
    _busy,
    _expect,
    call,
    clean_text,
    describe_cluster,
    login,
    migrate,
    register_and_login,
    server_env,
    start_cluster,
    stop_cluster,
    wait_quiet,
)
from lib import A3E, HOST, ROOT, a3e_env, clean_env, cpu_count, free_port, log, scrub_path, spawn, stop, wait_ready

TARGET_PAGES_PER_CORE_S = 50.0
PDF_PAGES = 1000
DOCX_FILES = 200
# Pages per PDF, cycled: 100 files, 1,000 pages, from a two-page memo to a twenty-page report.
PDF_SIZES = (2, 5, 10, 20, 13)
# Besides the corpus: one-page PDFs (a fifth as many as the corpus's pages), the case where a
# document's fixed cost weighs most per page.
SINGLE_PAGE_NUMBERS = 10_000
PAGE_SENTENCES = 22  # about 2,700 characters: a page of 10-point prose
UPLOAD_TIMEOUT_S = 60.0
# Other work on this shared machine: a run during which it took more than this many cores is done
# again (at most RUN_ATTEMPTS times in all), and the least disturbed attempt is kept.
OTHER_CORES_LIMIT = 0.35
RUN_ATTEMPTS = 3
SAMPLE_INTERVAL_S = 0.05
POLL_INTERVAL_S = 0.1
MAX_LIMIT = 200  # the list endpoint's largest page
ACCOUNT = "ingest@example.edu"

# key → (label, database, worker processes, jobs each worker runs at once)
CONFIGS: dict[str, tuple[str, str, int, int]] = {
    "pg_w1": ("PostgreSQL + Redis, 1 worker (`a3e worker --workers 1`)", "postgresql", 1, 1),
    "pg_w2": ("PostgreSQL + Redis, 2 workers (2 × `a3e worker --workers 1`)", "postgresql", 2, 1),
    "pg_w1t2": ("PostgreSQL + Redis, 1 worker running 2 jobs at once (`a3e worker --workers 2`)", "postgresql", 1, 2),
    "sqlite": ("SQLite, embedded jobs (`a3e serve` alone, A3E_JOB_WORKERS=2)", "sqlite", 0, 2),
}


# ---------------------------------------------------------------------------------------------
# Corpus


@dataclass
class CorpusFile:
    name: str
    data: bytes
    content_type: str
    pages: int | None = None


@dataclass
class Corpus:
    pdfs: list[CorpusFile]
    docxs: list[CorpusFile]
    single_pages: list[CorpusFile]
    built_s: float

    @property
    def pdf_pages(self) -> int:
        return sum(f.pages or 0 for f in self.pdfs)

    def describe(self) -> dict:
        return {"pdf_files": len(self.pdfs), "pdf_pages": self.pdf_pages,
                "pdf_bytes": sum(len(f.data) for f in self.pdfs), "docx_files": len(self.docxs),
                "docx_bytes": sum(len(f.data) for f in self.docxs), "built_s": self.built_s,
                "single_page_pdfs": len(self.single_pages),
                "single_page_bytes": sum(len(f.data) for f in self.single_pages),
                "pdf_sizes": list(PDF_SIZES), "page_sentences": PAGE_SENTENCES}


def pdf_page_counts(total_pages: int) -> list[int]:
    """Page counts of the PDFs, cycling PDF_SIZES, adding up to exactly `total_pages`."""
    counts: list[int] = []
    left = total_pages
    while left > 0:
        pages = min(PDF_SIZES[len(counts) % len(PDF_SIZES)], left)
        counts.append(pages)
        left -= pages
    return counts


def _make_pdf(directory: str, number: int, pages: int) -> str:
    from tests.documents import make_pdf, prose

    # The first line of every page names the file and page: every file's content (and SHA-256) differs.
    texts = [f"Annual assessment report {number}, page {page + 1}. " + prose(PAGE_SENTENCES, seed=number * 7 + page)
             for page in range(pages)]
    return str(make_pdf(Path(directory) / f"assessment-report-{number:03d}.pdf", texts, font_size=10))


def _make_docx(directory: str, number: int) -> str:
    from tests.documents import make_docx, prose

    blocks: list[tuple[str, object]] = [("title", f"Program Review {number}")]
    for section in range(3 + number % 6):
        blocks.append(("h1", f"Standard {section + 1}: Faculty qualifications and resources"))
        blocks.append(("h2", "Evidence"))
        blocks.extend(("p", prose(4 + (number + k) % 3, seed=number + section + k)) for k in range(5))
    blocks.append(("table", [["Name", "Degree", "Discipline"]]
                   + [[f"Person {number}-{k}", "PhD", "Biology"] for k in range(8 + number % 5)]))
    return str(make_docx(Path(directory) / f"program-review-{number:03d}.docx", blocks))


def _generator_init() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # tests/documents.py


def build_corpus(directory: Path, pdf_pages: int, docx_files: int) -> Corpus:
    started = time.perf_counter()
    counts = pdf_page_counts(pdf_pages)
    with ProcessPoolExecutor(max_workers=max(1, cpu_count()), initializer=_generator_init) as pool:
        pdf_jobs = [pool.submit(_make_pdf, str(directory), n, pages) for n, pages in enumerate(counts)]
        docx_jobs = [pool.submit(_make_docx, str(directory), n) for n in range(docx_files)]
        # Numbered apart from the others: different content, so never a duplicate of them.
        single_jobs = [pool.submit(_make_pdf, str(directory), SINGLE_PAGE_NUMBERS + n, 1)
                       for n in range(pdf_pages // 5)]
        pdf_paths = [Path(job.result()) for job in pdf_jobs]
        docx_paths = [Path(job.result()) for job in docx_jobs]
        single_paths = [Path(job.result()) for job in single_jobs]
    pdfs = [CorpusFile(p.name, p.read_bytes(), "application/pdf", pages) for p, pages in zip(pdf_paths, counts)]
    docx_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    docxs = [CorpusFile(p.name, p.read_bytes(), docx_type) for p in docx_paths]
    singles = [CorpusFile(p.name, p.read_bytes(), "application/pdf", 1) for p in single_paths]
    return Corpus(pdfs, docxs, singles, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# Processes and what they take


@dataclass
class Role:
    """A server-side process tree measured as one: the web process, a worker, PostgreSQL, Redis."""

    key: str
    process: subprocess.Popen


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process tree, including children that have exited and been reaped (retired
    extraction subprocesses, closed PostgreSQL backends): they are in their parent's children times."""
    total = 0.0
    for process in _tree(pid):
        try:
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def tree_rss(pid: int) -> tuple[int, int]:
    """(RSS of the root process, RSS summed over its tree)."""
    root_rss, total = 0, 0
    for process in _tree(pid):
        try:
            rss = process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
        total += rss
        if process.pid == pid:
            root_rss = rss
    return root_rss, total


class PeakSampler(threading.Thread):
    """Samples the RSS of each role's process tree every SAMPLE_INTERVAL_S and keeps the peaks."""

    def __init__(self, roles: list[Role]) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.roles = roles
        self.peak_root: dict[str, int] = {role.key: 0 for role in roles}
        self.peak_tree: dict[str, int] = {role.key: 0 for role in roles}
        self.peak_processes: dict[str, int] = {role.key: 0 for role in roles}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for role in self.roles:
                root, total = tree_rss(role.process.pid)
                self.peak_root[role.key] = max(self.peak_root[role.key], root)
                self.peak_tree[role.key] = max(self.peak_tree[role.key], total)
                self.peak_processes[role.key] = max(self.peak_processes[role.key], len(_tree(role.process.pid)))
            self._halt.wait(SAMPLE_INTERVAL_S)

    def finish(self) -> None:
        self._halt.set()
        self.join(5)


def start_redis(work: Path) -> tuple[subprocess.Popen, int]:
    server = shutil.which("redis-server")
    if not server:
        raise RuntimeError("redis-server is not installed (bench/run installs Debian's redis-server when root)")
    import redis

    port = free_port()
    # The queue only: no snapshots and no append-only file (a deployment would choose its own).
    with open(work / "redis.log", "ab") as handle:
        process = spawn([server, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
                         "--dir", str(work), "--daemonize", "no"], env=clean_env(), cwd=work, stdout=handle,
                        stderr=handle)
    deadline = time.monotonic() + 30
    client = redis.Redis(host=HOST, port=port, socket_connect_timeout=1)
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with status {process.returncode}")
        try:
            if client.ping():
                client.close()
                return process, port
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def redis_version() -> str:
    server = shutil.which("redis-server")
    if not server:
        return "not installed"
    out = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=10).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()[:60]


def start_web(env: dict[str, str], work: Path, key: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    with open(work / f"{key}.log", "ab") as handle:
        started = time.perf_counter()
        process = spawn([A3E, "serve", "--host", HOST, "--port", str(port)], env=env, cwd=work, stdout=handle,
                        stderr=handle)
    wait_ready(process, port, started, path="/health/ready", timeout=120)
    return process, port


# An `a3e worker` once imported only the job modules, so the evidence models' foreign keys (to
# `users`, `workspaces`) could not be resolved and every extraction failed its flush
# (NoReferencedTableError) until a periodic job happened to import them. The job runtime now loads
# every model when it opens; worker_models_check opens one exactly as `a3e worker` does and says
# whether that still holds. The workers here run as shipped: no extra `--import`.
WORKER_IMPORTS: tuple[str, ...] = ()
_MODELS_CHECK = '''
import sys, tempfile
from a3e.core.settings import Settings
from a3e.jobs.service import JobRuntime
JobRuntime(Settings(_env_file=None, data_dir=tempfile.mkdtemp(), secret_key="s" * 40, jwt_secret_key="j" * 40)).open()
from a3e.evidence.models import Passage, Revision
try:
    for table in (Revision.__table__, Passage.__table__):
        [fk.column for fk in table.foreign_keys]
except Exception as exc:
    print(f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}")
    sys.exit(1)
print("ok")
'''


def worker_models_check() -> dict:
    """Whether a process that has imported only the job modules (as `a3e worker` does) can resolve
    the evidence models' foreign keys, which every flush of a revision needs."""
    out = subprocess.run([sys.executable, "-c", _MODELS_CHECK], capture_output=True, text=True, timeout=120,
                         env=clean_env(), cwd=tempfile.gettempdir())
    message = (out.stdout.strip().splitlines() or [out.stderr.strip()[-300:]])[-1]
    return {"ok": out.returncode == 0, "message": clean_text(message)}


def start_worker(env: dict[str, str], work: Path, key: str, threads: int) -> subprocess.Popen:
    log_path = work / f"{key}.log"
    imports = [arg for module in WORKER_IMPORTS for arg in ("--import", module)]
    with open(log_path, "ab") as handle:
        process = spawn([A3E, "worker", "--workers", str(threads), *imports], env=env, cwd=work, stdout=handle,
                        stderr=handle)
    deadline = time.monotonic() + 60
    while b"job consumer" not in log_path.read_bytes():  # "job consumer … started: n worker threads"
        if process.poll() is not None:
            raise RuntimeError(f"a3e worker exited with status {process.returncode}: "
                               + clean_text(log_path.read_text(errors="replace")[-400:]))
        if time.monotonic() > deadline:
            raise RuntimeError("a3e worker did not start its consumer within 60 s")
        time.sleep(0.05)
    return process


# ---------------------------------------------------------------------------------------------
# HTTP


class Uploader:
    """Sends documents as multipart uploads over one keep-alive connection per thread."""

    def __init__(self, port: int, token: str, workspace_id: str) -> None:
        self.port = port
        self.path = f"/api/v1/workspaces/{workspace_id}/documents"
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = http.client.HTTPConnection(HOST, self.port, timeout=UPLOAD_TIMEOUT_S)
        return connection

    def upload(self, file: CorpusFile) -> tuple[int, float, dict | None]:
        boundary = "a3e-bench-" + secrets.token_hex(12)
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file.name}\"\r\n"
                f"Content-Type: {file.content_type}\r\n\r\n").encode() + file.data + f"\r\n--{boundary}--\r\n".encode()
        headers = {**self.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        started = time.perf_counter()
        for attempt in (1, 2):  # a keep-alive connection the server closed meanwhile: once more, anew
            connection = self._connection()
            try:
                connection.request("POST", self.path, body=body, headers=headers)
                response = connection.getresponse()
                raw = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                connection.close()
                self._local.connection = None
                if attempt == 2:
                    raise
        elapsed = time.perf_counter() - started
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = None
        return response.status, elapsed, answer


def count_documents(port: int, token: str, workspace_id: str, status: str) -> int:
    code, body = call(port, "GET", f"/api/v1/workspaces/{workspace_id}/documents?status={status}&limit=1", token=token)
    if code != 200 or not isinstance(body, dict):
        raise RuntimeError(f"listing {status} documents: HTTP {code} {str(body)[:200]}")
    return int(body["total"])


def all_documents(port: int, token: str, workspace_id: str) -> list[dict]:
    items: list[dict] = []
    while True:
        code, body = call(port, "GET", f"/api/v1/workspaces/{workspace_id}/documents?limit={MAX_LIMIT}"
                                       f"&offset={len(items)}", token=token)
        if code != 200 or not isinstance(body, dict):
            raise RuntimeError(f"listing documents: HTTP {code} {str(body)[:200]}")
        items.extend(body["items"])
        if len(items) >= body["total"] or not body["items"]:
            return items


def new_workspace(port: int, token: str, name: str) -> str:
    return _expect("create workspace", call(port, "POST", "/api/v1/workspaces", {"name": name}, token=token), 201)["id"]


# ---------------------------------------------------------------------------------------------
# One measured ingestion


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def ingest_once(files: list[CorpusFile], kind: str, *, port: int, token: str, workspace_id: str, roles: list[Role],
                concurrency: int, timeout_s: float, count: Callable[[str], int] | None = None) -> dict:
    """Upload `files` into the workspace with `concurrency` in flight, wait until every one is
    ready, check them, and return the figures. `count(status)` counts the workspace's documents in
    a state (default: the list endpoint)."""
    if count is None:
        def count(status: str) -> int:
            return count_documents(port, token, workspace_id, status)
    cpu_before = {role.key: tree_cpu(role.process.pid) for role in roles}
    me = psutil.Process()
    client_before = sum(me.cpu_times()[:2])  # this process: the uploading and polling threads
    machine_before = psutil.cpu_times()
    sampler = PeakSampler(roles)
    sampler.start()
    uploader = Uploader(port, token, workspace_id)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    rejected: list[str] = []
    ready_seen_at: float | None = None
    started_wall, started = time.time(), time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="upload") as pool:
            for file, (status, elapsed, answer) in zip(files, pool.map(uploader.upload, files)):
                statuses[status] += 1
                latencies.append(elapsed)
                if status != 201 or not isinstance(answer, dict) or answer.get("duplicate"):
                    rejected.append(f"{file.name}: HTTP {status} {str(answer)[:200]}")
        uploads_done = time.perf_counter() - started
        if rejected:
            raise RuntimeError(f"{len(rejected)} uploads were not accepted as new documents; first: {rejected[0]}")
        deadline = time.perf_counter() + timeout_s
        while True:
            ready = count("ready")
            if ready >= len(files):
                ready_seen_at = time.perf_counter() - started
                break
            failed = count("failed")
            if failed:
                raise RuntimeError(f"{failed} documents failed processing (of {len(files)})")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"only {ready} of {len(files)} documents ready after {timeout_s:.0f} s")
            time.sleep(POLL_INTERVAL_S)
    finally:
        sampler.finish()
    cpu_after = {role.key: tree_cpu(role.process.pid) for role in roles}
    machine_after = psutil.cpu_times()
    client_cpu = sum(me.cpu_times()[:2]) - client_before
    observed = time.perf_counter() - started

    documents = all_documents(port, token, workspace_id)
    problems = check_documents(documents, files, kind)
    if problems:
        raise RuntimeError(f"{kind} ingestion is wrong: " + "; ".join(problems[:5]))
    revisions = [d["current_revision"] for d in documents]
    last_processed = max(datetime.fromisoformat(r["processed_at"]).timestamp() for r in revisions)
    # The end: the last revision's processed_at (same machine, same clock), not the poll that saw it.
    wall = max(last_processed - started_wall, uploads_done)
    cpu = {key: cpu_after[key] - cpu_before[key] for key in cpu_before}
    server_cpu = sum(cpu.values())
    total = sum(machine_after) - sum(machine_before)
    busy_cores = (_busy(machine_after) - _busy(machine_before)) / total * (psutil.cpu_count() or 1) if total else None
    ours = (server_cpu + client_cpu) / observed
    pages = sum(r["page_count"] or 0 for r in revisions) if kind == "pdf" else None
    size = sum(len(f.data) for f in files)
    result = {
        "kind": kind, "files": len(files), "bytes": size, "pages": pages,
        "passages": sum(r["passage_count"] for r in revisions),
        "concurrency": concurrency,
        "wall_s": wall, "uploads_s": uploads_done, "ready_seen_s": ready_seen_at, "observed_s": observed,
        "drain_s": wall - uploads_done,
        "upload_statuses": {str(k): v for k, v in statuses.items()},
        "upload_p50_s": percentile(latencies, 0.50), "upload_p99_s": percentile(latencies, 0.99),
        "upload_max_s": max(latencies),
        "cpu_s": cpu, "server_cpu_s": server_cpu, "cores_used": server_cpu / wall,
        "machine_busy_cores": busy_cores,
        "client_cores": client_cpu / observed,
        # What the rest of the machine did meanwhile, besides our servers and this process.
        "other_cores": None if busy_cores is None else max(0.0, busy_cores - ours),
        "peak_rss_root": sampler.peak_root, "peak_rss_tree": sampler.peak_tree,
        "peak_processes": sampler.peak_processes,
        "docs_per_s": len(files) / wall, "mb_per_s": size / 1e6 / wall,
    }
    if pages is not None:
        result["pages_per_s"] = pages / wall
        result["pages_per_cpu_s"] = pages / server_cpu if server_cpu else None
    return result


def check_documents(documents: list[dict], files: list[CorpusFile], kind: str) -> list[str]:
    """Everything must be ready, with passages; the PDFs' pages must add up."""
    problems = []
    if len(documents) != len(files):
        problems.append(f"{len(documents)} documents listed for {len(files)} uploaded")
    by_name = {f.name: f for f in files}
    for document in documents:
        revision = document.get("current_revision") or {}
        name = revision.get("filename")
        if document.get("status") != "ready" or revision.get("status") != "ready":
            problems.append(f"{name}: {document.get('status')} ({document.get('status_detail')})")
        elif not revision.get("passage_count"):
            problems.append(f"{name}: no passages")
        elif kind == "pdf" and name in by_name and revision.get("page_count") != by_name[name].pages:
            problems.append(f"{name}: {revision.get('page_count')} pages counted, {by_name[name].pages} made")
        elif revision.get("kind") != kind:
            problems.append(f"{name}: read as {revision.get('kind')}")
    expected = sum(f.pages or 0 for f in files)
    counted = sum((d.get("current_revision") or {}).get("page_count") or 0 for d in documents)
    if kind == "pdf" and counted != expected:
        problems.append(f"{counted} pages counted in all, {expected} in the corpus")
    return problems


# ---------------------------------------------------------------------------------------------
# Profiling (py-spy, every process of a tree, extraction subprocesses included)

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("imports and frozen stdlib modules (extraction subprocesses starting)", ("<frozen importlib", "(<frozen ")),
    ("PDF text (pypdfium2 / PDFium)", ("pypdfium2/",)),
    ("DOCX reading (lxml, zip)", ("a3e/evidence/extraction/docx.py", "lxml", "(zipfile", "zipsafe.py")),
    ("sniffing the file type", ("a3e/evidence/extraction/sniff.py",)),
    ("split_passages", ("a3e/evidence/extraction/passages.py",)),
    ("extraction IPC: JSON and pipes (isolation.py, worker.py)",
     ("a3e/evidence/extraction/isolation.py", "a3e/evidence/extraction/worker.py", "(json/", "json/decoder",
      "json/encoder", "(selectors.py)")),
    ("other extraction code (blocks, limits)", ("a3e/evidence/extraction/",)),
    ("multipart upload parsing, hashing, temp files (uploads.py)", ("a3e/evidence/uploads.py", "python_multipart/",
                                                                   "multipart/")),
    ("blob storage (storage.py)", ("a3e/evidence/storage.py",)),
    ("psycopg (driver)", ("psycopg/", "psycopg_binary/", "psycopg_c/")),
    ("SQLAlchemy ORM", ("sqlalchemy/orm/",)),
    ("SQLAlchemy Core, pool, dialect", ("sqlalchemy/",)),
    ("audit log record", ("a3e/audit/",)),
    ("A³E evidence service and job code", ("a3e/evidence/",)),
    ("queue: Huey, redis-py, A³E jobs runtime", ("huey/", "redis/", "a3e/jobs/")),
    ("logging", ("(logging/__init__.py)", "a3e/core/logging.py")),
    ("pydantic", ("pydantic",)),
    ("FastAPI, Starlette, uvicorn, auth and scoping", ("fastapi/", "starlette/", "uvicorn/", "anyio/", "a3e/auth/",
                                                       "a3e/workspaces/", "a3e/core/")),
    ("threads and waiting (threading, queue, subprocess)", ("(threading.py)", "(queue.py)", "(subprocess.py)")),
]
OTHER = "other"


def _layer(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for name, markers in LAYERS:
            if any(marker in frame for marker in markers):
                return name
    return OTHER


def analyze_profile(raw: str) -> dict:
    layers: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    self_frames: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        stack = scrub_path(stack)
        frames = stack.split(";")
        # With --subprocesses, py-spy names the processes first, parent then child:
        # "process 12:\"…a3e worker…\";process 34:\"… -m a3e.evidence.extraction.worker 1024\";frames…".
        role = "the profiled process"
        while frames and frames[0].startswith("process "):
            if "a3e.evidence.extraction.worker" in frames[0]:
                role = "extraction subprocesses"
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        body = ";".join(frames)
        total += count
        roles[role] += count
        layers[_layer(body)] += count
        if frames:
            self_frames[frames[-1]] += count
    if not total:
        return {"samples": 0}
    order = [name for name, _ in LAYERS] + [OTHER]
    return {
        "samples": total,
        "processes": [(name, count / total) for name, count in roles.most_common()],
        "layers": [(name, layers[name] / total) for name in order if layers[name]],
        "top_self": [(frame, count / total) for frame, count in self_frames.most_common(12)],
    }


def start_profile(pid: int, out: Path, *, rate: int, subprocesses: bool, gil: bool = False) -> subprocess.Popen | None:
    """py-spy on a process. `gil`: only samples of a thread holding the GIL — the CPU the Python code
    takes, without threads that wait for the database (not for the extraction subprocesses: PDFium
    runs with the GIL released)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        return None
    cmd = [py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--nolineno", "--format", "raw",
           "--output", str(out), "--nonblocking"]
    if subprocesses:
        cmd.append("--subprocesses")
    if gil:
        cmd.append("--gil")
    return spawn(cmd, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_profile(spy: subprocess.Popen, out: Path) -> dict:
    import signal

    try:
        os.kill(spy.pid, signal.SIGINT)  # py-spy writes its output when interrupted
        _, err = spy.communicate(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        err = b""
    finally:
        stop(spy)
    if not out.exists():
        message = err.decode(errors="replace").strip().splitlines()[-1] if err and err.strip() else "no output"
        return {"error": "py-spy produced no profile: " + clean_text(message)}
    return analyze_profile(out.read_text(errors="replace"))


# ---------------------------------------------------------------------------------------------
# The section


@dataclass
class Stack:
    """The web process and the servers behind it, for one database."""

    database: str
    port: int
    web: subprocess.Popen
    env: dict[str, str]
    token: str
    password: str
    db_role: Role | None = None
    cluster: Cluster | None = None
    redis_role: Role | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)


def _roles(stack: Stack) -> list[Role]:
    roles = [Role("web", stack.web)]
    roles += [Role(f"worker{index + 1}", worker) for index, worker in enumerate(stack.workers)]
    if stack.db_role is not None:
        roles.append(stack.db_role)
    if stack.redis_role is not None:
        roles.append(stack.redis_role)
    return roles


def _account(port: int) -> tuple[str, str]:
    """(access token, password) of a new account, the owner of every workspace made here."""
    password = "bench-" + secrets.token_urlsafe(18)
    register_and_login(port, ACCOUNT, password)
    return login(port, ACCOUNT, password), password


def _warm_up(stack: Stack, corpus: Corpus, slots: int) -> None:
    """A few documents of each kind through every consumer, unmeasured: extraction subprocesses
    started, imports done, connection pools filled, as in a worker that has been running."""
    workspace = new_workspace(stack.port, stack.token, f"Warm-up {secrets.token_hex(3)}")
    files = [*corpus.pdfs[-2 * slots:], *corpus.docxs[-2 * slots:]]
    uploader = Uploader(stack.port, stack.token, workspace)
    with ThreadPoolExecutor(max_workers=max(2, slots)) as pool:
        for status, _, answer in pool.map(uploader.upload, files):
            if status != 201:
                raise RuntimeError(f"warm-up upload: HTTP {status} {str(answer)[:200]}")
    deadline = time.monotonic() + 60
    while count_documents(stack.port, stack.token, workspace, "ready") < len(files):
        if count_documents(stack.port, stack.token, workspace, "failed"):
            raise RuntimeError("a warm-up document failed processing")
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up documents were not ready within 60 s")
        time.sleep(POLL_INTERVAL_S)


def _measure_config(key: str, stack: Stack, corpus: Corpus, concurrency: int, timeout_s: float) -> dict:
    label, _, processes, threads = CONFIGS[key]
    entry: dict = {"label": label, "database": stack.database, "worker_processes": processes,
                   "jobs_per_worker": threads, "runs": {}}
    _warm_up(stack, corpus, max(1, processes) * threads)
    for run_key, kind, files in (("pdf", "pdf", corpus.pdfs), ("docx", "docx", corpus.docxs),
                                 ("pdf_single_page", "pdf", corpus.single_pages)):
        run: dict | None = None
        for attempt in range(1, RUN_ATTEMPTS + 1):
            entry["quiet_waited_s"] = entry.get("quiet_waited_s", 0.0) + wait_quiet(15 if attempt == 1 else 30)
            workspace = new_workspace(stack.port, stack.token, f"Ingest {key} {run_key} {attempt}")
            this = ingest_once(files, kind, port=stack.port, token=stack.token, workspace_id=workspace,
                               roles=_roles(stack), concurrency=concurrency, timeout_s=timeout_s)
            this["attempt"] = attempt
            log(f"{key} {run_key}: {_fmt(this)}")
            # The attempt that other work disturbed least stands.
            if run is None or (this["other_cores"] or 0) < (run["other_cores"] or 0):
                run = this
            if (run["other_cores"] or 0) <= OTHER_CORES_LIMIT:
                break
            if attempt < RUN_ATTEMPTS:
                log(f"other processes took {this['other_cores']:.2f} cores meanwhile: once more when it is quieter")
        entry["runs"][run_key] = run
    return entry


def _fmt(run: dict) -> str:
    head = (f"{run['pages']} pages, {run['pages_per_s']:.0f} pages/s, {run['pages_per_cpu_s']:.0f} pages per CPU-s"
            if run["kind"] == "pdf" else f"{run['files']} files, {run['docs_per_s']:.1f} docs/s")
    return (f"{head}, {run['mb_per_s']:.2f} MB/s, wall {run['wall_s']:.1f} s (uploads {run['uploads_s']:.1f} s), "
            f"server CPU {run['server_cpu_s']:.1f} s = {run['cores_used']:.2f} cores "
            f"({', '.join(f'{k} {v:.1f}' for k, v in run['cpu_s'].items())}), upload p50 "
            f"{run['upload_p50_s'] * 1000:.0f} ms p99 {run['upload_p99_s'] * 1000:.0f} ms, "
            f"other processes {(run['other_cores'] or 0):.2f} cores")


def _profile_pdf(stack: Stack, corpus: Corpus, concurrency: int, timeout_s: float, work: Path) -> dict:
    """The PDFs once more with py-spy on the (single) worker and its extraction subprocesses, and on
    the web process: where the CPU goes. Not one of the measured runs (py-spy costs CPU)."""
    rate = 100
    worker = stack.workers[0] if stack.workers else stack.web
    spies = {"worker": (start_profile(worker.pid, work / "profile-worker.txt", rate=rate, subprocesses=True),
                        work / "profile-worker.txt")}
    if stack.workers:
        spies["web"] = (start_profile(stack.web.pid, work / "profile-web.txt", rate=rate, subprocesses=False, gil=True),
                        work / "profile-web.txt")
    if any(spy is None for spy, _ in spies.values()):
        for spy, _ in spies.values():
            if spy is not None:
                stop(spy)
        return {"error": "py-spy is not installed"}
    time.sleep(1.0)  # py-spy attaches
    workspace = new_workspace(stack.port, stack.token, "Ingest profile")
    result: dict = {"rate": rate}
    statements = StatementLog(stack.cluster) if stack.cluster is not None else None
    try:
        if statements is not None:
            statements.start()
        run = ingest_once(corpus.pdfs, "pdf", port=stack.port, token=stack.token, workspace_id=workspace,
                          roles=_roles(stack), concurrency=concurrency, timeout_s=timeout_s,
                          count=statements.counter(workspace) if statements is not None else None)
        result["run"] = {k: run[k] for k in ("wall_s", "pages_per_s", "pages_per_cpu_s", "cpu_s", "server_cpu_s")}
        if statements is not None:
            # The log stops before ingest_once's closing check through the API: only the ingestion is in it.
            result["statements"] = statements.finish(len(corpus.pdfs), {"web": stack.web.pid,
                                                                         "worker": worker.pid})
            try:
                result["passage_insert_whatif"] = passage_insert_whatif(stack.cluster, workspace)
            except Exception as exc:  # the profile stands without it
                result["passage_insert_whatif"] = {"error": f"{exc.__class__.__name__}: {clean_text(str(exc))[:300]}"}
    finally:
        if statements is not None:
            statements.close()
        for name, (spy, out) in spies.items():
            result[name] = finish_profile(spy, out)
    return result


def passage_insert_whatif(cluster: Cluster, workspace_id: str, repeats: int = 40) -> dict:
    """What-if: a revision's passages written as process_revision writes them — `session.execute(
    insert(Passage), rows)`, which psycopg sends as one INSERT per row — against one multi-row
    `INSERT … VALUES (…), (…), …` (`insert(Passage).values(rows)`). Same rows (as many as an average
    document of the run has), same ORM session, each in a transaction rolled back; interleaved.
    CPU of this process and of its PostgreSQL backend, per document."""
    import uuid as uuid_module

    from sqlalchemy import create_engine, func, insert, select, text
    from sqlalchemy.orm import Session

    import a3e.auth.models  # noqa: F401 - the foreign keys' tables
    import a3e.workspaces.models  # noqa: F401
    from a3e.evidence.models import Passage, Revision

    engine = create_engine(f"postgresql+psycopg://{cluster.user}@{HOST}:{cluster.port}/{cluster.database}",
                           pool_size=1, max_overflow=0)
    try:
        with Session(engine) as session:
            revision = session.scalars(select(Revision).where(
                Revision.workspace_id == uuid_module.UUID(workspace_id))).first()
            count = session.scalar(select(func.count()).select_from(Passage).where(
                Passage.workspace_id == uuid_module.UUID(workspace_id)))
            documents = session.scalar(select(func.count()).select_from(Revision).where(
                Revision.workspace_id == uuid_module.UUID(workspace_id)))
            sample = session.scalars(select(Passage).where(Passage.revision_id == revision.id)
                                     .order_by(Passage.ordinal)).all()
        per_document = max(1, round(count / max(1, documents)))
        rows = [{"revision_id": revision.id, "document_id": revision.document_id, "workspace_id": revision.workspace_id,
                 "ordinal": 1_000_000 + index, "text": sample[index % len(sample)].text, "page": 1,
                 "char_start": 0, "char_end": len(sample[index % len(sample)].text), "heading": None, "location": None}
                for index in range(per_document)]
        variants = {"as src does: insert(Passage), rows (one INSERT per row)": lambda s: s.execute(insert(Passage), rows),
                    "one multi-row INSERT: insert(Passage).values(rows)": lambda s: s.execute(insert(Passage).values(rows))}
        figures: dict[str, dict[str, list[float]]] = {name: {"client": [], "server": [], "wall": []} for name in variants}
        with Session(engine) as session:
            backend = psutil.Process(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
            session.rollback()
            for round_index in range(repeats + 2):  # the first two rounds warm up
                for name, write in variants.items():
                    server_before = sum(backend.cpu_times()[:2])
                    client_before, wall_before = time.process_time(), time.perf_counter()
                    write(session)
                    session.flush()
                    wall = time.perf_counter() - wall_before
                    client = time.process_time() - client_before
                    session.rollback()
                    server = sum(backend.cpu_times()[:2]) - server_before
                    if round_index >= 2:
                        figures[name]["client"].append(client)
                        figures[name]["server"].append(server)
                        figures[name]["wall"].append(wall)
    finally:
        engine.dispose()
    # psutil's CPU times tick in 10 ms: means over the rounds, not medians.
    return {"passages": per_document, "repeats": repeats,
            "variants": {name: {key: sum(values) / len(values) for key, values in data.items()}
                         for name, data in figures.items()}}


class StatementLog:
    """PostgreSQL's statement log (log_statement = 'all') for the length of one run, counted per
    client process (each backend's client port, found among the web's and the worker's sockets) and
    per kind of statement. The run's own polling goes straight to the database, on a connection of
    its own, so that it is not counted."""

    def __init__(self, cluster: Cluster) -> None:
        import psycopg

        self.cluster = cluster
        self.log_path = cluster.base / "server.log"
        self.connection = psycopg.connect(cluster.conninfo(), autocommit=True, application_name="bench")
        self.offset = 0

    def _set(self, statement: str, prefix: str) -> None:
        self.connection.execute(f"ALTER SYSTEM SET log_statement = '{statement}'")
        self.connection.execute(f"ALTER SYSTEM SET log_line_prefix = '{prefix}'")
        self.connection.execute("SELECT pg_reload_conf()")
        time.sleep(0.3)  # every backend takes the new setting at its next command

    def start(self) -> None:
        self._set("all", "[%p] ")
        self.offset = self.log_path.stat().st_size

    def counter(self, workspace_id: str) -> Callable[[str], int]:
        def count(status: str) -> int:
            row = self.connection.execute(
                "SELECT count(*) FROM documents d JOIN document_revisions r ON r.id = d.current_revision_id "
                "WHERE d.workspace_id = %s AND r.status = %s", (workspace_id, status)).fetchone()
            return int(row[0])

        return count

    def _backends(self, clients: dict[str, int]) -> dict[int, str]:
        """PostgreSQL backend pid → the name of the client process tree holding its connection."""
        ports: dict[int, str] = {}
        for name, pid in clients.items():
            for process in _tree(pid):
                try:
                    for conn in process.net_connections(kind="tcp"):
                        if conn.raddr and conn.raddr.port == self.cluster.port:
                            ports[conn.laddr.port] = name
                except psutil.Error:
                    pass
        rows = self.connection.execute(
            "SELECT pid, client_port FROM pg_stat_activity WHERE client_port IS NOT NULL").fetchall()
        return {pid: ports[port] for pid, port in rows if port in ports}

    def finish(self, documents: int, clients: dict[str, int]) -> dict:
        backends = self._backends(clients)  # before the pools let any connection go
        self._set("none", "%m [%p] ")
        with open(self.log_path, "rb") as handle:
            handle.seek(self.offset)
            text = handle.read().decode(errors="replace")
        # One entry per log message: a statement's further lines follow its first without a prefix.
        messages: list[list[str]] = []
        for line in text.splitlines():
            head = line[1:line.index("]")] if line.startswith("[") and "]" in line else ""
            if head.isdigit():
                messages.append([head, line])
            elif messages:
                messages[-1][1] += " " + line.strip()
        per_app: dict[str, Counter[str]] = {}
        for head, line in messages:
            if int(head) == self.connection.info.backend_pid or " LOG:  " not in line:
                continue
            if "statement: " not in line and " execute " not in line:
                continue
            app = backends.get(int(head), "connections closed during the run")
            sql = line.split("statement: ", 1)[1] if "statement: " in line else line.split(": ", 2)[-1]
            per_app.setdefault(app, Counter())[_statement_kind(sql)] += 1
        return {"documents": documents,
                "per_document": {app: sum(kinds.values()) / documents for app, kinds in per_app.items()},
                "kinds": {app: [(kind, n / documents) for kind, n in kinds.most_common(14)]
                          for app, kinds in per_app.items()}}

    def close(self) -> None:
        try:
            self._set("none", "%m [%p] ")
        except Exception:  # noqa: BLE001 - the cluster may be gone already
            pass
        self.connection.close()


def _statement_kind(sql: str) -> str:
    """'SELECT users', 'INSERT passages', 'BEGIN' … from a logged statement."""
    import re

    words = sql.strip().split()
    if not words:
        return "?"
    verb = words[0].upper()
    if verb in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"):
        return verb
    pattern = {"SELECT": r"\bFROM\s+([\w.\"]+)", "INSERT": r"\bINTO\s+([\w.\"]+)",
               "UPDATE": r"^UPDATE\s+([\w.\"]+)", "DELETE": r"\bFROM\s+([\w.\"]+)"}.get(verb)
    match = re.search(pattern, sql, re.IGNORECASE) if pattern else None
    return f"{verb} {match.group(1).strip(chr(34))}" if match else verb


def ingest(*, quick: bool, pdf_pages: int, docx_files: int, configs: list[str], concurrency: int,
           profile_mode: str) -> dict:
    result: dict = {"configs": {}, "concurrency": concurrency, "target_pages_per_core_s": TARGET_PAGES_PER_CORE_S,
                    "cpus": os.cpu_count(), "usable_cpus": cpu_count(), "redis": redis_version()}
    timeout_s = 120.0 + pdf_pages  # generous: a stall is an error, not a slow figure
    result["worker_models_check"] = worker_models_check()
    result["worker_imports"] = list(WORKER_IMPORTS)
    if not result["worker_models_check"]["ok"]:
        log(f"`a3e worker` cannot flush a revision without help: {result['worker_models_check']['message']}; "
            f"the workers here run with --import {' --import '.join(WORKER_IMPORTS)}")
    with tempfile.TemporaryDirectory(prefix="a3e-bench-ingest-") as tmp:
        work = Path(tmp)
        corpus_dir = work / "corpus"
        corpus_dir.mkdir()
        log(f"generating the corpus: {pdf_pages} text-PDF pages, {docx_files} DOCX")
        corpus = build_corpus(corpus_dir, pdf_pages, docx_files)
        result["corpus"] = corpus.describe()
        log(f"corpus: {len(corpus.pdfs)} PDFs ({corpus.pdf_pages} pages, {result['corpus']['pdf_bytes'] / 1e6:.1f} MB), "
            f"{len(corpus.docxs)} DOCX ({result['corpus']['docx_bytes'] / 1e6:.1f} MB), built in {corpus.built_s:.1f} s")
        profile_done = False

        pg_configs = [key for key in configs if CONFIGS[key][1] == "postgresql"]
        if pg_configs:
            cluster: Cluster | None = None
            stack: Stack | None = None
            try:
                cluster = start_cluster()
                result["postgres"] = describe_cluster(cluster)
                redis_process, redis_port = start_redis(work)
                env = server_env(work, cluster, 1)
                env["A3E_REDIS_URL"] = f"redis://{HOST}:{redis_port}/0"
                log(f"PostgreSQL {result['postgres']['server_version']}, Redis {result['redis']}: migrating")
                migrate(env, work)
                web, port = start_web(env, work, "web-pg")
                stack = Stack("postgresql", port, web, env, *_account(port), cluster=cluster,
                              db_role=Role("postgres", cluster.process),
                              redis_role=Role("redis", redis_process))
                for key in pg_configs:
                    _, _, processes, threads = CONFIGS[key]
                    log(f"{key}: {CONFIGS[key][0]}")
                    try:
                        stack.workers = [start_worker(env, work, f"{key}-worker{n + 1}", threads)
                                         for n in range(processes)]
                        stack.token = login(port, ACCOUNT, stack.password)  # access tokens last 15 minutes
                        result["configs"][key] = _measure_config(key, stack, corpus, concurrency, timeout_s)
                        # Profiled unless told not to: one more PDF run (a few seconds) that shows where the
                        # CPU goes, target met or not (`missed` only decides whether the report dwells on it).
                        if not profile_done and processes == 1 and threads == 1 and profile_mode != "never":
                            log(f"profiling {key}: the PDFs again with py-spy on the worker (and its extraction "
                                f"subprocesses) and the web process")
                            try:
                                result["profile"] = {"config": key, **_profile_pdf(stack, corpus, concurrency,
                                                                                   timeout_s, work)}
                            except Exception as exc:  # the measurements stand without it
                                result["profile"] = {"config": key, "error": f"{exc.__class__.__name__}: "
                                                                             f"{clean_text(str(exc))[:300]}"}
                            profile_done = True
                    except Exception as exc:
                        log(f"{key} failed: {exc.__class__.__name__}: {exc}")
                        for name in [f"{key}-worker{n + 1}" for n in range(processes)] + ["web-pg"]:
                            tail = (work / f"{name}.log").read_text(errors="replace")[-1500:]
                            log(f"{name}.log ends with:\n{clean_text(tail)}")
                        result["configs"][key] = {"label": CONFIGS[key][0], "error": f"{exc.__class__.__name__}: "
                                                                                     f"{clean_text(str(exc))[:500]}"}
                    finally:
                        for worker in stack.workers:
                            stop(worker)
                        stack.workers = []
            finally:
                if stack is not None:
                    stop(stack.web)
                if cluster is not None:
                    stop_cluster(cluster)

        if "sqlite" in configs:
            log(f"sqlite: {CONFIGS['sqlite'][0]}")
            web = None
            try:
                env = a3e_env(work / "data-sqlite", A3E_JOB_WORKERS=str(CONFIGS["sqlite"][3]))
                web, port = start_web(env, work, "web-sqlite")
                stack = Stack("sqlite", port, web, env, *_account(port))
                result["configs"]["sqlite"] = _measure_config("sqlite", stack, corpus, concurrency, timeout_s)
            except Exception as exc:
                log(f"sqlite failed: {exc.__class__.__name__}: {exc}")
                result["configs"]["sqlite"] = {"label": CONFIGS["sqlite"][0],
                                               "error": f"{exc.__class__.__name__}: {clean_text(str(exc))[:500]}"}
            finally:
                if web is not None:
                    stop(web)
    result["target_met"] = any(_config_meets(entry) for entry in result["configs"].values())
    return result


def _config_meets(entry: dict) -> bool:
    run = (entry.get("runs") or {}).get("pdf")
    return bool(run and (run.get("pages_per_cpu_s") or 0) >= TARGET_PAGES_PER_CORE_S)
