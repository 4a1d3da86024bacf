"""Shared fixtures: a hermetic environment, SQLite and a real throwaway PostgreSQL, and a way to
run the real `a3e serve` process on a free loopback port."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import AliasChoices

from a3e.core.settings import Settings

# ---------------------------------------------------------------------------------------------
# A hermetic environment: no variable from the machine or a .env file leaks into a test.


def settings_env_vars() -> set[str]:
    names = set()
    for field in Settings.model_fields.values():
        if isinstance(field.validation_alias, AliasChoices):
            names.update(str(choice) for choice in field.validation_alias.choices)
    return names


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in settings_env_vars():
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.chdir(tmp_path)  # so that no .env of the developer's is read


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# PostgreSQL: a throwaway cluster as an unprivileged user (the server refuses to run as root).


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@dataclass
class PostgresCluster:
    host: str
    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = f"a3e_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host={self.host} port={self.port} user={self.user} dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(f"host={self.host} port={self.port} user={self.user} dbname=postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        message = "PostgreSQL binaries (initdb, pg_ctl) not found; scripts/test installs them when run as root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    run_as: dict = {}
    base = Path(tempfile.mkdtemp(prefix="a3e-pg-"))
    if os.geteuid() == 0:
        import pwd

        for candidate in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(candidate)
                break
            except KeyError:
                continue
        else:  # pragma: no cover
            pytest.fail("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")
        os.chown(base, entry.pw_uid, entry.pw_gid)
        os.chmod(base, 0o700)
        run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    data, sockets, log = base / "data", base / "sockets", base / "server.log"
    port = free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    subprocess.run(
        [initdb, "-D", str(data), "-U", "a3e", "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True, env=env, cwd=base, **run_as,
    )
    (sockets).mkdir()
    if run_as:
        os.chown(sockets, run_as["user"], run_as["group"])
    options = (
        f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    subprocess.run(
        [pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"],
        check=True, capture_output=True, env=env, cwd=base, **run_as,
    )
    try:
        yield PostgresCluster(host="127.0.0.1", port=port, user="a3e")
    finally:
        subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, env=env, cwd=base, **run_as)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind; tests using it run once per kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    name = cluster.create_database()
    try:
        yield cluster.url(name)
    finally:
        cluster.drop_database(name)


# ---------------------------------------------------------------------------------------------
# Settings and apps.


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_settings(data_dir: Path):
    def make(**values) -> Settings:
        values.setdefault("data_dir", data_dir)
        values.setdefault("secret_key", "s" * 8 + uuid.uuid4().hex + "k" * 8)
        values.setdefault("jwt_secret_key", "j" * 8 + uuid.uuid4().hex + "w" * 8)
        return Settings(_env_file=None, **values)

    return make


def wait_ready(client, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"not ready after {timeout}s: {client.get('/health').text}")


# ---------------------------------------------------------------------------------------------
# The real server, as an operator runs it.


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def a3e_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "a3e", *args]


@pytest.fixture
def run_server(tmp_path: Path):
    """Start `a3e serve` with the given environment; waits until /health/live answers."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str], *, wait_live: bool = True, port: int | None = None) -> ServerProcess:
        port = port or free_port()
        base_env = {k: v for k, v in os.environ.items() if k not in settings_env_vars()}
        full_env = {**base_env, "A3E_DATA_DIR": str(tmp_path / "server-data"), **env, "PORT": str(port)}
        log_path = tmp_path / f"server-{port}.log"
        handle = open(log_path, "wb")
        process = subprocess.Popen(
            a3e_command("serve", "--host", "127.0.0.1"), env=full_env, stdout=handle, stderr=subprocess.STDOUT, cwd=tmp_path
        )
        server = ServerProcess(process, port, log_path)
        started.append(server)
        if wait_live:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise AssertionError(f"server exited with {process.returncode}:\n{server.log()}")
                try:
                    if httpx.get(f"{server.url}/health/live", timeout=1).status_code == 200:
                        return server
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            raise AssertionError(f"server did not come up:\n{server.log()}")
        return server

    yield start
    for server in started:
        server.stop()


# ---------------------------------------------------------------------------------------------
# A TCP forwarder we can switch off and on: "the database server goes away and comes back".


class TcpForwarder:
    def __init__(self, target_port: int, listen_port: int | None = None) -> None:
        import threading

        self.target_port = target_port
        self.port = listen_port or free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        if self._listener is not None:
            try:  # wakes the accept() blocked in the other thread; close() alone does not on Linux
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass
            self._connections.clear()


# ---------------------------------------------------------------------------------------------
# The API with accounts: a ready client on each database, and people to act with.

CHEAP_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "argon2_parallelism": 1}
DEFAULT_PASSWORD = "correct horse battery staple"


@pytest.fixture
def api(make_settings, database_url):
    """A TestClient on a fresh, migrated database (SQLite and PostgreSQL)."""
    from fastapi.testclient import TestClient

    from a3e.app import create_app

    app = create_app(make_settings(database_url=database_url, **CHEAP_ARGON2))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


@dataclass
class Person:
    id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@pytest.fixture
def make_person(api):
    """Register and log in a new person: `alice = make_person()`."""

    def make(email: str | None = None, password: str = DEFAULT_PASSWORD, name: str = "Test Person") -> Person:
        email = email or f"person-{uuid.uuid4().hex[:10]}@example.edu"
        registered = api.post("/api/v1/auth/register", json={"email": email, "password": password, "name": name})
        assert registered.status_code in (201, 202), registered.text
        tokens = api.post("/api/v1/auth/login", json={"email": email, "password": password})
        assert tokens.status_code == 200, tokens.text
        body = tokens.json()
        # Registration says nothing about the account (it must not reveal whether one existed).
        me = api.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
        assert me.status_code == 200, me.text
        return Person(me.json()["id"], email, password, body["access_token"], body["refresh_token"])

    return make


@pytest.fixture
def make_workspace(api):
    """Create a workspace owned by `person`: returns its JSON."""

    def make(person: Person, name: str = "Example College") -> dict:
        response = api.post("/api/v1/workspaces", json={"name": name}, headers=person.headers)
        assert response.status_code == 201, response.text
        return response.json()

    return make
