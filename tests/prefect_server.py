"""A real Prefect server and process worker for the whole test session (deployment and API tests).

The server runs on a free loopback port with its own PREFECT_HOME and analytics off; the
worker polls every 2 s. Both are stopped at the end: the worker needs a second SIGTERM.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class PrefectStack:
    api_url: str
    env: dict
    home: Path
    workers: list

    def prefect(self, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], env=self.env, cwd=PROJECT,
                              capture_output=True, text=True, timeout=timeout)

    def start_worker(self, name: str, queue: str = "default", limit: int | None = None) -> subprocess.Popen:
        log = open(self.home / f"worker-{name}.log", "w")
        args = ["worker", "start", "--pool", "migrations", "--work-queue", queue, "--name", name]
        proc = subprocess.Popen([str(BIN / "prefect"), *args, *(["--limit", str(limit)] if limit else [])],
                                env=self.env, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(proc)
        return proc

    def stop_worker(self, proc: subprocess.Popen) -> None:
        for _ in range(2):  # the first SIGTERM only asks the worker to drain
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    continue
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc in self.workers:
            self.workers.remove(proc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"prefect server did not answer on {url} within {timeout} s:\n{log.read_text()[-3000:]}")


def start_stack(home: Path):
    """Start server and one worker, deploy prefect.yaml; returns (stack, stop function)."""
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_WORKER_QUERY_SECONDS": "2",
           "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
           "MA_PROJECT_DIR": str(PROJECT), "PREFECT_LOGGING_LEVEL": "INFO"}
    home.mkdir(parents=True, exist_ok=True)
    log = home / "server.log"
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, cwd=PROJECT, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    stack = PrefectStack(api_url, env, home, [])

    def stop() -> None:
        for w in list(stack.workers):
            stack.stop_worker(w)
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
    try:
        _wait_healthy(api_url, server, log)
        deployed = subprocess.run([sys.executable, "-m", "deployments.setup"], env=env, cwd=PROJECT,
                                  capture_output=True, text=True, timeout=300)
        if deployed.returncode != 0:
            raise RuntimeError(f"make deploy failed:\n{deployed.stdout[-2000:]}\n{deployed.stderr[-3000:]}")
        stack.start_worker("worker-1")
    except BaseException:
        stop()
        raise
    return stack, stop
