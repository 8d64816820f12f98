"""The REST API served by a real uvicorn process on loopback, talking to the session's Prefect server."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from migration_assistant.local_prefect import PROJECT, free_port


@dataclass
class ApiServer:
    url: str
    log: Path
    jwt_secret: str

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def token(self, username: str, password: str) -> str:
        with self.client() as c:
            r = c.post("/auth/token", data={"username": username, "password": password})
            assert r.status_code == 200, r.text
            return r.json()["access_token"]

    def as_user(self, username: str, password: str, **headers: str) -> httpx.Client:
        """A client authenticated as `username` (bearer token)."""
        return self.client(headers={"Authorization": f"Bearer {self.token(username, password)}", **headers})

    def admin(self) -> httpx.Client:
        return self.as_user("admin", "admin123")


def start_api(prefect_env: dict, home: Path, extra_env: dict | None = None):
    """Start `uvicorn api_shim.app:create_app`; returns (server, stop)."""
    port = free_port()
    secret = secrets.token_urlsafe(32)
    env = {**prefect_env, "MA_ENV": "development", "MA_AUTH_ENABLED": "true", "MA_JWT_SECRET": secret,
           "MA_STORE_URL": f"sqlite:///{home / 'api.db'}", **(extra_env or {})}
    home.mkdir(parents=True, exist_ok=True)
    log = home / f"api-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "api_shim.app:create_app",
                             "--host", "127.0.0.1", "--port", str(port)],
                            env=env, cwd=PROJECT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def stop() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"API server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return ApiServer(url, log, secret), stop
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop()
    raise RuntimeError(f"API server did not answer on {url}:\n{log.read_text()[-3000:]}")
