"""Renders the `ingest` section of bench/RESULTS.md (figures from bench/bench_ingest.py)."""

from __future__ import annotations

from bench_ingest import CONFIGS, OTHER_CORES_LIMIT, RUN_ATTEMPTS, TARGET_PAGES_PER_CORE_S
from report import _pct, _status, _table

MB = 1024 * 1024
RUN_NAMES = {"pdf": "PDF", "docx": "DOCX", "pdf_single_page": "one-page PDFs"}


def _f(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f}"


def _mib(value: int | None) -> str:
    return "–" if not value else f"{value / MB:.0f}"


def _configs(ingest: dict) -> list[tuple[str, dict]]:
    order = list(CONFIGS)
    return sorted(ingest.get("configs", {}).items(), key=lambda item: order.index(item[0]) if item[0] in order else 99)


def _pdf(entry: dict) -> dict | None:
    return (entry.get("runs") or {}).get("pdf")


def summary_rows(ingest: dict) -> list[list[str]]:
    if ingest.get("error"):
        return [["Ingestion, text-PDF pages per CPU-second (upload → passages ready)", f"not measured: {ingest['error']}",
                 "–", "–", "–"]]
    rows = []
    target = f"≥ {TARGET_PAGES_PER_CORE_S:.0f} pages/s per core"
    for key, entry in _configs(ingest):
        short = _short_label(key, entry)
        run = _pdf(entry)
        if entry.get("error") or not run:
            rows.append([f"Ingestion, {short}", f"not measured: {entry.get('error', 'no PDF run')}", target, "–", "–"])
            continue
        rows.append([f"Ingestion of {run['pages']:,} text-PDF pages, {short}: pages per CPU-second of all server "
                     f"processes (pages/s wall, cores used)",
                     f"{_f(run['pages_per_cpu_s'])} ({_f(run['pages_per_s'])} pages/s on {run['cores_used']:.2f} cores)",
                     target, _status(run["pages_per_cpu_s"] >= TARGET_PAGES_PER_CORE_S), "–"])
    singles = [(key, entry, (entry.get("runs") or {}).get("pdf_single_page")) for key, entry in _configs(ingest)]
    singles = [(key, entry, run) for key, entry, run in singles if run]
    if singles:
        below = sum(1 for _, _, run in singles if run["pages_per_cpu_s"] < TARGET_PAGES_PER_CORE_S)
        rows.append([f"Ingestion of {singles[0][2]['files']} one-page PDFs (an extra case, not the issue's corpus): pages "
                     f"per CPU-second — " + " / ".join(_short_label(k, e) for k, e, _ in singles),
                     " / ".join(_f(run["pages_per_cpu_s"]) for _, _, run in singles), target,
                     f"**missed** in {below} of {len(singles)}" if below else "**met**", "–"])
    return rows


def _short_label(key: str, entry: dict) -> str:
    _, database, processes, threads = CONFIGS.get(key, ("", entry.get("database"), entry.get("worker_processes"),
                                                        entry.get("jobs_per_worker")))
    if database == "sqlite":
        return "SQLite, embedded jobs"
    text = f"PostgreSQL + Redis, {processes} worker{'s' if processes != 1 else ''}"
    return text + (f" × {threads} jobs" if threads and threads > 1 else "")


