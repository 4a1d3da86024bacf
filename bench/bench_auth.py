"""The `auth` section: login (argon2id) and an authenticated, workspace-scoped read under load, on a
throwaway PostgreSQL cluster, with `a3e serve` configured as in production.

Steps: time argon2id in-process; start PostgreSQL (as an unprivileged user when running as
root); `a3e migrate`; start `a3e serve` with WEB_CONCURRENCY=1 and =2 side by side; seed through
the real API (register, log in, create a workspace, create a read-only API key); check the read
answers 200 with the workspace; then wrk on GET /api/v1/workspaces/{id} (access token and API
key, interleaved rounds) and on POST /api/v1/auth/login; and, when the read target is missed, a
py-spy profile of the one-worker server and what-if servers (bench/whatif_auth_app.py) that
measure the suggestions.

Nothing is pinned to a CPU here: the servers, PostgreSQL and wrk share the machine's cores, as an
API server and its database on one small host do. psutil measures what each took.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from lib import A3E, BENCH_DIR, HOST, a3e_env, clean_env, free_port, log, median, scrub_path, spawn, stop, wait_ready

PYTHON = sys.executable
READ_TARGET_RPS = 2250.0  # 5 × the 450 req/s of the system A³E replaces
READ_TARGET_P99_S = 0.050
OLD_READ = {"rps": 450, "p99_ms": 360}
CORS_ORIGIN = "https://app.example.edu"
READ_PATH = "/api/v1/workspaces/{id}"
LOGIN_PATH = "/api/v1/auth/login"
WHATIF_PATH = "/whatif/workspaces/{id}"
# PostgreSQL: initdb's defaults, except where and how it listens and room for every pool at once.
PG_OPTIONS = {"listen_addresses": HOST, "max_connections": "200"}
PG_SHOWN = ("server_version", "shared_buffers", "max_connections", "fsync", "synchronous_commit",
            "full_page_writes", "wal_level", "work_mem", "effective_cache_size")


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def clean_text(text: str) -> str:
    """An error message fit for the committed report: no directory of this machine in it."""
    text = scrub_path(text)
    for path in {tempfile.gettempdir(), str(BENCH_DIR.parent), str(Path.home()), sys.prefix}:
        if path and path != "/":
            text = text.replace(path, "…")
    return text


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@dataclass
class Cluster:
    base: Path
    port: int
    process: subprocess.Popen
    run_as: tuple[int, int] | None
    database: str = "a3e_bench"
    user: str = "a3e"

    def url(self) -> str:
        return f"postgresql://{self.user}@{HOST}:{self.port}/{self.database}"

    def conninfo(self, database: str | None = None) -> str:
        return f"host={HOST} port={self.port} user={self.user} dbname={database or self.database} connect_timeout=3"


def start_cluster() -> Cluster:
    initdb = _pg_bin("initdb")
    if not initdb:
        raise RuntimeError("PostgreSQL is not installed (no initdb on PATH or under /usr/lib/postgresql)")
    postgres = str(Path(os.path.realpath(initdb)).parent / "postgres")
    run_as = None
    if os.geteuid() == 0:  # the server refuses to run as root
        import pwd

        for candidate in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(candidate)
                break
            except KeyError:
                continue
        else:
            raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")
        run_as = (entry.pw_uid, entry.pw_gid)
    base = Path(tempfile.mkdtemp(prefix="a3e-bench-pg-"))
    try:
        if run_as:
            os.chown(base, *run_as)
        os.chmod(base, 0o700)
        return _start_cluster(base, postgres, initdb, run_as)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise


def _start_cluster(base: Path, postgres: str, initdb: str, run_as: tuple[int, int] | None) -> Cluster:
    import psycopg

    data, sockets = base / "data", base / "sockets"
    env = clean_env()
    init = spawn([initdb, "-D", str(data), "-U", "a3e", "--auth=trust", "-E", "UTF8", "--no-sync"],
                 env=env, cwd=base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, run_as=run_as)
    out, _ = init.communicate(timeout=120)
    stop(init)
    if init.returncode != 0:
        raise RuntimeError("initdb failed: " + clean_text(out.decode(errors="replace"))[-400:])
    sockets.mkdir()
    if run_as:
        os.chown(sockets, *run_as)
    port = free_port()
    options = [arg for name, value in PG_OPTIONS.items() for arg in ("-c", f"{name}={value}")]
    with open(base / "server.log", "ab") as handle:
        if run_as:
            os.chown(base / "server.log", *run_as)
        process = spawn([postgres, "-D", str(data), "-p", str(port), "-k", str(sockets), *options],
                        env=env, cwd=base, stdout=handle, stderr=handle, run_as=run_as)
    cluster = Cluster(base, port, process, run_as)
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited with status {process.returncode}")
            try:
                with psycopg.connect(cluster.conninfo("postgres"), autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{cluster.database}"')
                return cluster
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    except BaseException:
        stop(process, timeout=5)
        raise


def stop_cluster(cluster: Cluster) -> None:
    import signal

    if cluster.process.poll() is None:
        try:
            os.kill(cluster.process.pid, signal.SIGINT)  # fast shutdown: clients disconnected, no checkpoint wait
            cluster.process.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    stop(cluster.process, timeout=5)
    shutil.rmtree(cluster.base, ignore_errors=True)


def describe_cluster(cluster: Cluster) -> dict:
    import psycopg

    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        return {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in PG_SHOWN}


# ---------------------------------------------------------------------------------------------
# Servers


@dataclass
class Server:
    key: str
    label: str
    workers: int
    cmd: list[str]
    env: dict[str, str]
    path: str = READ_PATH
    port: int = 0
    process: subprocess.Popen | None = None
    results: dict[str, list[dict]] = field(default_factory=dict)


def server_env(work: Path, cluster: Cluster, workers: int, log_level: str = "info") -> dict[str, str]:
    return a3e_env(work / "data", log_level=log_level, ENVIRONMENT="production", DATABASE_URL=cluster.url(),
                   CORS_ORIGINS=CORS_ORIGIN, WEB_CONCURRENCY=str(workers))


def migrate(env: dict[str, str], work: Path) -> None:
    """`a3e migrate` against the environment's database; raises with its output's tail if it fails."""
    process = spawn([A3E, "migrate"], env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = process.communicate(timeout=180)
    stop(process)
    if process.returncode != 0:
        raise RuntimeError("a3e migrate failed: " + clean_text(out.decode(errors="replace"))[-500:])


def start_server(server: Server, work: Path) -> None:
    server.port = free_port()
    with open(work / f"{server.key}.log", "ab") as handle:
        started = time.perf_counter()
        server.process = spawn([*server.cmd, "--port", str(server.port)], env=server.env, cwd=work,
                               stdout=handle, stderr=handle)
    wait_ready(server.process, server.port, started, path="/health/ready", timeout=90)
    # With two workers either may answer: a few more 200s so that both have started.
    for _ in range(8 * server.workers):
        wait_ready(server.process, server.port, started, path="/health/ready", timeout=90)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_by_pid(pid: int) -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds of each process of the tree."""
    found = {}
    for process in _tree(pid):
        try:
            times = process.cpu_times()
            found[process.pid] = (times.user, times.system)
        except psutil.NoSuchProcess:
            pass
    return found


