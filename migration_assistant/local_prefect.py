"""A throwaway `prefect server start` on a free loopback port: for the tests' real stack and the benchmark;
and Prefect's own temporary server started ahead of a flow call, for the demo.

    server = LocalPrefectServer.start(Path(".state/some-home"))
    os.environ["PREFECT_API_URL"] = server.api_url
    ...
    server.stop()
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Callable

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalPrefectServer:
    api_url: str
    env: dict  # the environment a client of this server needs (PREFECT_HOME, PREFECT_API_URL, no analytics)
    home: Path
    process: subprocess.Popen

    @classmethod
    def start(cls, home: Path, extra_env: dict | None = None, timeout: float = 180) -> "LocalPrefectServer":
        server = cls.launch(home, extra_env)
        server.wait_healthy(timeout)
        return server

    @classmethod
    def launch(cls, home: Path, extra_env: dict | None = None) -> "LocalPrefectServer":
        """Start the server without waiting for it (wait_healthy does); its database starts as a copy
        of an empty, migrated one unless the environment names another database."""
        port = free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url,
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
               "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port), **(extra_env or {})}
        home.mkdir(parents=True, exist_ok=True)
        if not any(name in env for name in DATABASE_URL_VARIABLES) and not (home / "prefect.db").exists():
            shutil.copyfile(migrated_database(), home / "prefect.db")
        log = home / "server.log"
        proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, cwd=PROJECT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        return cls(api_url, env, home, proc)

    def wait_healthy(self, timeout: float = 180) -> None:
        """Return once the server answers; stop it and raise (with its log's end) if it does not."""
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        log = self.home / "server.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self.process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"prefect server did not answer on {self.api_url} within {timeout} s:\n"
                           f"{log.read_text()[-3000:]}")

    def peak_rss_mb(self) -> float:
        """The largest resident size each process of the server (the CLI and its uvicorn) has had, summed."""
        import psutil  # dev and bench extras
        try:
            procs = [psutil.Process(self.process.pid)]
            procs += procs[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return 0.0
        return round(sum(_peak_kib(p.pid) for p in procs) / 1024, 1)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


DATABASE_URL_VARIABLES = ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")


def migrated_database() -> Path:
    """An empty Prefect database as a new server leaves it (migrated, block types registered), made
    once per machine and Prefect version under .state/: a server that starts from a copy skips that
    work, about 12 of its 27 CPU-seconds of start-up on a small machine."""
    template = PROJECT / ".state" / f"prefect-{version('prefect')}-empty.db"
    template.parent.mkdir(parents=True, exist_ok=True)
    with open(template.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # test processes starting together make it once
        if not template.exists():
            draft = template.with_suffix(".draft")
            draft.unlink(missing_ok=True)
            home = Path(tempfile.mkdtemp(prefix="prefect-template-"))
            LocalPrefectServer.start(home, {DATABASE_URL_VARIABLES[0]: f"sqlite+aiosqlite:///{draft}"}).stop()
            with closing(sqlite3.connect(draft)) as db:  # everything in the one file
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            os.replace(draft, template)
            shutil.rmtree(home, ignore_errors=True)
    return template


def _peak_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def start_temporary_server_early() -> Callable[[], None]:
    """Start the temporary API server Prefect would start at the first flow call (10-15 s on a
    small machine) in a background thread now, so other work overlaps it; returns a function that
    waits until it answers. Without a temporary server to start (PREFECT_API_URL set, or
    ephemeral mode off) the returned function does nothing."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED
    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return lambda: None
    from prefect.server.api.server import SubprocessASGIServer  # the one Prefect's client starts and reuses
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefect-server-start")
    started = pool.submit(SubprocessASGIServer().start)
    pool.shutdown(wait=False)
    return started.result
