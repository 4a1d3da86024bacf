"""Import time of `a3e.app`, time of `a3e --help`, and where import time goes (-X importtime)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from lib import A3E, a3e_env, free_port, log, median, spawn, stop, summary, wait_ready

PYTHON = sys.executable


def _wall(cmd: list[str], env: dict[str, str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=60)
    return time.perf_counter() - started


def parse_importtime(text: str) -> dict[str, int]:
    """Self time in microseconds per top-level package, from `-X importtime` output."""
    per_package: dict[str, int] = defaultdict(int)
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        try:
            _, self_us, _cumulative, name = (part.strip() for part in line.replace("import time:", "|", 1).split("|"))
            per_package[name.split(".")[0]] += int(self_us)
        except ValueError:
            continue
    return dict(per_package)


def _importtime(code: str, env: dict[str, str], cwd: str) -> dict[str, int]:
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=True
    )
    return parse_importtime(done.stderr)


def _median_packages(samples: list[dict[str, int]], baseline: list[dict[str, int]]) -> dict[str, float]:
    names = set().union(*samples)
    result = {}
    for name in names:
        value = median([s.get(name, 0) for s in samples]) - median([b.get(name, 0) for b in baseline])
        if value > 0:
            result[name] = value
    return dict(sorted(result.items(), key=lambda item: -item[1]))


def _imported_names(text: str) -> list[str]:
    """Module names from `-X importtime` output, in the order their imports completed."""
    names = []
    for line in text.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            name = line.rsplit("|", 1)[-1].strip()
            if name and name not in names:
                names.append(name)
    return names


_REPLAY = """
import importlib, sys, time
started = time.perf_counter()
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException:
        pass
print(time.perf_counter() - started)
"""

# In-process: from just before the import to just after it, without the interpreter's start and,
# above all, without its shutdown (tearing down hundreds of modules takes a while too).
_TIMED_IMPORT = "import time; t = time.perf_counter(); import a3e.app; print(time.perf_counter() - t)"


def _in_process(code: str, args: list[str], env: dict[str, str], cwd: str) -> float:
    done = subprocess.run([PYTHON, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def serve_imports(runs: int) -> dict:
    """What a restart of `a3e serve` imports before /health/ready answers 200, and what those
    imports cost.

    The names come from a real start with PYTHONPROFILEIMPORTTIME=1 (on a migrated database,
    the background migration check included). Their times cannot: the server imports in two
    threads at once (the event loop and the migration check), and -X importtime's accounting
    is per process, so concurrent imports give wrong, even negative, self times. So the same
    modules are then imported again, in the same order, by one thread of a fresh interpreter.
    """
    with tempfile.TemporaryDirectory(prefix="a3e-bench-imp-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        texts = []
        for i in range(2):  # the first start migrates the database; the second is a restart
            port = free_port()
            log_path = work / f"serve-{i}.log"
            with open(log_path, "wb") as handle:
                env = a3e_env(data_dir, PYTHONPROFILEIMPORTTIME="1")
                started = time.perf_counter()
                process = spawn([A3E, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=work, stderr=handle)
            try:
                wait_ready(process, port, started)
                time.sleep(0.3)  # lets a readiness check's lazy imports finish
            finally:
                stop(process)
            texts.append(log_path.read_text(errors="replace"))
        env = a3e_env(data_dir)
        baseline = set(_imported_names(subprocess.run(
            [PYTHON, "-X", "importtime", "-c", "pass"], env=env, cwd=work, capture_output=True, text=True, timeout=60
        ).stderr))
        # Skip the interpreter's own start-up modules, and the migration scripts: alembic runs
        # those as files, and importing them would run a migration.
        names = [
            n for n in _imported_names(texts[-1])
            if n not in baseline and not n.startswith("a3e.migrations") and n.rpartition(".")[2] != "__main__"
        ]
        samples, walls = [], []
        for _ in range(runs):
            # Time without -X importtime (which adds its own overhead), then the split by package.
            walls.append(_in_process(_REPLAY, names, env, str(work)))
            done = subprocess.run([PYTHON, "-X", "importtime", "-c", _REPLAY, *names], env=env, cwd=work,
                                  capture_output=True, text=True, timeout=120)
            samples.append(parse_importtime(done.stderr))
        base = [_importtime("pass", env, str(work)) for _ in range(3)]
    packages = _median_packages(samples, base)
    return {
        "modules": len(names),
        "in_process": median(walls),
        "runs": runs,
        "packages_us": packages,
    }


def import_times(runs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="a3e-bench-imp-") as cwd:
        env = a3e_env(Path(cwd) / "data")
        commands = {
            "bare_interpreter": [PYTHON, "-c", "pass"],
            "import_a3e_app": [PYTHON, "-c", "import a3e.app"],
            "a3e_help": [A3E, "--help"],
        }
        in_process = []
        for cmd in commands.values():  # warm caches and .pyc files
            _wall(cmd, env, cwd)
        walls: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, cmd in commands.items():
                walls[name].append(_wall(cmd, env, cwd))
            in_process.append(_in_process(_TIMED_IMPORT, [], env, cwd))
        baseline = [_importtime("pass", env, cwd) for _ in range(3)]
        app = [_importtime("import a3e.app", env, cwd) for _ in range(3)]
    result = {name: summary(values) for name, values in walls.items()}
    result["import_a3e_app_in_process"] = summary(in_process)
    result["import_a3e_app_net"] = median(walls["import_a3e_app"]) - median(walls["bare_interpreter"])
    result["a3e_help_net"] = median(walls["a3e_help"]) - median(walls["bare_interpreter"])
    result["importtime_a3e_app_packages_us"] = _median_packages(app, baseline)
    result["importtime_a3e_app_total_us"] = median([sum(s.values()) for s in app]) - median(
        [sum(s.values()) for s in baseline]
    )
    log(
        f"import a3e.app: {result['import_a3e_app_net'] * 1000:.0f} ms wall net, "
        f"{result['import_a3e_app_in_process']['median'] * 1000:.0f} ms in-process, "
        f"a3e --help: {median(walls['a3e_help']) * 1000:.0f} ms"
    )
    return result