def _cpu_split(before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]]) -> tuple[float, float]:
    # Processes started during the run (a new database connection's backend) count whole.
    user = sum(value[0] - before.get(pid, (0.0, 0.0))[0] for pid, value in after.items())
    system = sum(value[1] - before.get(pid, (0.0, 0.0))[1] for pid, value in after.items())
    return user, system


def _cpu_delta(before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]]) -> float:
    return sum(_cpu_split(before, after))


def _busy(times) -> float:
    return times.user + times.nice + times.system + times.irq + times.softirq + times.steal


# ---------------------------------------------------------------------------------------------
# HTTP: seeding through the real API


def call(port: int, method: str, path: str, body: dict | None = None, token: str | None = None,
         timeout: float = 30.0) -> tuple[int, object]:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, raw[:300]


def _expect(what: str, answer: tuple[int, object], *statuses: int) -> dict:
    status, body = answer
    if status not in statuses:
        raise RuntimeError(f"{what}: HTTP {status} {str(body)[:300]}")
    return body  # type: ignore[return-value]


def register_and_login(port: int, email: str, password: str) -> dict:
    _expect(f"register {email}", call(port, "POST", "/api/v1/auth/register",
                                      {"email": email, "password": password, "name": "Bench Person"}), 201, 202)
    return _expect(f"login {email}", call(port, "POST", LOGIN_PATH, {"email": email, "password": password}), 200)


def login(port: int, email: str, password: str) -> str:
    return _expect(f"login {email}", call(port, "POST", LOGIN_PATH, {"email": email, "password": password}), 200)[
        "access_token"]