def render_ingest(ingest: dict, machine: dict) -> list[str]:
    out = ["## 7. Ingestion: upload to passages ready", ""]
    if ingest.get("error"):
        return out + [f"Not measured: {ingest['error']}", ""]
    corpus = ingest["corpus"]
    cpus = ingest.get("usable_cpus") or machine.get("usable_cpus")
    out += [
        f"Corpus, generated for the run with fixed seeds (tests/documents.py's generators, in {corpus['built_s']:.0f} s): "
        f"**{corpus['pdf_files']} text PDFs with {corpus['pdf_pages']:,} pages** "
        f"({corpus['pdf_bytes'] / 1e6:.1f} MB; {'/'.join(str(n) for n in corpus['pdf_sizes'])} pages per file in turn, "
        f"about {corpus['page_sentences']} sentences of accreditation prose per page) and **{corpus['docx_files']} DOCX "
        f"files** ({corpus['docx_bytes'] / 1e6:.1f} MB; a title, 3–8 sections with two headings and five paragraphs "
        f"each, and a table).",
        "",
        f"Each configuration gets the PDFs and then the DOCX files, each into a new workspace, "
        f"{ingest['concurrency']} uploads in flight (`POST /api/v1/workspaces/{{id}}/documents`, multipart, over "
        f"keep-alive connections from the benchmark's threads). **Wall time** runs from just before the first upload "
        f"is sent to the last revision's `processed_at` (the worker writes it with the passages, in one transaction); "
        f"the list endpoint (`?status=ready`, `?status=failed`) is polled every 100 ms meanwhile. A warm-up batch, "
        f"not measured, goes through each configuration first. **CPU** is every server-side process's user + system "
        f"time (psutil, exited children included): the web process, the workers with their extraction "
        f"subprocesses, PostgreSQL with its backends, Redis — not the benchmark's own uploading threads. "
        f"**Per core** = pages / those CPU-seconds: what one core does end to end when the work keeps it busy. "
        f"This machine has {cpus} usable cores; **peak RSS** is sampled every 50 ms and summed over each process "
        f"tree. Every run is checked: each document ends `ready` with passages (none failed), and the PDFs' "
        f"page counts add up to the corpus's. The machine is shared: *other processes* is what the rest of it "
        f"used meanwhile, besides these servers and the benchmark's own process; a run during which that passed "
        f"{OTHER_CORES_LIMIT:.2f} cores was done again (at most {RUN_ATTEMPTS} attempts) and the least "
        f"disturbed attempt is shown.",
        "",
        "A *worker* is one `a3e worker` process (Redis queue); *jobs* is its `--workers` (jobs run at once, on "
        "threads). Each worker extracts in its own isolated extraction subprocess, one per job running. "
        "The web process is `a3e serve` with WEB_CONCURRENCY=1 in every configuration.",
        "",
    ]
    check = ingest.get("worker_models_check")
    if check and not check.get("ok"):
        out += [
            f"**`a3e worker` as shipped cannot process a document** until a periodic job happens to import the "
            f"account and workspace models: a process that has imported only the job modules cannot resolve the "
            f"evidence models' foreign keys (`{check['message']}`), and every `evidence.process_revision` flush fails "
            f"with it; the documents stay unprocessed (seen here in a first version of this benchmark: no document "
            f"ready after 120 s). The workers below therefore run with "
            f"`{' '.join('--import ' + m for m in ingest.get('worker_imports', []))}`. Fix in src/ (suggestion 1).",
            "",
        ]

    header = ["Configuration", "Wall", "Pages/s", "Pages per CPU-s (target ≥ "
              f"{TARGET_PAGES_PER_CORE_S:.0f})", "MB/s", "Docs/s", "Cores used", "CPU-s: web / workers / PostgreSQL / Redis",
              "Upload p50 / p99 (ms)", "Uploads done at", "Other processes (cores)"]
    for kind, title in (("pdf", "Text PDFs (the corpus)"), ("docx", "DOCX"),
                        ("pdf_single_page", f"One-page text PDFs ({corpus.get('single_page_pdfs', 0)} files, "
                                            f"{corpus.get('single_page_bytes', 0) / 1e6:.1f} MB): the fixed cost per "
                                            f"document, not the pages, decides")):
        rows = []
        for key, entry in _configs(ingest):
            run = (entry.get("runs") or {}).get(kind)
            if entry.get("error") and not run:
                rows.append([entry.get("label", key), f"failed: {entry['error']}"] + ["–"] * (len(header) - 2))
                continue
            if not run:
                continue
            cpu = run["cpu_s"]
            workers = sum(v for k, v in cpu.items() if k.startswith("worker"))
            split = " / ".join(_f(v, 1) for v in (cpu.get("web"), workers if entry.get("worker_processes") else None,
                                                   cpu.get("postgres"), cpu.get("redis")))
            rows.append([
                entry["label"], f"{run['wall_s']:.1f} s",
                _f(run.get("pages_per_s")) if run.get("pages") else "–",
                (f"**{_f(run['pages_per_cpu_s'])}**" if run.get("pages") else "–"),
                _f(run["mb_per_s"], 2), _f(run["docs_per_s"], 1), f"{run['cores_used']:.2f}", split,
                f"{_ms(run['upload_p50_s'])} / {_ms(run['upload_p99_s'])}", f"{run['uploads_s']:.1f} s",
                _f(run.get("other_cores"), 2),
            ])
        if rows:
            out += [f"**{title}**", ""] + _table(header, rows)

    rows = []
    for key, entry in _configs(ingest):
        for kind in ("pdf", "docx", "pdf_single_page"):
            run = (entry.get("runs") or {}).get(kind)
            if not run:
                continue
            cpu, files = run["cpu_s"], run["files"]
            workers = sum(v for k, v in cpu.items() if k.startswith("worker"))
            per_page = f"{run['server_cpu_s'] / run['pages'] * 1000:.1f}" if run.get("pages") else "–"
            rows.append([entry["label"], RUN_NAMES[kind], _f(cpu.get("web", 0) / files * 1000, 1),
                         _f(workers / files * 1000, 1) if entry.get("worker_processes") else "(in web)",
                         _f(cpu.get("postgres", 0) / files * 1000, 1) if "postgres" in cpu else "–",
                         _f(cpu.get("redis", 0) / files * 1000, 1) if "redis" in cpu else "–",
                         _f(run["server_cpu_s"] / files * 1000, 1), per_page, f"{run['passages'] / files:.1f}"])
    if rows:
        out += ["**CPU per document (ms)** — where the cost lies: a document's fixed cost (upload request, job, "
                "transactions) against its pages.", ""]
        out += _table(["Configuration", "Run", "web", "workers", "PostgreSQL", "Redis", "all", "per PDF page",
                       "passages per document"], rows)

    rows = []
    for key, entry in _configs(ingest):
        for kind in ("pdf", "docx", "pdf_single_page"):
            run = (entry.get("runs") or {}).get(kind)
            if not run:
                continue
            roots, trees, counts = run["peak_rss_root"], run["peak_rss_tree"], run["peak_processes"]
            workers = [k for k in trees if k.startswith("worker")]
            web = f"{_mib(roots.get('web'))}"
            if counts.get("web", 1) > 1:
                web += f" (tree of {counts['web']}: {_mib(trees.get('web'))})"
            worker_text = ", ".join(f"{_mib(trees[k])} (tree of {counts.get(k, 1)}; process {_mib(roots.get(k))})"
                                    for k in workers) or "–"
            rows.append([entry["label"], RUN_NAMES[kind], web, worker_text, _mib(trees.get("postgres")),
                         _mib(trees.get("redis"))])
    if rows:
        out += ["**Peak RSS (MiB)** — worker trees include their extraction subprocesses; PostgreSQL's figure sums "
                "its processes, shared buffers counted in each, so it overstates.", ""]
        out += _table(["Configuration", "Run", "web process", "each worker", "PostgreSQL", "Redis"], rows)

    out += _findings(ingest, cpus)
    profile = ingest.get("profile")
    if profile:
        out += _profile(profile)
    out += _suggestions(ingest)
    return out


