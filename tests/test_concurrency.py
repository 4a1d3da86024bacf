"""Many more requests at once than database connections: the process neither stalls nor fails.

Before admission control, 64 concurrent authenticated reads on one worker left every thread
waiting for a connection held by a request that was waiting for a thread: 0 requests a second.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from a3e.core.database import MAX_CONNECTIONS_PER_PROCESS
from tests.conftest import DEFAULT_PASSWORD


@pytest.mark.slow
def test_concurrent_authenticated_reads_beyond_the_pool_all_succeed(postgres, run_server):
    name = postgres.create_database()
    server = None
    try:
        server = run_server(
            {
                "DATABASE_URL": postgres.url(name),
                "A3E_ARGON2_TIME_COST": "1",
                "A3E_ARGON2_MEMORY_KIB": "1024",
                "A3E_ARGON2_PARALLELISM": "1",
            }
        )
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/health/ready").status_code != 200:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        email = "reader@example.edu"
        assert httpx.post(
            f"{server.url}/api/v1/auth/register", json={"email": email, "password": DEFAULT_PASSWORD, "name": "R"}
        ).status_code == 201
        token = httpx.post(f"{server.url}/api/v1/auth/login", json={"email": email, "password": DEFAULT_PASSWORD}).json()[
            "access_token"
        ]
        headers = {"Authorization": f"Bearer {token}"}
        workspace = httpx.post(f"{server.url}/api/v1/workspaces", json={"name": "W"}, headers=headers).json()
        url = f"{server.url}/api/v1/workspaces/{workspace['id']}"

        concurrency = 4 * MAX_CONNECTIONS_PER_PROCESS
        with httpx.Client(limits=httpx.Limits(max_connections=concurrency), timeout=30) as client:

            def read(_: int) -> int:
                return client.get(url, headers=headers).status_code

            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                statuses = list(pool.map(read, range(10 * concurrency)))
            elapsed = time.monotonic() - started
        assert statuses == [200] * (10 * concurrency)
        assert elapsed < 30, f"{len(statuses)} reads took {elapsed:.1f}s"
    finally:
        if server is not None:
            server.stop()
        postgres.drop_database(name)