def seed(port: int, login_accounts: int) -> dict:
    password = "bench-" + secrets.token_urlsafe(18)
    owner = "owner@example.edu"
    register_and_login(port, owner, password)
    token = login(port, owner, password)
    workspace = _expect("create workspace", call(port, "POST", "/api/v1/workspaces", {"name": "Bench College"},
                                                 token=token), 201)
    key = _expect("create API key", call(port, "POST", f"/api/v1/workspaces/{workspace['id']}/api-keys",
                                         {"name": "bench reader", "scope": "read"}, token=token), 201)
    accounts = []
    for index in range(login_accounts):
        email = f"login-{index:02d}@example.edu"
        register_and_login(port, email, password)
        accounts.append({"email": email, "password": password})
    return {"owner": {"email": owner, "password": password}, "workspace": workspace, "api_key": key["key"],
            "api_key_scope": key["scope"], "accounts": accounts}


def check_read(port: int, path: str, workspace: dict, token: str, role: str | None) -> None:
    status, body = call(port, "GET", path.format(id=workspace["id"]), token=token)
    if status != 200 or not isinstance(body, dict) or body.get("id") != workspace["id"] \
            or body.get("name") != workspace["name"] or body.get("role") != role:
        raise RuntimeError(f"GET {path}: unexpected answer {status} {str(body)[:300]}")


# ---------------------------------------------------------------------------------------------
# Load


def run_wrk(url: str, *, duration: float, connections: int, token: str | None = None,
            bodies: Path | None = None, timeout: str = "5s") -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", timeout]
    env = clean_env()
    if bodies is not None:
        cmd += ["-s", str(BENCH_DIR / "wrk_login.lua")]
        env["A3E_WRK_BODIES"] = str(bodies)
    else:
        cmd += ["-s", str(BENCH_DIR / "wrk_report.lua")]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    process = spawn([*cmd, url], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=duration + 60)
    except subprocess.TimeoutExpired:
        raise RuntimeError("wrk did not finish") from None
    finally:
        stop(process)
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line[len("WRKJSON "):])
            seconds = data["duration_us"] / 1e6
            data["rps"] = data["requests"] / seconds if seconds else 0.0
            data["errors_total"] = sum(data["errors"].values())
            return data
    raise RuntimeError(f"no result from wrk: {err.decode(errors='replace')[-500:]}")


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children only: wrk, once it has exited
    return usage.ru_utime + usage.ru_stime


def measured_run(server: Server, cluster: Cluster, url: str, **load) -> dict:
    server_before, pg_before = _cpu_by_pid(server.process.pid), _cpu_by_pid(cluster.process.pid)
    machine_before, wrk_before, started = psutil.cpu_times(), _children_cpu(), time.perf_counter()
    data = run_wrk(url, **load)
    wall = time.perf_counter() - started
    machine_after, wrk_cpu = psutil.cpu_times(), _children_cpu() - wrk_before
    server_after = _cpu_by_pid(server.process.pid)
    server_user, server_system = _cpu_split(server_before, server_after)
    # Each process's share of a core: with two workers, how evenly the connections were spread.
    per_process = sorted((sum(v) - sum(server_before.get(pid, (0.0, 0.0)))) / wall for pid, v in server_after.items())
    server_cpu = server_user + server_system
    pg_cpu = _cpu_delta(pg_before, _cpu_by_pid(cluster.process.pid))
    total = sum(machine_after) - sum(machine_before)
    busy = (_busy(machine_after) - _busy(machine_before)) / total if total else None
    # What the rest of the machine took meanwhile (share of a core): other work than this benchmark's.
    foreign = None if busy is None else max(0.0, busy * (psutil.cpu_count() or 1) - (server_cpu + pg_cpu + wrk_cpu) / wall)
    data.update(wrk_cpu=wrk_cpu / wall, foreign_cpu=foreign,
        server_cpu_seconds=server_cpu, server_cpu=server_cpu / wall, server_system_seconds=server_system,
        server_processes_cpu=[round(x, 3) for x in reversed(per_process) if x >= 0.01], pg_cpu_seconds=pg_cpu, pg_cpu=pg_cpu / wall,
        machine_busy=busy,
        loadavg1=os.getloadavg()[0],
    )
    return data


# Other work on the machine (another test suite, say) lowers a run's figures: such a run is done
# again once the machine is quiet, within a bounded budget, and the report shows what remained.
FOREIGN_LIMIT = 0.25  # share of a core taken by other processes during a run
QUIET_LIMIT = 0.10  # ... during a second of waiting, to call the machine quiet
_quiet_budget = {"seconds": 600.0}


def _foreign_now(seconds: float = 1.0) -> float:
    """Share of a core that processes other than this benchmark's used over `seconds`."""
    def ours() -> float:
        total = 0.0
        me = psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    machine_before, ours_before, started = psutil.cpu_times(), ours(), time.perf_counter()
    time.sleep(seconds)
    machine_after, ours_after, wall = psutil.cpu_times(), ours(), time.perf_counter() - started
    total = sum(machine_after) - sum(machine_before)
    if not total:
        return 0.0
    busy_cores = (_busy(machine_after) - _busy(machine_before)) / total * (psutil.cpu_count() or 1)
    return max(0.0, busy_cores - (ours_after - ours_before) / wall)