def _findings(ingest: dict, cpus: int | None) -> list[str]:
    runs = {key: _pdf(entry) for key, entry in _configs(ingest) if _pdf(entry)}
    if not runs:
        return []
    best_key = max(runs, key=lambda k: runs[k]["pages_per_cpu_s"])
    best = runs[best_key]
    met = [k for k, r in runs.items() if r["pages_per_cpu_s"] >= TARGET_PAGES_PER_CORE_S]
    lines = [
        f"**Target (≥ {TARGET_PAGES_PER_CORE_S:.0f} text-PDF pages/s per core, end to end): "
        f"{'met' if met else 'missed'}.** Best: {_f(best['pages_per_cpu_s'])} pages per CPU-second "
        f"({ingest['configs'][best_key]['label']}); every configuration: "
        + ", ".join(f"{_short_label(k, ingest['configs'][k])} {_f(r['pages_per_cpu_s'])}" for k, r in runs.items())
        + "."
    ]
    if cpus:
        strict = {k: r["pages_per_s"] / cpus for k, r in runs.items()}
        key = max(strict, key=strict.get)
        lines.append(f"Read strictly as wall-clock pages/s divided by all {cpus} cores of the machine, idle or not: "
                     f"{_f(strict[key])} pages/s per core at best ({_short_label(key, ingest['configs'][key])}), "
                     f"{'also ' if strict[key] >= TARGET_PAGES_PER_CORE_S else 'which '}"
                     f"{'meets' if strict[key] >= TARGET_PAGES_PER_CORE_S else 'misses'} the target.")
    singles = {key: (entry.get("runs") or {}).get("pdf_single_page") for key, entry in _configs(ingest)}
    split = {key: _fixed_and_per_page(runs[key], run) for key, run in singles.items() if run and key in runs}
    if split:
        worst = min(split, key=lambda k: singles[k]["pages_per_cpu_s"])
        best_single = max(split, key=lambda k: singles[k]["pages_per_cpu_s"])
        fixed = [f for f, _ in split.values()]
        per_page = [p for _, p in split.values()]
        below = [k for k in split if singles[k]["pages_per_cpu_s"] < TARGET_PAGES_PER_CORE_S]
        lines.append(
            f"The margin comes from the pages per document ({runs[best_key]['pages'] / runs[best_key]['files']:.0f} on "
            f"average here). From the corpus runs and the one-page runs, a document costs about "
            f"{min(fixed):.0f}–{max(fixed):.0f} ms of server CPU whatever its size (upload request, job, "
            f"transactions) and each page {min(per_page):.1f}–{max(per_page):.1f} ms more, so **one-page PDFs give "
            f"{_f(singles[worst]['pages_per_cpu_s'])}–{_f(singles[best_single]['pages_per_cpu_s'])} pages per "
            f"CPU-second**" + (f": under the target in {len(below)} of {len(split)} configurations." if below else
                               ", still above the target."))
    if len(runs) > 1:
        one = [k for k in runs if CONFIGS.get(k, ("", "", 0, 0))[2:] == (1, 1)]
        two = [k for k in runs if CONFIGS.get(k, ("", "", 0, 0))[2] == 2]
        if one and two:
            a, b = runs[one[0]], runs[two[0]]
            lines.append(
                f"A second worker took the PDFs from {_f(a['pages_per_s'])} to {_f(b['pages_per_s'])} pages/s "
                f"(× {b['pages_per_s'] / a['pages_per_s']:.2f}): the servers then used {b['cores_used']:.2f} cores, "
                f"the benchmark's own uploading and polling {(b.get('client_cores') or 0):.2f} and the machine's other "
                f"work {(b.get('other_cores') or 0):.2f}, of {cpus or '?'} — "
                + ("on this machine the cores, not the software, stop the scaling."
                   if b["cores_used"] + (b.get("client_cores") or 0) + (b.get("other_cores") or 0) >= 0.85 * (cpus or 2)
                   else "the cores were not all busy: the web process (uploads) or the queue limits it."))
    slow = [(k, r) for k, r in runs.items() if r.get("upload_p99_s") and r.get("upload_p50_s")
            and r["upload_p99_s"] > 4 * r["upload_p50_s"]]
    for key, run in slow:
        lines.append(f"Uploads on {_short_label(key, ingest['configs'][key])} have a long tail (p50 "
                     f"{_ms(run['upload_p50_s'])} ms, p99 {_ms(run['upload_p99_s'])} ms)"
                     + (": likely SQLite's single writer — an upload's transaction waits while the job threads in the "
                        "same process write passages (not profiled)." if ingest["configs"][key].get("database") == "sqlite"
                        else "."))
    busy = [r.get("other_cores") or 0 for entry in ingest["configs"].values() for r in (entry.get("runs") or {}).values()]
    if busy and max(busy) >= 0.25:
        lines.append(f"Other work ran on this machine during some runs (up to {max(busy):.2f} cores besides these "
                     f"servers): wall-clock figures are lower than the machine gives; CPU-second figures hold better.")
    return [" ".join(lines), ""]


