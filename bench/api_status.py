"""`make bench-api`: GET /migrations/{id}/status under load while that migration runs.

Starts a Prefect server and worker, the API (uvicorn, auth on), copies bench_rows PostgreSQL → PostgreSQL
through the API, and while the run is in progress a separate process hammers its status for --seconds.
Targets (issue 4): at least 300 requests/s with p99 under 100 ms on this machine.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import config as C
from bench.sources import build_postgres, reset_pg_destination
from tests.api_server import start_api
from tests.prefect_server import start_stack

TARGET_RPS, TARGET_P99_MS = 300, 100


def _pg(database: str) -> dict:
    return {"type": "postgresql", "host": C.PG_HOST, "port": C.PG_PORT, "username": C.PG_USER, "database": database}


def _start_migration(api, headers: dict) -> str:
    config = {"name": "bench-api status load", "source": _pg(C.SRC_DB), "destination": _pg(C.DST_DB),
              "tables": [C.TABLE]}
    with httpx.Client(base_url=api.url, headers=headers, timeout=60) as client:
        created = client.post("/migrations/", json=config)
        created.raise_for_status()
        session = created.json()["session_id"]
        client.post(f"/migrations/{session}/start", json={}).raise_for_status()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            status = client.get(f"/migrations/{session}/status").json()["status"]
            if status == "running":
                return session
            if status in ("completed", "failed", "cancelled"):
                raise RuntimeError(f"migration ended ({status}) before the load started; use more --rows")
            time.sleep(0.5)
    raise RuntimeError("migration did not start within 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3_000_000, help="rows in the migrating table")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    build_postgres(args.rows, rebuild=False)
    reset_pg_destination()
    home = Path(tempfile.mkdtemp(prefix="ma-bench-api-"))
    stack, stop_stack = start_stack(home / "prefect")
    try:
        api, stop_api = start_api(stack.env, home / "api", {"MA_RATE_LIMIT": "1000000"})
        try:
            headers = {"Authorization": f"Bearer {api.token('admin', 'admin123')}"}
            session = _start_migration(api, headers)
            print(f"migration {session} running; loading GET /migrations/{session}/status for {args.seconds:.0f} s "
                  f"from {args.concurrency} connections", flush=True)
            done = subprocess.run([sys.executable, "-m", "bench.api_load", f"{api.url}/migrations/{session}/status",
                                   "--header", f"Authorization: {headers['Authorization']}",
                                   "--seconds", str(args.seconds), "--concurrency", str(args.concurrency)],
                                  capture_output=True, text=True, check=True)
            figures = json.loads(done.stdout)
            with httpx.Client(base_url=api.url, headers=headers) as client:
                figures["run_status_after"] = client.get(f"/migrations/{session}/status").json()["status"]
        finally:
            stop_api()
    finally:
        stop_stack()
    figures.update({"target_rps": TARGET_RPS, "target_p99_ms": TARGET_P99_MS,
                    "rps_ratio": round(figures["rps"] / TARGET_RPS, 2),
                    "p99_ratio": round(figures["p99_ms"] / TARGET_P99_MS, 2)})
    C.RESULTS.mkdir(parents=True, exist_ok=True)
    (C.RESULTS / "api_status.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    print(f"status endpoint: {figures['rps']} req/s ({figures['rps_ratio']}x the 300 target), "
          f"p99 {figures['p99_ms']} ms ({figures['p99_ratio']}x the 100 ms ceiling); "
          f"status codes {figures['status_codes']}")


if __name__ == "__main__":
    main()