def wait_quiet(limit_s: float = 90.0) -> float:
    """Wait (at most `limit_s`, and within the run's budget) until other processes leave the machine
    alone; returns the seconds waited."""
    waited = 0.0
    while waited < min(limit_s, _quiet_budget["seconds"]):
        if _foreign_now() < QUIET_LIMIT:
            break
        waited += 1.0
    _quiet_budget["seconds"] -= waited
    return waited


def quiet_run(server: Server, cluster: Cluster, url: str, retries: int = 2, **load) -> dict:
    """`measured_run`, done again (up to `retries` times) when other processes took the CPU."""
    data = measured_run(server, cluster, url, **load)
    attempts, waited = 1, 0.0
    while (data.get("foreign_cpu") or 0) > FOREIGN_LIMIT and attempts <= retries and _quiet_budget["seconds"] > 0:
        log(f"other processes took {data['foreign_cpu'] * 100:.0f} % of a core: waiting for quiet, then again")
        waited += wait_quiet()
        data = measured_run(server, cluster, url, **load)
        attempts += 1
    data.update(attempts=attempts, waited_s=waited)
    return data


def _fmt(data: dict) -> str:
    statuses = data.get("statuses")
    extra = f", statuses {statuses}" if statuses else ""
    kernel = data["server_system_seconds"] / max(data["server_cpu_seconds"], 1e-9)
    per_request = data["server_cpu_seconds"] / max(data["requests"], 1)
    return (f"{data['rps']:.0f} req/s, p50 {data['latency_us']['p50'] / 1000:.1f} ms, p99 "
            f"{data['latency_us']['p99'] / 1000:.1f} ms, errors {data['errors_total']}{extra}, server CPU "
            f"{data['server_cpu'] * 100:.0f} % ({kernel * 100:.0f} % of it in the kernel), {per_request * 1e6:.0f} µs/req, "
            f"PostgreSQL CPU {data['pg_cpu'] * 100:.0f} %, machine {(data['machine_busy'] or 0) * 100:.0f} % busy, "
            f"wrk {data['wrk_cpu'] * 100:.0f} %, other processes {(data['foreign_cpu'] or 0) * 100:.0f} %")


# ---------------------------------------------------------------------------------------------
# argon2id in-process


def argon2_cost(runs: int) -> dict:
    from a3e.core.security import PasswordHasherConfig, Passwords
    from a3e.core.settings import Settings

    fields = Settings.model_fields
    config = PasswordHasherConfig(fields["argon2_time_cost"].default, fields["argon2_memory_kib"].default,
                                  fields["argon2_parallelism"].default)
    passwords = Passwords(config)
    password = "bench-" + secrets.token_urlsafe(18)
    stored = passwords.hash(password)  # warm-up (and the import)
    result: dict = {"time_cost": config.time_cost, "memory_kib": config.memory_kib,
                    "parallelism": config.parallelism, "runs": runs}
    for name, work in (("hash", lambda: passwords.hash(password)), ("verify", lambda: passwords.verify(stored, password))):
        walls, cpus = [], []
        for _ in range(runs):
            cpu, wall = time.process_time(), time.perf_counter()
            work()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        result[name] = {"wall_median": statistics.median(walls), "wall_min": min(walls), "wall_max": max(walls),
                        "cpu_median": statistics.median(cpus)}
    return result


# ---------------------------------------------------------------------------------------------
# Profiling with py-spy: every thread, only while it holds the GIL

