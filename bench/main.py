"""Runs the A³E benchmarks and writes bench/RESULTS.md (and the raw figures as bench/RESULTS.json).

Started by `bench/run`, which installs what is needed first; see `bench/run --help`.
"""

from __future__ import annotations

import argparse
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

SECTIONS = ("startup", "rss", "import", "micro", "http")


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
    parser.add_argument("--no-diagnostics", action="store_true",
                        help="load only A³E and the bare ASGI app (skip bare FastAPI, LOG_LEVEL=warning, what-ifs)")
    parser.add_argument("--output", default=str(BENCH_DIR / "RESULTS.md"), help="where to write the report")
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
    if not (1 <= args.runs <= 50 and 1 <= args.rounds <= 10 and 0 < args.duration <= 60 and 1 <= args.connections <= 256):
        parser.error("keep it bounded: --runs 1..50, --rounds 1..10, --duration up to 60 s, --connections 1..256")
    return args


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
    if "http" in args.only:
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
    results["elapsed_s"] = time.monotonic() - started

    output = Path(args.output)
    text = render(results, partial=set(args.only) != set(SECTIONS))
    _check_no_local_paths(text)
    output.write_text(text)
    json_text = json.dumps(results, indent=1, default=str)
    _check_no_local_paths(json_text)
    output.with_suffix(".json").write_text(json_text + "\n")
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


def _check_no_local_paths(text: str) -> None:
    """The report is committed: it must not name directories of this machine."""
    import tempfile

    for path in {str(ROOT), str(Path.home()), str(Path(sys.prefix)), tempfile.gettempdir() + os.sep}:
        if path and path != "/" and path in text:
            raise SystemExit(f"refusing to write a report that contains a local path ({path!r})")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