def _fixed_and_per_page(corpus_run: dict, single_run: dict) -> tuple[float, float]:
    """(CPU-ms per document, CPU-ms per further page) from a corpus run (n pages per document on
    average) and a one-page run: corpus = fixed + n × page, one page = fixed + page."""
    per_doc = corpus_run["server_cpu_s"] / corpus_run["files"] * 1000
    single = single_run["server_cpu_s"] / single_run["files"] * 1000
    pages = corpus_run["pages"] / corpus_run["files"]
    per_page = max(0.0, (per_doc - single) / (pages - 1)) if pages > 1 else 0.0
    return single - per_page, per_page


def _profile(profile: dict) -> list[str]:
    out = [f"### Where the CPU goes (py-spy, {profile.get('config')}, the PDFs once more, not a measured run)", ""]
    if profile.get("error"):
        return out + [f"Not profiled: {profile['error']}", ""]
    run = profile.get("run") or {}
    if run:
        out += [f"With py-spy attached ({profile['rate']} samples/s, non-blocking): {_f(run.get('pages_per_s'))} pages/s, "
                f"{_f(run.get('pages_per_cpu_s'))} pages per CPU-second. Shares of the samples of each profiled tree, "
                f"by the innermost frame that belongs to a layer:", ""]
    for name, title in (("worker", "`a3e worker` and its extraction subprocesses"), ("web", "`a3e serve` (uploads), only threads holding the GIL")):
        data = profile.get(name)
        if not data:
            continue
        if data.get("error") or not data.get("samples"):
            out += [f"{title}: {data.get('error', 'no samples')}", ""]
            continue
        processes = ", ".join(f"{label} {_pct(share)}" for label, share in data.get("processes", []))
        out += [f"**{title}** — {data['samples']:,} samples ({processes})", ""]
        out += _table(["Layer", "Share"], [[label, _pct(share)] for label, share in data["layers"]])
        out += ["Top frames (self): " + "; ".join(f"`{frame}` {_pct(share)}" for frame, share in data["top_self"][:8]),
                ""]
    statements = profile.get("statements")
    if statements and statements.get("per_document"):
        per = statements["per_document"]
        out += [f"**SQL statements per document** (PostgreSQL's statement log during that run, per client process; "
                f"BEGIN and COMMIT included): " + ", ".join(f"{app} {n:.1f}" for app, n in sorted(per.items()))
                + f" — {sum(per.values()):.1f} in all.", ""]
        rows = []
        for app, kinds in sorted(statements["kinds"].items()):
            rows.append([app, "; ".join(f"{kind} {n:.1f}" for kind, n in kinds)])
        out += _table(["Client", "Statements per document, by kind"], rows)
    whatif = profile.get("passage_insert_whatif")
    if whatif and whatif.get("variants"):
        rows = [[name, _f(v["client"] * 1000, 2), _f(v["server"] * 1000, 2), _f(v["wall"] * 1000, 2)]
                for name, v in whatif["variants"].items()]
        out += [f"**What-if: writing a document's {whatif['passages']} passages** (the run's average), mean of "
                f"{whatif['repeats']} interleaved rounds, each in a transaction rolled back "
                f"(`passage_insert_whatif` in bench/bench_ingest.py):", ""]
        out += _table(["Variant", "client CPU (ms)", "PostgreSQL CPU (ms)", "wall (ms)"], rows)
        current, multi = list(whatif["variants"].values())[:2]
        cost = {name: v["client"] + v["server"] for name, v in (("current", current), ("multi", multi))}
        verdict = ("the way src writes them costs less CPU in all, and is no bottleneck: nothing to change there"
                   if cost["current"] <= cost["multi"] else
                   f"one multi-row INSERT would save {(cost['current'] - cost['multi']) * 1000:.1f} ms of CPU per document")
        out += [f"Writing the passages costs {cost['current'] * 1000:.1f} ms of CPU per document: {verdict}.", ""]
    elif whatif and whatif.get("error"):
        out += [f"Passage-insert what-if not measured: {whatif['error']}", ""]
    return out


