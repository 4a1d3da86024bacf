"""Cold start (spawn of `a3e serve` -> first 200 on /health/ready) and idle RSS per worker."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from lib import A3E, a3e_env, free_port, get, log, spawn, stop, summary, wait_ready


def _serve(data_dir: Path, work: Path, port: int, label: str, workers: int | None = None) -> subprocess.Popen:
    cmd = [A3E, "serve", "--host", "127.0.0.1", "--port", str(port)]
    if workers:
        cmd += ["--workers", str(workers)]
    stderr = open(work / f"{label}.log", "ab")
    try:
        # cwd: an empty directory, so that no .env file is read.
        return spawn(cmd, env=a3e_env(data_dir), cwd=work, stderr=stderr, stdout=stderr)
    finally:
        stderr.close()


def _start_once(data_dir: Path, work: Path, label: str) -> dict:
    port = free_port()
    started = time.perf_counter()
    process = _serve(data_dir, work, port, label)
    try:
        timing = wait_ready(process, port, started, interval=0.01, timeout=30)
        # CPU time the server used until it was ready: unlike wall time, hardly moved by other
        # processes competing for the CPU.
        cpu = psutil.Process(process.pid).cpu_times()
        loadavg = os.getloadavg()[0]
    finally:
        shutdown = stop(process)
    return {"first_answer": timing.first_answer, "ready": timing.ready, "shutdown": shutdown,
            "cpu_to_ready": cpu.user + cpu.system, "loadavg1": loadavg}


MEASURES = ("first_answer", "ready", "cpu_to_ready", "shutdown", "loadavg1")


def cold_start(runs: int) -> dict:
    """Each round: a fresh, empty A3E_DATA_DIR (migrations run), then a restart on that same,
    already migrated directory. Interleaved so that machine noise hits both alike."""
    first, restart = [], []
    with tempfile.TemporaryDirectory(prefix="a3e-bench-start-") as tmp:
        work = Path(tmp)
        # One unmeasured start, so that both series see warm OS file caches and .pyc files.
        _start_once(work / "warmup", work, "warmup")
        for i in range(runs):
            data_dir = work / f"data-{i}"
            first.append(_start_once(data_dir, work, f"first-{i}"))
            restart.append(_start_once(data_dir, work, f"restart-{i}"))
            log(
                f"cold start {i + 1}/{runs}: first {first[-1]['ready']:.3f}s, restart {restart[-1]['ready']:.3f}s"
            )
    return {
        "runs": runs,
        "nproc": os.cpu_count(),
        "first_start": {key: summary([r[key] for r in first]) for key in MEASURES},
        "restart": {key: summary([r[key] for r in restart]) for key in MEASURES},
        "raw": {"first_start": first, "restart": restart},
    }


def _poke(port: int, count: int) -> None:
    for i in range(count):
        path = ("/health/live", "/health/ready", "/health")[i % 3]
        get(port, path, timeout=5)


def _memory(process: psutil.Process) -> dict:
    info = process.memory_full_info()
    return {"rss": info.rss, "uss": info.uss, "pss": getattr(info, "pss", None)}


def _workers_of(supervisor: psutil.Process) -> list[psutil.Process]:
    workers = []
    for child in supervisor.children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "resource_tracker" in cmdline:
            continue
        workers.append(child)
    return workers


def idle_rss() -> dict:
    """RSS after ready and a few requests: the single worker, then each of `--workers 2`."""
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="a3e-bench-rss-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"

        port = free_port()
        started = time.perf_counter()
        process = _serve(data_dir, work, port, "rss-1")
        try:
            wait_ready(process, port, started)
            _poke(port, 30)
            time.sleep(1.0)
            result["single"] = _memory(psutil.Process(process.pid))
        finally:
            stop(process)
        log(f"idle RSS, 1 worker: {result['single']['rss'] / 2**20:.1f} MB")

        port = free_port()
        started = time.perf_counter()
        process = _serve(data_dir, work, port, "rss-2", workers=2)
        try:
            timing = wait_ready(process, port, started)
            supervisor = psutil.Process(process.pid)
            deadline = time.monotonic() + 20
            workers = _workers_of(supervisor)
            while len(workers) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
                workers = _workers_of(supervisor)
            # New connections each time: the kernel spreads them over both workers.
            _poke(port, 60)
            time.sleep(1.0)
            result["two_workers"] = {
                "ready": timing.ready,
                "supervisor": _memory(supervisor),
                "workers": [_memory(worker) for worker in workers],
            }
        finally:
            stop(process)
        rss = ", ".join(f"{w['rss'] / 2**20:.1f}" for w in result["two_workers"]["workers"])
        log(f"idle RSS, 2 workers: {rss} MB (supervisor {result['two_workers']['supervisor']['rss'] / 2**20:.1f} MB)")
        shutil.rmtree(data_dir, ignore_errors=True)
    return result
