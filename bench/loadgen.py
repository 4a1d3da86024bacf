"""A small HTTP/1.1 keep-alive load generator, used when wrk cannot be had.

    python bench/loadgen.py --url http://127.0.0.1:PORT/path --connections 32 --duration 10

Each connection sends one GET at a time and waits for the whole answer (as wrk does). Prints
one line `WRKJSON {...}` in the shape of bench/wrk_report.lua. Being Python, it needs more CPU
per request than the servers it measures, so pin it to its own core; its figures are a floor.
Only loopback addresses are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


class Stats:
    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.bytes = 0
        self.errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
            break
    if length:
        await reader.readexactly(length)
    return status, len(head) + length


async def _connection(host: str, port: int, request: bytes, stop_at: float, stats: Stats) -> None:
    while time.perf_counter() < stop_at:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        except (OSError, asyncio.TimeoutError):
            stats.errors["connect"] += 1
            await asyncio.sleep(0.01)
            continue
        try:
            while True:
                started = time.perf_counter_ns()
                if started / 1e9 >= stop_at:
                    return
                writer.write(request)
                try:
                    status, size = await asyncio.wait_for(_read_response(reader), 5)
                except asyncio.TimeoutError:
                    stats.errors["timeout"] += 1
                    break
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    stats.errors["read"] += 1
                    break
                stats.latencies_ns.append(time.perf_counter_ns() - started)
                stats.bytes += size
                if not 200 <= status < 400:
                    stats.errors["status"] += 1
        finally:
            writer.close()


def _percentile(sorted_values: list[int], p: float) -> int:
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def run(url: str, connections: int, duration: float) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loadgen only targets loopback addresses")
    path = parts.path or "/"
    request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
    stats = Stats()
    started = time.perf_counter()
    stop_at = started + duration
    await asyncio.gather(*(_connection(host, port, request, stop_at, stats) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    values = sorted(stats.latencies_ns)
    return {
        "requests": len(values),
        "duration_us": int(elapsed * 1e6),
        "bytes": stats.bytes,
        "errors": stats.errors,
        "latency_us": {
            "p50": _percentile(values, 50) // 1000,
            "p90": _percentile(values, 90) // 1000,
            "p99": _percentile(values, 99) // 1000,
            "max": (values[-1] if values else 0) // 1000,
            "mean": (sum(values) / len(values) / 1000) if values else 0.0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    if not 0 < args.duration <= 600:
        raise SystemExit("--duration must be between 0 and 600 seconds")
    coroutine = run(args.url, args.connections, args.duration)
    result = uvloop.run(coroutine) if uvloop is not None else asyncio.run(coroutine)
    print("WRKJSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
