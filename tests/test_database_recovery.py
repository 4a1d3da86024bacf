"""The database down at start: the process keeps serving, readiness says why, and readiness
turns 200 by itself when the database comes back — no restart."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text

from a3e.app import create_app
from a3e.core.database import SessionDep
from tests.conftest import PostgresCluster, TcpForwarder, wait_ready


def poll_until_ready(client: TestClient, timeout: float = 30.0) -> float:
    started = time.monotonic()
    wait_ready(client, timeout)
    return time.monotonic() - started


def test_postgres_down_at_start_then_back(make_settings, postgres: PostgresCluster):
    name = postgres.create_database()
    forwarder = TcpForwarder(postgres.port)  # not started: connections are refused
    url = f"postgresql+psycopg://{postgres.user}@127.0.0.1:{forwarder.port}/{name}"
    app = create_app(make_settings(database_url=url, db_connect_timeout=1))
    try:
        with TestClient(app) as client:
            assert client.get("/health/live").status_code == 200
            ready = client.get("/health/ready")
            assert ready.status_code == 503
            error = ready.json()["error"]
            assert error["code"] == "not_ready"
            assert "database" in error["message"]
            assert "refused" in error["message"].lower() or "connect" in error["message"].lower()
            health = client.get("/health")
            assert health.status_code == 503
            assert health.json()["checks"]["database"]["status"] == "fail"
            assert health.json()["checks"]["migrations"]["status"] == "unknown"

            forwarder.start()
            poll_until_ready(client)
            body = client.get("/health").json()
            assert body["status"] == "ok"
            assert body["checks"]["migrations"]["status"] == "ok"  # the monitor migrated once it could

            # Down again while running: readiness follows, and comes back again.
            forwarder.stop()
            time.sleep(1.1)  # past the readiness cache
            assert client.get("/health/ready").status_code == 503
            forwarder.start()
            poll_until_ready(client)
    finally:
        forwarder.stop()
        postgres.drop_database(name)


def test_postgres_database_missing_then_created(make_settings, postgres: PostgresCluster):
    name = "a3e_created_later"
    postgres.drop_database(name)
    app = create_app(make_settings(database_url=postgres.url(name), db_connect_timeout=1))
    try:
        with TestClient(app) as client:
            ready = client.get("/health/ready")
            assert ready.status_code == 503
            assert name in ready.json()["error"]["message"]
            import psycopg

            with psycopg.connect(
                f"host={postgres.host} port={postgres.port} user={postgres.user} dbname=postgres", autocommit=True
            ) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            poll_until_ready(client)
    finally:
        postgres.drop_database(name)


def test_sqlite_unavailable_at_start_then_back(make_settings, tmp_path: Path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the database directory should be")
    url = f"sqlite:///{blocker / 'db' / 'a3e.db'}"
    app = create_app(make_settings(database_url=url))
    with TestClient(app) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert "database" in ready.json()["error"]["message"]
        blocker.unlink()
        (blocker / "db").mkdir(parents=True)
        poll_until_ready(client)


def test_production_does_not_migrate_and_says_so(make_settings, database_url):
    app = create_app(
        make_settings(
            database_url=database_url,
            environment_name="production",
            allow_sqlite_in_production=True,
            cors_origins=["https://app.example.edu"],
        )
    )
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and app.state.database.startup.status == "unknown":
            time.sleep(0.05)
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert "migrations pending" in ready.json()["error"]["message"]
        assert ready.json()["error"]["details"]["checks"]["migrations"]["current"] is None

        from a3e.core import migrations

        migrations.upgrade(app.state.database.engine)  # what `a3e migrate` does before the deploy
        poll_until_ready(client)


def test_a_request_needing_the_database_while_it_is_down_is_503(make_settings, postgres: PostgresCluster):
    forwarder = TcpForwarder(postgres.port)
    url = f"postgresql+psycopg://{postgres.user}@127.0.0.1:{forwarder.port}/postgres"
    app = create_app(make_settings(database_url=url, db_connect_timeout=1))

    @app.get("/api/v1/test/needs-db")
    def needs_db(session: SessionDep) -> dict:
        return {"one": session.execute(text("SELECT 1")).scalar_one()}

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/v1/test/needs-db")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_unavailable"
        assert response.headers["retry-after"]
        forwarder.start()
        try:
            assert client.get("/api/v1/test/needs-db").json() == {"one": 1}
        finally:
            forwarder.stop()


def test_the_workspace_access_check_answers_503_while_postgres_is_down_and_recovers(
    make_settings, postgres: PostgresCluster
):
    """The access check runs on its own pool of async connections (Database.reads): a database
    that goes away under it is a 503 like any other query, and pooled connections cut meanwhile
    are replaced without anyone noticing once it is back."""
    name = postgres.create_database()
    forwarder = TcpForwarder(postgres.port)
    forwarder.start()
    url = f"postgresql+psycopg://{postgres.user}@127.0.0.1:{forwarder.port}/{name}"
    app = create_app(make_settings(database_url=url, db_connect_timeout=1))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            poll_until_ready(client)
            email, password = "liaison@example.edu", "a long enough passphrase 42"
            client.post("/api/v1/auth/register", json={"email": email, "password": password, "name": "Liaison"})
            token = client.post("/api/v1/auth/login", json={"email": email, "password": password}).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            workspace = client.post("/api/v1/workspaces", json={"name": "Example College"}, headers=headers).json()
            path = f"/api/v1/workspaces/{workspace['id']}"
            assert client.get(path, headers=headers).status_code == 200

            forwarder.stop()  # every connection, pooled ones included, is cut
            down = client.get(path, headers=headers)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "database_unavailable"

            forwarder.start()
            deadline = time.monotonic() + 15
            while (back := client.get(path, headers=headers)).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert back.status_code == 200, back.text
            assert back.json()["name"] == "Example College"
    finally:
        forwarder.stop()
        postgres.drop_database(name)
