"""A separate load process: GET one URL over N keep-alive connections for S seconds; prints JSON figures.

    python -m bench.api_load URL --header "Authorization: Bearer ..." --seconds 15 --concurrency 16

It speaks just enough HTTP/1.1 on asyncio streams (like wrk) so that the load generator is not what limits
the measurement on a 2-core machine; a Python HTTP client library costs more CPU per request than the API.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit


async def _connection(host: str, port: int, request: bytes, until: float, latencies: list[float],
                      codes: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            code = int(status_line.split()[1])
            codes[code] = codes.get(code, 0) + 1
    finally:
        writer.close()


async def load(url: str, headers: dict[str, str], seconds: float, concurrency: int) -> dict:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", *(f"{k}: {v}" for k, v in headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    latencies: list[float] = []
    codes: dict[int, int] = {}
    await _connection(parts.hostname, parts.port, request, time.perf_counter() + 0.5, [], {})  # warm up
    started = time.perf_counter()
    await asyncio.gather(*(_connection(parts.hostname, parts.port, request, started + seconds, latencies, codes)
                           for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pick(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)
    return {"requests": len(latencies), "seconds": round(elapsed, 2), "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99), "max_ms": pick(1.0),
            "status_codes": {str(k): v for k, v in sorted(codes.items())}, "concurrency": concurrency}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    print(json.dumps(asyncio.run(load(args.url, headers, args.seconds, args.concurrency))))


if __name__ == "__main__":
    main()