def _suggestions(ingest: dict) -> list[str]:
    items = []
    check = ingest.get("worker_models_check")
    if check and not check.get("ok"):
        items.append(
            "**Import every model in `a3e worker`** (e.g. `a3e.jobs.registry.load_job_modules`, or "
            "`a3e/evidence/jobs.py`, imports `a3e.auth.models` and `a3e.workspaces.models` — better, one "
            "`a3e.models` module that imports all of them, used by the app, the worker and Alembic's env). Without "
            "it a worker cannot flush a revision until a periodic job (`resume_stalled`, every 5 minutes) happens "
            "to import `a3e.evidence.service`. A test: run `evidence.process_revision` in a fresh interpreter that "
            "imported only `JOB_MODULES`.")
    statements = (ingest.get("profile") or {}).get("statements") or {}
    runs = {key: _pdf(entry) for key, entry in _configs(ingest) if _pdf(entry)}
    singles = {key: (entry.get("runs") or {}).get("pdf_single_page") for key, entry in _configs(ingest)}
    missed_small = [k for k, r in singles.items() if r and r["pages_per_cpu_s"] < TARGET_PAGES_PER_CORE_S]
    if missed_small and statements.get("kinds"):
        web = dict(statements["kinds"].get("web") or [])
        items.append(
            "**If many small documents must meet the target, cut the fixed cost per document** (not measured "
            "here; the evidence above): the upload makes "
            f"{sum(web.values()):.0f} statements in one transaction (table above), among them `document_out`'s "
            "`SELECT document_tags`, which re-reads the tags the request has just written — build the answer from "
            "the objects in hand, and see whether both `SELECT document_revisions` are needed; `process_revision` opens a `TemporaryDirectory` for every "
            "job even with local storage, where it is never used (`rmtree` shows among the worker's top frames) — "
            "create it only for a remote store; and every job is two transactions with a SELECT and an UPDATE of "
            "the revision each (needed for the `processing` state: keep, unless that state may be skipped). "
            "The passages' INSERTs are not worth changing (what-if above).")
    if not items:
        return []
    out = ["### Suggestions for src/ (not made here)", ""]
    out += [f"{index}. {item}" for index, item in enumerate(items, 1)]
    return out + [""]
