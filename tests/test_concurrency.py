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


@pytest.mark.slow
def test_slow_uploads_in_flight_do_not_hold_back_other_requests(run_server):
    """More uploads trickling in than the process admits at once: reads still answer at once,
    and the uploads all land once their bodies are complete."""
    import socket
    import uuid

    server = run_server({"A3E_ARGON2_TIME_COST": "1", "A3E_ARGON2_MEMORY_KIB": "1024", "A3E_ARGON2_PARALLELISM": "1"})
    deadline = time.monotonic() + 30
    while httpx.get(f"{server.url}/health/ready").status_code != 200:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    email = "uploader@example.edu"
    httpx.post(f"{server.url}/api/v1/auth/register", json={"email": email, "password": DEFAULT_PASSWORD, "name": "U"})
    token = httpx.post(f"{server.url}/api/v1/auth/login", json={"email": email, "password": DEFAULT_PASSWORD}).json()[
        "access_token"
    ]
    headers = {"Authorization": f"Bearer {token}"}
    workspace = httpx.post(f"{server.url}/api/v1/workspaces", json={"name": "W"}, headers=headers).json()
    path = f"/api/v1/workspaces/{workspace['id']}/documents"

    def start_upload(n: int) -> tuple[socket.socket, bytes]:
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes-{n}.txt\"\r\n"
                "Content-Type: text/plain\r\n\r\n").encode()
        content = f"Minutes of meeting {n}: the senate approved the assessment plan.\n".encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        body = head + content + tail
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(
            (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
             f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            + body[: len(head)]
        )
        return sock, body[len(head):]

    uploads = [start_upload(n) for n in range(2 * MAX_CONNECTIONS_PER_PROCESS)]
    try:
        time.sleep(0.5)  # every upload is in, waiting for the rest of its body
        started = time.monotonic()
        read = httpx.get(f"{server.url}/api/v1/workspaces/{workspace['id']}", headers=headers, timeout=10)
        assert read.status_code == 200
        assert time.monotonic() - started < 2.0, "a read waited behind uploads that were still streaming"
        for sock, rest in uploads:
            sock.sendall(rest)
        statuses = []
        for sock, _ in uploads:
            sock.settimeout(30)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(65536)
            statuses.append(int(answer.split(b" ", 2)[1]))
        assert statuses == [201] * len(uploads)
    finally:
        for sock, _ in uploads:
            sock.close()
    listed = httpx.get(f"{server.url}{path}", headers=headers).json()
    assert listed["total"] == len(uploads)
