"""Throughput and latency of /health/live and /health/ready: A³E side by side with a bare ASGI
app on the same uvicorn with the same options, interleaved rounds, medians; and, when the target
is missed, a py-spy profile of A³E under the same load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from lib import (
    A3E,
    BENCH_DIR,
    HOST,
    a3e_env,
    clean_env,
    cpu_count,
    free_port,
    get,
    log,
    median,
    scrub_path,
    spawn,
    stop,
    wait_ready,
)

PYTHON = sys.executable
EXPECTED = {"/health/live": {"status": "alive"}, "/health/ready": {"status": "ready"}}


@dataclass
class Target:
    key: str
    label: str
    role: str  # "subject" | "reference" | "diagnostic"
    cmd: list[str]
    env: dict[str, str]
    endpoints: tuple[str, ...]
    port: int = 0
    process: subprocess.Popen | None = None
    results: dict[str, list[dict]] = field(default_factory=dict)
    rss_after: int | None = None


def _targets(work: Path, endpoints: tuple[str, ...], diagnostics: bool) -> list[Target]:
    data = work / "data"
    bare = [PYTHON, str(BENCH_DIR / "bare_app.py")]
    whatif = [PYTHON, str(BENCH_DIR / "whatif_app.py")]
    live_only = tuple(e for e in endpoints if e == "/health/live")
    targets = [
        Target("a3e", "A³E (`a3e serve`, LOG_LEVEL=info)", "subject", [A3E, "serve", "--host", HOST], a3e_env(data), endpoints),
        Target("bare", "bare ASGI app (reference)", "reference", [*bare, "--kind", "asgi"], clean_env(), endpoints),
    ]
    if diagnostics:
        targets += [
            Target(
                "fastapi", "bare FastAPI app, same routes, no middleware", "diagnostic",
                [*bare, "--kind", "fastapi"], clean_env(), endpoints,
            ),
            Target(
                "a3e_quiet", "A³E with LOG_LEVEL=warning (no access-log line)", "diagnostic",
                [A3E, "serve", "--host", HOST], a3e_env(data, log_level="warning"), live_only,
            ),
            Target(
                "whatif_log", "what-if: A³E + pure-ASGI /health/live shortcut, access log kept", "diagnostic",
                [*whatif, "--variant", "log"], a3e_env(data), live_only,
            ),
            Target(
                "whatif_nolog", "what-if: A³E + pure-ASGI /health/live shortcut, no log line for probes", "diagnostic",
                [*whatif, "--variant", "nolog"], a3e_env(data), live_only,
            ),
        ]
    return [t for t in targets if t.endpoints]


def _start(target: Target, work: Path, cpus: list[int] | None) -> None:
    target.port = free_port()
    cmd = [*target.cmd, "--port", str(target.port)]
    # Every server's stderr (A³E's access log included) goes to a file, the same way for all.
    with open(work / f"{target.key}.log", "ab") as handle:
        started = time.perf_counter()
        target.process = spawn(cmd, env=target.env, cwd=work, stdout=handle, stderr=handle, cpus=cpus)
    # Every target answers /health/ready (the what-ifs pass it to A³E), so all start ready alike.
    wait_ready(target.process, target.port, started, path="/health/ready", timeout=60)
    for endpoint in target.endpoints:
        answer = get(target.port, endpoint)
        if answer.status != 200 or json.loads(answer.body) != EXPECTED[endpoint]:
            raise RuntimeError(f"{target.key} {endpoint}: unexpected answer {answer.status} {answer.body[:200]!r}")


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def load_tool(requested: str) -> str:
    if requested == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if requested == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed")
    return requested


def run_load(tool: str, url: str, *, duration: float, connections: int, cpus: list[int] | None) -> dict:
    if tool == "wrk":
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s",
               "-s", str(BENCH_DIR / "wrk_report.lua"), url]
    else:
        cmd = [PYTHON, str(BENCH_DIR / "loadgen.py"), "--url", url, "--connections", str(connections),
               "--duration", str(duration)]
    process = spawn(cmd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cpus=cpus)
    try:
        out, err = process.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        stop(process)
        raise RuntimeError(f"load generator did not finish: {' '.join(cmd)}") from None
    finally:
        stop(process)
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line[len("WRKJSON "):])
            seconds = data["duration_us"] / 1e6
            data["rps"] = data["requests"] / seconds if seconds else 0.0
            data["errors_total"] = sum(data["errors"].values())
            return data
    raise RuntimeError(f"no result from {cmd[0]}: {err.decode(errors='replace')[-500:]}")


# ---------------------------------------------------------------------------------------------
# Profiling with py-spy (sampling, from outside the process)

# Layers of a request, each named by markers found in its frames ("function (file)"). A sample is
# charged to the layer of its innermost frame that belongs to one: time in the standard library or
# in C (a socket write, a regex) goes to the layer that called it. Two exceptions, checked over
# the whole stack first, since they are A³E's own choices wherever they are called from: the
# access-log line and the request id.
WHOLE_STACK: list[tuple[str, tuple[str, ...]]] = [
    ("access-log line (logging module, A³E's filter and formatter, stderr write)",
     ("(logging/__init__.py)", "a3e/core/logging.py", "log_fields (")),
    ("request id (uuid.uuid4)", ("uuid4 (",)),
]
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("endpoint and readiness cache (a3e/core/health.py, database.py)", ("a3e/core/health.py", "a3e/core/database.py")),
    ("A³E middleware (request context, CORS, guard), incl. their send wrappers", ("a3e/core/middleware.py",)),
    ("FastAPI request handling (routing, dependencies, serialization)", ("fastapi/", "pydantic")),
    ("Starlette routing", ("starlette/routing.py",)),
    ("Starlette Request/Response/Headers objects", ("starlette/responses.py", "starlette/requests.py",
                                                   "starlette/datastructures.py")),
    ("Starlette middleware stack (ServerError, Exception middleware)", ("starlette/",)),
    ("uvicorn proxy-headers middleware", ("uvicorn/middleware/proxy_headers.py",)),
    ("uvicorn HTTP protocol (httptools parsing, response writes to the socket)", ("uvicorn/",)),
]
OTHER_BUCKET = "event loop (uvloop, in C), asyncio, waiting, other"

# Inclusive shares of a few functions that the buckets cut across.
HOTSPOTS: list[tuple[str, tuple[str, ...]]] = [
    ("stdlib logging machinery for the access line (Logger.info/log -> handlers)",
     ("Logger.log (", "Logger._log (", "Logger.info (")),
    ("RedactingFilter.filter (secret-masking regexes)", ("RedactingFilter.filter (",)),
    ("log formatting (TextFormatter / JsonFormatter)", ("TextFormatter.format (", "JsonFormatter.format (")),
    ("StreamHandler.emit (formatting, then the write and flush of each line)", ("StreamHandler.emit (",)),
    ("Logger.findCaller (the caller's file and line, which no formatter prints)", ("Logger.findCaller (",)),
    ("FastAPI's native telemetry check per request (NativeTelemetry.enabled: os.environ lookups)",
     ("NativeTelemetry.enabled (",)),
    ("uuid.uuid4", ("uuid4 (",)),
    ("starlette.datastructures (Headers, MutableHeaders)", ("starlette/datastructures.py",)),
    ("Request object + request.app.state (starlette.requests)", ("starlette/requests.py",)),
    ("jsonable_encoder / response serialization (fastapi)", ("jsonable_encoder (", "serialize_response (")),
]


def _layer_of(stack: str) -> str:
    for name, markers in WHOLE_STACK:
        if any(marker in stack for marker in markers):
            return name
    for frame in reversed(stack.split(";")):
        for name, markers in LAYERS:
            if any(marker in frame for marker in markers):
                return name
    return OTHER_BUCKET


def analyze_profile(raw: str) -> dict:
    """Shares of samples per layer, and the functions with the most self samples."""
    buckets: Counter[str] = Counter()
    self_samples: Counter[str] = Counter()
    hotspots: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        if stack.startswith("thread ("):  # recorded with --threads: keep the event loop's thread only
            thread, _, stack = stack.partition(";")
            if "MainThread" not in thread:
                continue
        stack = scrub_path(stack)
        total += count
        buckets[_layer_of(stack)] += count
        self_samples[stack.rsplit(";", 1)[-1]] += count
        for name, markers in HOTSPOTS:
            if any(marker in stack for marker in markers):
                hotspots[name] += count
    if not total:
        return {"samples": 0, "buckets": [], "top_self": [], "hotspots": []}
    order = [name for name, _ in WHOLE_STACK + LAYERS] + [OTHER_BUCKET]
    return {
        "samples": total,
        "buckets": [(name, buckets[name] / total) for name in order if buckets[name]],
        "top_self": [(frame, count / total) for frame, count in self_samples.most_common(12)],
        "hotspots": [(name, hotspots[name] / total) for name, _ in HOTSPOTS if hotspots[name]],
    }


def profile(target: Target, endpoint: str, tool: str, *, seconds: float, connections: int,
            load_cpus: list[int] | None, work: Path) -> dict:
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(py_spy).exists():
        return {"error": "py-spy is not installed"}
    out = work / f"profile-{target.key}-{endpoint.strip('/').replace('/', '-')}.txt"
    url = f"http://{HOST}:{target.port}{endpoint}"
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds + 3:g}s", url] if tool == "wrk" else [
        PYTHON, str(BENCH_DIR / "loadgen.py"), "--url", url, "--connections", str(connections),
        "--duration", str(seconds + 3)]
    load = spawn(cmd, env=clean_env(), cpus=load_cpus)
    try:
        time.sleep(1.0)
        spy = spawn(
            [py_spy, "record", "--pid", str(target.process.pid), "--duration", f"{int(seconds)}", "--rate", "250",
             "--idle", "--threads", "--nolineno", "--format", "raw", "--output", str(out)],
            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            _, err = spy.communicate(timeout=seconds + 30)
        finally:
            stop(spy)
        load.wait(seconds + 30)
    finally:
        stop(load)
    if not out.exists():
        return {"error": "py-spy produced no profile: " + scrub_path(err.decode(errors="replace").strip().splitlines()[0]
                                                                   if err.strip() else "no output")}
    result = analyze_profile(out.read_text(errors="replace"))
    result["endpoint"] = endpoint
    return result


# ---------------------------------------------------------------------------------------------


def throughput(*, tool: str, rounds: int, duration: float, warmup: float, connections: int,
               diagnostics: bool, profile_mode: str, target_ratio: float, profile_seconds: float) -> dict:
    endpoints = ("/health/live", "/health/ready")
    pin = cpu_count() >= 2
    server_cpus = [0] if pin else None
    load_cpus = [1] if pin else None
    result: dict = {
        "tool": tool, "rounds": rounds, "duration": duration, "connections": connections,
        "pinned": pin, "targets": {}, "profiles": [],
    }
    with tempfile.TemporaryDirectory(prefix="a3e-bench-http-") as tmp:
        work = Path(tmp)
        targets = _targets(work, endpoints, diagnostics)
        try:
            for target in targets:
                try:
                    _start(target, work, server_cpus)
                except Exception as exc:  # a diagnostic that cannot start must not sink the run
                    if target.role != "diagnostic":
                        raise
                    log(f"skipping {target.key}: {exc}")
                    if target.process is not None:
                        stop(target.process)
                    target.process = None
            targets = [t for t in targets if t.process is not None]
            # Warm-up: JIT-free, but caches, lazy imports and the readiness cache settle.
            for target in targets:
                for endpoint in target.endpoints:
                    run_load(tool, f"http://{HOST}:{target.port}{endpoint}", duration=warmup,
                             connections=connections, cpus=load_cpus)
            for round_index in range(rounds):
                for endpoint in endpoints:
                    # A³E and the bare app back to back, in alternating order, then the diagnostics in a
                    # rotating order: no target is always first, and the headline ratio compares runs
                    # made seconds apart.
                    pair = [t for t in targets if t.role != "diagnostic" and endpoint in t.endpoints]
                    extra = [t for t in targets if t.role == "diagnostic" and endpoint in t.endpoints]
                    pair = pair if round_index % 2 == 0 else pair[::-1]
                    shift = round_index % len(extra) if extra else 0
                    for target in pair + extra[shift:] + extra[:shift]:
                        server = psutil.Process(target.process.pid)
                        before, started = _cpu_seconds(server), time.perf_counter()
                        data = run_load(tool, f"http://{HOST}:{target.port}{endpoint}", duration=duration,
                                        connections=connections, cpus=load_cpus)
                        # The share of a core the server got while loaded: well under 100 % means that
                        # other processes on this machine took the CPU it was pinned to.
                        data["server_cpu_seconds"] = _cpu_seconds(server) - before
                        data["server_cpu"] = data["server_cpu_seconds"] / (time.perf_counter() - started)
                        data["round"] = round_index
                        data["loadavg1"] = os.getloadavg()[0]
                        target.results.setdefault(endpoint, []).append(data)
                        log(f"round {round_index + 1}/{rounds} {endpoint} {target.key}: {data['rps']:.0f} req/s, "
                            f"p99 {data['latency_us']['p99'] / 1000:.2f} ms, errors {data['errors_total']}, "
                            f"server CPU {data['server_cpu'] * 100:.0f} %, load {data['loadavg1']:.1f}")
            for target in targets:
                target.rss_after = psutil.Process(target.process.pid).memory_info().rss

            by_key = {t.key: t for t in targets}

            def med_rps(key: str, endpoint: str) -> float | None:
                runs = by_key[key].results.get(endpoint, []) if key in by_key else []
                return median([r["rps"] for r in runs])

            def cpu_per_request(key: str, endpoint: str) -> float | None:
                runs = by_key[key].results.get(endpoint, []) if key in by_key else []
                return median([r["server_cpu_seconds"] / r["requests"] for r in runs if r["requests"]])

            live_ratio = (med_rps("a3e", "/health/live") or 0) / (med_rps("bare", "/health/live") or 1)
            ready_ratio = (med_rps("a3e", "/health/ready") or 0) / (med_rps("bare", "/health/ready") or 1)
            a3e_cpu, bare_cpu = cpu_per_request("a3e", "/health/live"), cpu_per_request("bare", "/health/live")
            live_cpu_ratio = bare_cpu / a3e_cpu if a3e_cpu and bare_cpu else live_ratio
            result["live_ratio"], result["ready_ratio"] = live_ratio, ready_ratio
            # Profile when either measure misses: throughput, or CPU per request (which a load
            # generator slowed by other work cannot flatter).
            missed = min(live_ratio, live_cpu_ratio) < target_ratio
            wanted = profile_mode == "always" or (profile_mode == "auto" and missed)
            if wanted:
                for endpoint in endpoints:
                    log(f"profiling A³E on {endpoint} with py-spy for {profile_seconds:g}s")
                    try:
                        found = profile(by_key["a3e"], endpoint, tool, seconds=profile_seconds,
                                        connections=connections, load_cpus=load_cpus, work=work)
                    except Exception as exc:  # a failed profile must not lose the measurements
                        found = {"endpoint": endpoint, "error": f"{exc.__class__.__name__}: {exc}"}
                    result["profiles"].append(found)
        finally:
            for target in targets:
                if target.process is not None:
                    stop(target.process)
        for target in targets:
            result["targets"][target.key] = {
                "label": target.label, "role": target.role, "results": target.results, "rss_after": target.rss_after,
                "log_bytes": (work / f"{target.key}.log").stat().st_size if (work / f"{target.key}.log").exists() else 0,
            }
    return result