# Layers, each named by markers found in a frame ("function (file)"); a sample goes to the layer
# of its innermost frame that belongs to one, except the access log, checked over the whole stack.
WHOLE_STACK = [("access-log line (logging, A³E's formatter and filter)", ("(logging/__init__.py)", "a3e/core/logging.py"))]
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("JWT decode and verify (PyJWT, hmac)", ("jwt/",)),
    ("psycopg (driver: send, wait for, parse rows)", ("psycopg/", "psycopg_binary/", "psycopg_c/")),
    ("SQLAlchemy pool (checkout, pre-ping, return, reset)", ("sqlalchemy/pool/",)),
    ("SQLAlchemy ORM (Session, query, identity map, loading)", ("sqlalchemy/orm/",)),
    ("SQLAlchemy Core (engine, SQL compilation, results)", ("sqlalchemy/",)),
    ("A³E auth, scoping, session code", ("a3e/auth/", "a3e/workspaces/", "a3e/apikeys/", "a3e/core/database.py",
                                         "a3e/core/security.py")),
    ("A³E middleware (request id, CORS, guard)", ("a3e/core/middleware.py",)),
    ("pydantic (validation, serialization)", ("pydantic",)),
    ("FastAPI dependency solving", ("fastapi/dependencies/",)),
    ("FastAPI routing, response serialization, other", ("fastapi/",)),
    ("thread-pool hops (anyio to_thread, worker threads, futures, queues)",
     ("anyio/", "starlette/concurrency.py", "concurrent/futures", "(threading.py)", "(queue.py)")),
    ("Starlette (routing, requests, responses, middleware)", ("starlette/",)),
    ("uvicorn (HTTP protocol)", ("uvicorn/",)),
]
OTHER_BUCKET = "event loop (uvloop, asyncio) and other"
# Inclusive shares of functions that cut across the layers (overlapping).
HOTSPOTS: list[tuple[str, tuple[str, ...]]] = [
    ("get_principal: bearer token → user (JWT decode + SELECT user)", ("get_principal (",)),
    ("  decode_access_token (PyJWT)", ("decode_access_token (",)),
    ("workspace_access: SELECT workspace JOIN membership", ("workspace_access (",)),
    ("pool checkout incl. pre-ping", ("_checkout (sqlalchemy/pool/base.py)",)),
    ("  pre-ping (SELECT 1 round trip)", ("do_ping (",)),
    ("get_session: session exit (COMMIT, close, connection back to the pool)",
     ("__exit__ (contextlib.py)", "commit (sqlalchemy/orm/session.py)", "close (sqlalchemy/orm/session.py)",
      "_commit_and_close (", "_rollback_and_close (")),
    ("FastAPI solve_dependencies (event-loop side)", ("solve_dependencies (",)),
    ("run_in_threadpool / anyio.to_thread (both sides)", ("run_sync (", "run_in_threadpool (",
                                                          "run_sync_in_worker_thread (", "WorkerThread.run (",
                                                          "contextmanager_in_threadpool (")),
    ("response serialization (serialize_response, pydantic dump, JSON)", ("serialize_response (",)),
    ("access-log line", ("(logging/__init__.py)", "a3e/core/logging.py")),
    ("psycopg execute (all queries, incl. waiting for the answer)", ("execute (psycopg/cursor.py)",)),
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
    buckets: Counter[str] = Counter()
    self_samples: Counter[str] = Counter()
    hotspots: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread = "event-loop thread"
        if stack.startswith("thread ("):
            head, _, stack = stack.partition(";")
            thread = "event-loop thread" if "MainThread" in head else "thread-pool threads"
        stack = scrub_path(stack)
        total += count
        threads[thread] += count
        buckets[_layer_of(stack)] += count
        self_samples[stack.rsplit(";", 1)[-1]] += count
        for name, markers in HOTSPOTS:
            if any(marker in stack for marker in markers):
                hotspots[name] += count
    if not total:
        return {"samples": 0}
    order = [name for name, _ in WHOLE_STACK + LAYERS] + [OTHER_BUCKET]
    return {
        "samples": total,
        "threads": [(name, count / total) for name, count in threads.most_common()],
        "buckets": [(name, buckets[name] / total) for name in order if buckets[name]],
        "hotspots": [(name, hotspots[name] / total) for name, _ in HOTSPOTS if hotspots[name]],
        "top_self": [(frame, count / total) for frame, count in self_samples.most_common(15)],
    }


def profile(server: Server, url: str, token: str, *, seconds: float, connections: int, work: Path) -> dict:
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(py_spy).exists():
        return {"error": "py-spy is not installed"}
    out = work / "profile-read.txt"
    rate = 250
    load = spawn(["wrk", "-t1", f"-c{connections}", f"-d{seconds + 4:g}s", "-H", f"Authorization: Bearer {token}", url],
                 env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        before = _cpu_by_pid(server.process.pid)
        started = time.perf_counter()
        spy = spawn([py_spy, "record", "--pid", str(server.process.pid), "--duration", f"{int(seconds)}",
                     "--rate", str(rate), "--gil", "--threads", "--nolineno", "--format", "raw", "--output", str(out)],
                    env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _, err = spy.communicate(timeout=seconds + 30)
        finally:
            stop(spy)
        wall = time.perf_counter() - started
        cpu = _cpu_delta(before, _cpu_by_pid(server.process.pid)) / wall
        load_out, _ = load.communicate(timeout=seconds + 30)
    finally:
        stop(load)
    if not out.exists():
        message = err.decode(errors="replace").strip().splitlines()[0] if err.strip() else "no output"
        return {"error": "py-spy produced no profile: " + clean_text(message)}
    result = analyze_profile(out.read_text(errors="replace"))
    result.update(seconds=int(seconds), rate=rate, connections=connections, server_cpu=cpu)
    # Samples are taken only from a thread holding the GIL: their count over the expected count is
    # the share of the time the GIL was held (py-spy can fall behind, so it is a floor).
    result["gil_busy"] = min(1.0, result["samples"] / (rate * int(seconds))) if result.get("samples") else None
    for line in load_out.decode(errors="replace").splitlines():
        if line.strip().startswith("Requests/sec:"):
            result["rps_while_profiled"] = float(line.split(":")[1])
    return result


# ---------------------------------------------------------------------------------------------


def auth(*, tool: str | None, rounds: int, duration: float, warmup: float, read_connections: list[int],
         login_connections: list[int], login_duration: float, workers: list[int], profile_mode: str,
         profile_seconds: float, argon2_runs: int, whatif_duration: float) -> dict:
    if tool != "wrk":
        return {"error": "the auth section needs wrk (bench/run installs it when run as root)"}
    result: dict = {
        "rounds": rounds, "duration": duration, "warmup": warmup, "read_connections": read_connections,
        "login_connections": login_connections, "login_duration": login_duration, "workers": workers,
        "whatif_duration": whatif_duration,
        "cpus": os.cpu_count(), "pg_options": PG_OPTIONS, "target_rps": READ_TARGET_RPS,
        "target_p99_s": READ_TARGET_P99_S, "old": OLD_READ, "reads": {}, "logins": {}, "whatifs": {},
    }
    from a3e.core.settings import Settings

    defaults = Settings.model_fields
    result["login_limits"] = {"per_account": defaults["login_max_failures"].default,
                              "per_address": defaults["login_max_failures_per_ip"].default,
                              "window_s": defaults["login_window_seconds"].default}
    result["quiet_at_start_waited_s"] = wait_quiet()
    log(f"argon2id in-process: {argon2_runs} hashes and verifies")
    result["argon2"] = argon2_cost(argon2_runs)
    log(f"argon2id hash median {result['argon2']['hash']['wall_median'] * 1000:.0f} ms wall, "
        f"{result['argon2']['hash']['cpu_median'] * 1000:.0f} ms CPU")
    with tempfile.TemporaryDirectory(prefix="a3e-bench-auth-") as tmp:
        work = Path(tmp)
        cluster: Cluster | None = None
        servers: list[Server] = []
        try:
            cluster = start_cluster()
            result["postgres"] = describe_cluster(cluster)
            log(f"PostgreSQL {result['postgres']['server_version']} on a free loopback port; migrating")
            migrate(server_env(work, cluster, 1), work)

            servers = [Server(f"a3e_w{n}", f"`a3e serve`, WEB_CONCURRENCY={n}", n, [A3E, "serve", "--host", HOST],
                              server_env(work, cluster, n)) for n in workers]
            for server in servers:
                start_server(server, work)
            first = servers[0]
            log("seeding through the API: register, log in, workspace, API key, login accounts")
            seeded = seed(first.port, 2 * max(login_connections))
            workspace, owner = seeded["workspace"], seeded["owner"]
            result["seed"] = {"login_accounts": len(seeded["accounts"]), "api_key_scope": seeded["api_key_scope"]}

            def credentials() -> dict[str, tuple[str, str | None]]:
                # A fresh access token (15 minutes by default) for each phase of loads.
                return {"token": (login(first.port, owner["email"], owner["password"]), "owner"),
                        "api_key": (seeded["api_key"], None)}

            def read_phase(targets: list[Server], connections: list[int], kinds: tuple[str, ...], store: dict,
                           seconds: float) -> None:
                creds = credentials()
                for server in targets:
                    for kind in kinds:
                        check_read(server.port, server.path, workspace, creds[kind][0], creds[kind][1])
                    # The fewest connections: the warm-up must not itself run into the pool limit.
                    run_wrk(f"http://{HOST}:{server.port}{server.path.format(id=workspace['id'])}", duration=warmup,
                            connections=min(connections), token=creds["token"][0])
                for round_index in range(rounds):
                    shift = round_index % len(targets)
                    order = targets[shift:] + targets[:shift]
                    for conns in connections:
                        for kind in kinds:
                            for server in order:
                                url = f"http://{HOST}:{server.port}{server.path.format(id=workspace['id'])}"
                                data = quiet_run(server, cluster, url, duration=seconds, connections=conns,
                                                 token=creds[kind][0])
                                data.update(round=round_index, connections=conns, kind=kind)
                                store.setdefault(server.key, {"label": server.label, "workers": server.workers,
                                                              "runs": []})["runs"].append(data)
                                log(f"round {round_index + 1}/{rounds} read {kind} c={conns} {server.key}: {_fmt(data)}")

            # 1. The authenticated read.
            read_phase(servers, read_connections, ("token", "api_key"), result["reads"], duration)

            # 2. Login, with the right password, each request on the next of the accounts (twice as
            # many as connections: the throttle counts an attempt in flight as a failure until its
            # password is found right, at most 5 per account and address).
            bodies = work / "logins.jsonl"
            bodies.write_text("".join(json.dumps({"email": a["email"], "password": a["password"]}) + "\n"
                                      for a in seeded["accounts"]))
            for server in servers:
                run_wrk(f"http://{HOST}:{server.port}{LOGIN_PATH}", duration=2, connections=min(login_connections),
                        bodies=bodies, timeout="10s")
            for round_index in range(rounds):
                order = servers if round_index % 2 == 0 else servers[::-1]
                for conns in login_connections:
                    for server in order:
                        data = quiet_run(server, cluster, f"http://{HOST}:{server.port}{LOGIN_PATH}",
                                         duration=login_duration, connections=conns, bodies=bodies, timeout="10s")
                        data.update(round=round_index, connections=conns)
                        result["logins"].setdefault(server.key, {"label": server.label, "workers": server.workers,
                                                                 "runs": []})["runs"].append(data)
                        log(f"round {round_index + 1}/{rounds} login c={conns} {server.key}: {_fmt(data)}")
            # Diagnostic: every connection on the same account, from the same address.
            one = work / "login-one-account.jsonl"
            one.write_text(json.dumps({"email": owner["email"], "password": owner["password"]}) + "\n")
            conns = max(login_connections)
            data = quiet_run(first, cluster, f"http://{HOST}:{first.port}{LOGIN_PATH}", duration=login_duration,
                             connections=conns, bodies=one, timeout="10s")
            data.update(connections=conns)
            result["login_one_account"] = {"server": first.key, **data}
            log(f"login, one account, c={conns} {first.key}: {_fmt(data)}")

            # 3. Targets met? If not: where the time goes, and what the suggestions would buy.
            missed = not _read_target_met(result["reads"])
            result["target_met"] = not missed
            if profile_mode == "always" or (profile_mode == "auto" and missed):
                single = next((s for s in servers if s.workers == 1), None)
                if single is not None:
                    # The fewest connections: with more, the one-worker server may be stuck on its pool.
                    conns = min(read_connections)
                    log(f"profiling {single.key} on the token read with py-spy for {profile_seconds:g}s (c={conns})")
                    try:
                        wait_quiet()
                        token = credentials()["token"][0]
                        result["profile"] = profile(single, f"http://{HOST}:{single.port}"
                                                    f"{READ_PATH.format(id=workspace['id'])}", token,
                                                    seconds=profile_seconds, connections=conns, work=work)
                    except Exception as exc:  # a failed profile must not lose the measurements
                        result["profile"] = {"error": f"{exc.__class__.__name__}: {clean_text(str(exc))}"}
                    for server in servers:  # room for the what-ifs: only the reference stays
                        if server is not single:
                            stop(server.process)
                    whatifs = _whatif_servers(work, cluster)
                    try:
                        for server in whatifs:
                            start_server(server, work)
                        log(f"what-ifs: {len(whatifs)} variants against {single.key}, {whatif_duration:g} s runs")
                        read_phase([single, *whatifs], read_connections, ("token",), result["whatifs"],
                                   whatif_duration)
                    except Exception as exc:
                        result["whatifs_error"] = f"{exc.__class__.__name__}: {clean_text(str(exc))}"
                    finally:
                        for server in whatifs:
                            if server.process is not None:
                                stop(server.process)
            result["quiet_budget_left_s"] = _quiet_budget["seconds"]
            for server in servers:
                log_file = work / f"{server.key}.log"
                result.setdefault("log_bytes", {})[server.key] = log_file.stat().st_size if log_file.exists() else 0
        finally:
            for server in servers:
                if server.process is not None:
                    stop(server.process)
            if cluster is not None:
                stop_cluster(cluster)
    return result


# (key, label, variant of bench/whatif_auth_app.py, path, workers, log level, gc.freeze())
WHATIFS = [
    ("noping", "no pool pre-ping", "noping", READ_PATH, 1, "info", False),
    ("gate", "admission gate: at most pool-size /api/ requests at once", "gate", READ_PATH, 1, "info", False),
    ("freeze", "gc.freeze() after start-up", "plain", READ_PATH, 1, "info", True),
    ("fused_noping", "one thread-pool hop + no pre-ping", "fused-noping", WHATIF_PATH, 1, "info", False),
    ("onequery_noping", "one hop + no pre-ping + one SELECT (ORM)", "onequery-noping", WHATIF_PATH, 1, "info", False),
    ("sync_lean", "sync route, one hop, raw psycopg, one SELECT, autocommit", "sync-lean", WHATIF_PATH, 1, "info",
     False),
    ("async_lean", "async route, raw async psycopg, one SELECT, autocommit", "async-lean", WHATIF_PATH, 1, "info",
     False),
    ("async_lean_freeze", "async lean + gc.freeze()", "async-lean", WHATIF_PATH, 1, "info", True),
    ("async_lean_freeze_quiet", "async lean + gc.freeze(), LOG_LEVEL=warning (no access line)", "async-lean",
     WHATIF_PATH, 1, "warning", True),
    ("async_lean_freeze_w2", "async lean + gc.freeze(), WEB_CONCURRENCY=2", "async-lean", WHATIF_PATH, 2, "info", True),
]


def _whatif_servers(work: Path, cluster: Cluster) -> list[Server]:
    script = str(BENCH_DIR / "whatif_auth_app.py")
    servers = []
    for key, label, variant, path, workers, log_level, freeze in WHATIFS:
        env = server_env(work, cluster, workers, log_level)
        env["PYTHONPATH"] = str(BENCH_DIR)
        if freeze:
            env["A3E_WHATIF_GC_FREEZE"] = "1"
        servers.append(Server(key, label, workers, [PYTHON, script, "--variant", variant, "--workers", str(workers)],
                              env, path=path))
    return servers


def read_figures(runs: list[dict]) -> dict:
    return {
        "rps": median([r["rps"] for r in runs]),
        "rps_min": min(r["rps"] for r in runs),
        "rps_max": max(r["rps"] for r in runs),
        "p50": median([r["latency_us"]["p50"] / 1e6 for r in runs]),
        "p90": median([r["latency_us"]["p90"] / 1e6 for r in runs]),
        "p99": median([r["latency_us"]["p99"] / 1e6 for r in runs]),
        "p99_max": max(r["latency_us"]["p99"] / 1e6 for r in runs),
        "max": max(r["latency_us"]["max"] / 1e6 for r in runs),
        "errors": sum(r["errors_total"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "n": len(runs),
        "server_cpu": median([r["server_cpu"] for r in runs]),
        "pg_cpu": median([r["pg_cpu"] for r in runs]),
        "machine_busy": median([r["machine_busy"] for r in runs if r.get("machine_busy") is not None]),
        "wrk_cpu": median([r["wrk_cpu"] for r in runs if r.get("wrk_cpu") is not None]),
        "foreign_cpu": median([r["foreign_cpu"] for r in runs if r.get("foreign_cpu") is not None]),
        "foreign_cpu_max": max((r["foreign_cpu"] for r in runs if r.get("foreign_cpu") is not None), default=None),
        "server_us": median([r["server_cpu_seconds"] / r["requests"] * 1e6 for r in runs if r["requests"]]),
        "pg_us": median([r["pg_cpu_seconds"] / r["requests"] * 1e6 for r in runs if r["requests"]]),
        "statuses": dict(sum((Counter(r.get("statuses") or {}) for r in runs), Counter())),
        "kernel_share": median([r["server_system_seconds"] / r["server_cpu_seconds"] for r in runs
                                if r.get("server_system_seconds") is not None and r["server_cpu_seconds"]]),
        # The busiest process first: with two workers, how evenly they shared the load.
        "processes_cpu": [median(values) for values in _by_position([r.get("server_processes_cpu") or [] for r in runs])],
    }


def _by_position(lists: list[list[float]]) -> list[list[float]]:
    width = max((len(values) for values in lists), default=0)
    return [[values[i] for values in lists if len(values) > i] for i in range(width)]


def grouped(store: dict) -> dict[tuple[str, str, int], dict]:
    """(server key, kind, connections) → figures."""
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for key, entry in store.items():
        for run in entry["runs"]:
            groups.setdefault((key, run.get("kind", "login"), run["connections"]), []).append(run)
    return {group: read_figures(runs) for group, runs in groups.items()}


def _read_target_met(reads: dict) -> bool:
    """Met when some server configuration meets both figures with every connection count and both
    kinds of credentials, without errors."""
    figures = grouped(reads)
    for key in reads:
        mine = [f for (k, _, _), f in figures.items() if k == key]
        if mine and all(f["rps"] >= READ_TARGET_RPS and f["p99"] <= READ_TARGET_P99_S and not f["errors"]
                        for f in mine):
            return True
    return False
