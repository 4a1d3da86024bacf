"""extract_isolated(): extraction in a separate worker process, so that a hostile file cannot
crash, exhaust or hang the caller.

Workers are reused (starting one costs a Python start-up, about 0.4 s; a task then costs a
pipe round trip, about 0.2 ms) and replaced after `max_tasks_per_worker` tasks, after running
out of memory, after a crash and after a timeout. Each worker caps its address space
(RLIMIT_AS = limits.memory_mb); the caller enforces limits.timeout_seconds by killing it.
Workers are plain subprocesses (not fork), so this is safe from a threaded server, and one
worker serves one caller at a time: the pool grows with the number of concurrent callers.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from a3e.evidence.extraction.base import DEFAULT_LIMITS, Extracted, ExtractionFailed, ExtractionLimits, Kind, UnsupportedFile

_HEADER = struct.Struct(">I")
_EXIT_OUT_OF_MEMORY = 3  # worker.EXIT_OUT_OF_MEMORY, not imported: that module is the child's
_STARTUP_TIMEOUT = 60.0


class _WorkerGone(Exception):
    """The worker died or stopped answering; the message says how."""


class _Worker:
    def __init__(self, memory_mb: int) -> None:
        self.memory_mb = memory_mb
        self.tasks = 0
        # -P: the working directory (where uploads might sit) is not put on sys.path.
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "a3e.evidence.extraction.worker", str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin = self.process.stdin
        self._stdout_fd = self.process.stdout.fileno()
        ready = self._receive(time.monotonic() + _STARTUP_TIMEOUT, 1024, starting=True)
        if ready != {"ready": True}:
            self.kill()
            raise _WorkerGone("The extraction worker could not start")

    @property
    def pid(self) -> int:
        return self.process.pid

    def run(self, request: dict[str, Any], timeout: float, max_response: int) -> dict[str, Any]:
        data = json.dumps(request).encode("utf-8")
        try:
            self._stdin.write(_HEADER.pack(len(data)) + data)
            self._stdin.flush()
        except (BrokenPipeError, OSError):
            raise _WorkerGone(self._death()) from None
        self.tasks += 1
        response = self._receive(time.monotonic() + timeout, max_response, timeout=timeout)
        if not isinstance(response, dict):
            raise _WorkerGone("The extraction process returned an invalid answer")
        return response

    def _receive(self, deadline: float, max_size: int, *, timeout: float | None = None, starting: bool = False) -> Any:
        header = self._read_exactly(_HEADER.size, deadline, timeout, starting)
        (length,) = _HEADER.unpack(header)
        if length > max_size:
            raise _WorkerGone("The extraction process returned an answer larger than any document allows")
        try:
            return json.loads(self._read_exactly(length, deadline, timeout, starting))
        except ValueError:
            raise _WorkerGone("The extraction process returned an invalid answer") from None

    def _read_exactly(self, size: int, deadline: float, timeout: float | None, starting: bool) -> bytes:
        chunks: list[bytes] = []
        missing = size
        with selectors.DefaultSelector() as selector:
            selector.register(self._stdout_fd, selectors.EVENT_READ)
            while missing:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    if time.monotonic() < deadline:
                        continue
                    if starting:
                        raise _WorkerGone("The extraction worker did not start in time")
                    raise _WorkerGone(f"Extraction took longer than {_seconds(timeout or 0)} and was stopped")
                chunk = os.read(self._stdout_fd, min(missing, 1 << 20))
                if not chunk:
                    raise _WorkerGone(self._death())
                chunks.append(chunk)
                missing -= len(chunk)
        return b"".join(chunks)

    def _death(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "The extraction process stopped answering"
        if code == _EXIT_OUT_OF_MEMORY:
            return f"Extraction ran out of memory (the limit is {self.memory_mb:,} MB)"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"The extraction process crashed ({name}) while reading this file"
        return f"The extraction process exited unexpectedly (status {code})"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._close_pipes()

    def close(self, *, wait: bool = True) -> None:
        """Ask politely (end of input), then insist. With wait=False the worker is reaped by a
        background thread, so that retiring one never delays the caller."""
        try:
            self._stdin.close()
        except OSError:
            pass
        if wait:
            self._reap()
        else:
            threading.Thread(target=self._reap, name="a3e-extraction-reaper", daemon=True).start()

    def _reap(self) -> None:
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass


def _seconds(value: float) -> str:
    return f"{value:g} second{'s' if value != 1 else ''}"


class ExtractionPool:
    """Reusable isolated workers. Thread-safe; one worker per concurrent caller."""

    def __init__(self, max_tasks_per_worker: int = 500, max_idle_workers: int | None = None) -> None:
        self.max_tasks_per_worker = max_tasks_per_worker
        self.max_idle_workers = max_idle_workers if max_idle_workers is not None else max(1, os.cpu_count() or 1)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._lock = threading.Lock()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (idle and busy), for monitoring."""
        with self._lock:
            return [worker.pid for worker in [*self._idle, *self._busy]]

    def _acquire(self, memory_mb: int) -> _Worker:
        with self._lock:
            for index, worker in enumerate(self._idle):
                if worker.memory_mb == memory_mb and worker.process.poll() is None:
                    self._idle.pop(index)
                    self._busy.add(worker)
                    return worker
        worker = _Worker(memory_mb)  # outside the lock: start-up takes a while
        with self._lock:
            self._busy.add(worker)
        return worker

    def _release(self, worker: _Worker, *, healthy: bool) -> None:
        retire = None
        with self._lock:
            self._busy.discard(worker)
            if healthy and worker.tasks < self.max_tasks_per_worker and worker.process.poll() is None:
                self._idle.append(worker)
                if len(self._idle) > self.max_idle_workers:
                    retire = self._idle.pop(0)
            else:
                retire = worker
        if retire is None:
            return
        if retire is worker and not healthy:
            retire.kill()  # timed out, crashed or out of memory: no politeness
        else:
            retire.close(wait=False)

    def extract(self, path: Path, kind: Kind | str, limits: ExtractionLimits = DEFAULT_LIMITS) -> Extracted:
        request = {"path": str(Path(path).resolve()), "kind": Kind(kind).value, "limits": limits.as_dict()}
        max_response = 8 * limits.max_characters + (64 << 20)
        try:
            worker = self._acquire(limits.memory_mb)
        except (_WorkerGone, OSError) as exc:
            raise ExtractionFailed(str(exc)) from None
        try:
            response = worker.run(request, limits.timeout_seconds, max_response)
        except _WorkerGone as exc:
            self._release(worker, healthy=False)
            raise ExtractionFailed(str(exc)) from None
        except BaseException:  # interrupted while waiting: the worker's state is unknown
            self._release(worker, healthy=False)
            raise
        healthy = response.get("error") != "memory"
        self._release(worker, healthy=healthy)
        if response.get("ok") is True:
            try:
                return Extracted.from_dict(response["extracted"])
            except (KeyError, TypeError, ValueError):
                raise ExtractionFailed("The extraction process returned an invalid answer") from None
        reason = str(response.get("reason") or "The extraction failed")
        error = response.get("error")
        if error == "unsupported":
            raise UnsupportedFile(reason)
        if error == "memory":
            raise ExtractionFailed(f"Extraction ran out of memory (the limit is {limits.memory_mb:,} MB)")
        raise ExtractionFailed(reason)

    def close(self) -> None:
        with self._lock:
            workers, self._idle = self._idle, []
        for worker in workers:
            worker.close()

    def forget(self) -> None:
        """In a forked child: the workers belong to the parent; drop them without touching them."""
        self._idle = []
        self._busy = set()
        self._lock = threading.Lock()


_default_pool: ExtractionPool | None = None
_default_lock = threading.Lock()


def default_pool() -> ExtractionPool:
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            _default_pool = ExtractionPool()
            atexit.register(_default_pool.close)
        return _default_pool


def _forget_after_fork() -> None:
    global _default_lock
    _default_lock = threading.Lock()
    if _default_pool is not None:
        _default_pool.forget()


os.register_at_fork(after_in_child=_forget_after_fork)


def extract_isolated(path: Path, kind: Kind | str, limits: ExtractionLimits = DEFAULT_LIMITS) -> Extracted:
    """extract() in a worker process with limits.memory_mb of address space and
    limits.timeout_seconds of wall clock; a crash, a timeout or running out of memory raises
    ExtractionFailed, and the caller carries on."""
    return default_pool().extract(path, kind, limits)
