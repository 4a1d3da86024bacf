"""Shared helpers for the benchmarks: servers as child processes that never outlive the run,
free loopback ports, fast readiness polling, and small statistics.

Every process started here goes through `spawn()`: it gets its own process group (so that its
own children, e.g. uvicorn workers, are stopped with it), is killed by the kernel if this
process dies (PR_SET_PDEATHSIG), and is stopped by `stop_all()` at exit or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import atexit
import ctypes
import http.client
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VENV_BIN = Path(sys.executable).parent
A3E = str(VENV_BIN / "a3e")
HOST = "127.0.0.1"

# Fixed, strong-looking secrets: the benchmark never depends on generated development secrets.
SECRETS = {
    "SECRET_KEY": "bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyzABCDEF",
    "JWT_SECRET_KEY": "bench-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyzABCDEF",
}

# Variables that A3E's settings read (or that would steer it to another database or environment):
# dropped from the inherited environment so that the machine's own setup cannot leak in.
_SETTINGS_PREFIXES = ("A3E_",)
_SETTINGS_NAMES = {
    "ENVIRONMENT", "RAILWAY_ENVIRONMENT_NAME", "RAILWAY_ENVIRONMENT", "RENDER", "FLY_APP_NAME", "DYNO",
    "DATABASE_URL", "SECRET_KEY", "JWT_SECRET_KEY", "CORS_ORIGINS", "PORT", "WEB_CONCURRENCY",
    "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "LOG_LEVEL", "LOG_FORMAT",
}

# uvicorn options that `a3e serve` passes (src/a3e/cli.py, cmd_serve): the bare reference app is
# served with exactly these, so that only the application differs.
A3E_UVICORN_OPTIONS = dict(
    log_config=None,
    access_log=False,
    server_header=False,
    proxy_headers=False,  # the app reads forwarded headers itself, for A3E_TRUSTED_PROXIES
    timeout_graceful_shutdown=15,
    timeout_keep_alive=30,
)

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in _SETTINGS_NAMES and not k.upper().startswith(_SETTINGS_PREFIXES)
    }
    env.update({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    env.pop("PYTHONTRACEMALLOC", None)
    env.update(extra)
    return env


def a3e_env(data_dir: Path, log_level: str = "info", **extra: str) -> dict[str, str]:
    return clean_env(**SECRETS, A3E_DATA_DIR=str(data_dir), LOG_LEVEL=log_level, **extra)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# Child processes


_children: list[subprocess.Popen] = []


def _preexec(cpus: Sequence[int] | None):
    def run() -> None:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if cpus:
            os.sched_setaffinity(0, set(cpus))

    return run


def spawn(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    cpus: Sequence[int] | None = None,
    run_as: tuple[int, int] | None = None,
) -> subprocess.Popen:
    """`run_as` (uid, gid): run the child as that unprivileged user, without supplementary groups
    (PostgreSQL refuses to run as root). The parent-death signal is set after the switch, so it holds."""
    identity = {} if run_as is None else {"user": run_as[0], "group": run_as[1], "extra_groups": []}
    process = subprocess.Popen(
        list(cmd),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=_preexec(cpus),
        **identity,
    )
    _children.append(process)
    return process


def stop(process: subprocess.Popen, timeout: float = 20.0) -> float | None:
    """SIGTERM the process group, wait, SIGKILL what is left. Returns seconds to exit, or None
    when it had to be killed."""
    if process.poll() is not None:
        _forget(process)
        _kill_group(process.pid, signal.SIGKILL)
        return 0.0
    started = time.perf_counter()
    try:
        os.kill(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    elapsed: float | None
    try:
        process.wait(timeout)
        elapsed = time.perf_counter() - started
    except subprocess.TimeoutExpired:
        elapsed = None
    _kill_group(process.pid, signal.SIGKILL)  # anything left of it (workers, helpers)
    if process.poll() is None:
        process.kill()
        process.wait(5)
    _forget(process)
    return elapsed


def _forget(process: subprocess.Popen) -> None:
    if process in _children:
        _children.remove(process)


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all() -> None:
    # Newest first: servers before the database they use.
    for process in reversed(list(_children)):
        try:
            stop(process, timeout=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            _kill_group(process.pid, signal.SIGKILL)


def _on_signal(signum, _frame) -> None:
    stop_all()
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)


# ---------------------------------------------------------------------------------------------
# HTTP


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


def get(port: int, path: str, timeout: float = 2.0) -> Answer:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        return Answer(response.status, body, {k.lower(): v for k, v in response.getheaders()})
    finally:
        connection.close()


@dataclass
class StartTiming:
    first_answer: float | None  # seconds from spawn to the first HTTP answer of any status
    ready: float | None  # seconds from spawn to the first 200 on the polled path


def wait_ready(
    process: subprocess.Popen,
    port: int,
    started: float,
    *,
    path: str = "/health/ready",
    interval: float = 0.01,
    timeout: float = 30.0,
) -> StartTiming:
    """Poll `path` every `interval` seconds until it answers 200; times relative to `started`
    (a perf_counter taken just before the process was spawned)."""
    first_answer = None
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode} before it was ready")
        try:
            answer = get(port, path, timeout=1.0)
        except OSError:
            time.sleep(interval)
            continue
        now = time.perf_counter()
        if first_answer is None:
            first_answer = now - started
        if answer.status == 200:
            return StartTiming(first_answer, now - started)
        time.sleep(interval)
    raise TimeoutError(f"no 200 on {path} within {timeout:.0f}s")


# ---------------------------------------------------------------------------------------------
# Statistics and formatting


def summary(values: Sequence[float]) -> dict[str, float]:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def median(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


_ABS_PATH = re.compile(r"(?:/[\w.+-]+)+/(?:site-packages|dist-packages|src|lib/python\d\.\d+)/")


def scrub_path(text: str) -> str:
    """Strip machine-specific directories from file names (profiles name files by full path)."""
    return _ABS_PATH.sub("", text)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
