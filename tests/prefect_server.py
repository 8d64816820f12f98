"""A real Prefect server and process worker for the whole test session (deployment and API tests).

The server runs on a free loopback port with its own PREFECT_HOME and analytics off; the
worker polls every 2 s. Both are stopped at the end: the worker needs a second SIGTERM.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from migration_assistant.local_prefect import BIN, PROJECT, LocalPrefectServer


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


def start_stack(home: Path):
    """Start server and one worker, deploy prefect.yaml; returns (stack, stop function)."""
    server = LocalPrefectServer.start(home, {"PREFECT_WORKER_QUERY_SECONDS": "2", "MA_PROJECT_DIR": str(PROJECT),
                                             "PREFECT_LOGGING_LEVEL": "INFO"})
    stack = PrefectStack(server.api_url, server.env, home, [])

    def stop() -> None:
        for w in list(stack.workers):
            stack.stop_worker(w)
        server.stop()
    try:
        deployed = subprocess.run([sys.executable, "-m", "deployments.setup"], env=server.env, cwd=PROJECT,
                                  capture_output=True, text=True, timeout=300)
        if deployed.returncode != 0:
            raise RuntimeError(f"make deploy failed:\n{deployed.stdout[-2000:]}\n{deployed.stderr[-3000:]}")
        stack.start_worker("worker-1")
    except BaseException:
        stop()
        raise
    return stack, stop
