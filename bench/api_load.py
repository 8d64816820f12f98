"""A separate load process: GET one URL from N keep-alive connections for S seconds; prints JSON figures.

    python -m bench.api_load URL --header "Authorization: Bearer ..." --seconds 15 --concurrency 16
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx


async def _worker(client: httpx.AsyncClient, url: str, until: float, latencies: list[float], codes: dict) -> None:
    while time.perf_counter() < until:
        started = time.perf_counter()
        response = await client.get(url)
        latencies.append(time.perf_counter() - started)
        codes[response.status_code] = codes.get(response.status_code, 0) + 1


async def load(url: str, headers: dict, seconds: float, concurrency: int) -> dict:
    latencies: list[float] = []
    codes: dict[int, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:
        await client.get(url)  # connect and warm up
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(*(_worker(client, url, until, latencies, codes) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)  # noqa: E731
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
