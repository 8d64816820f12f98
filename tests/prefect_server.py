"""A real Prefect server per test process, and a process worker for the deployment and API tests.

The server runs on a free loopback port with its own PREFECT_HOME and analytics off; flows the
tests call report to it, and the stack (prefect.yaml deployed, a worker polling every 2 s) uses it
when a test first needs one. Both are stopped at the end: the worker needs a second SIGTERM.
"""
from __future__ import annotations

import os
import signal
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
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


STACK_ENV = {"PREFECT_WORKER_QUERY_SECONDS": "2", "MA_PROJECT_DIR": str(PROJECT), "PREFECT_LOGGING_LEVEL": "INFO"}


def launch_server() -> LocalPrefectServer:
    """Start a server in a temporary home without waiting for it; this process's Prefect clients and
    the subprocesses it starts use it."""
    server = LocalPrefectServer.launch(Path(tempfile.mkdtemp(prefix="ma-test-prefect-")), STACK_ENV)
    os.environ["PREFECT_API_URL"] = server.api_url  # read where Prefect is imported after this
    return server


def discard_server(server: LocalPrefectServer) -> None:
    server.stop()
    shutil.rmtree(server.home, ignore_errors=True)


@contextmanager
def reporting_to(server: LocalPrefectServer):
    """Flows called in this process report to `server`, in every thread, as under Prefect's
    prefect_test_harness (whose private global-settings switch this borrows); logs and events are
    sent before it ends."""
    from prefect.context import _temporary_global_settings_context, get_settings_context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings
    server.wait_healthy()
    with temporary_settings({PREFECT_API_URL: server.api_url}), \
            _temporary_global_settings_context(get_settings_context()):
        yield
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)


def start_stack(home: Path, server: LocalPrefectServer | None = None):
    """Deploy prefect.yaml and start one worker on `server` (a server of its own in `home` if None);
    returns (stack, stop function)."""
    owned = server is None
    if owned:
        server = LocalPrefectServer.start(home, STACK_ENV)
    home.mkdir(parents=True, exist_ok=True)
    stack = PrefectStack(server.api_url, server.env, home, [])

    def stop() -> None:
        for w in list(stack.workers):
            stack.stop_worker(w)
        if owned:
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
