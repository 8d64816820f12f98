"""What every endpoint shares: the error envelope with a request id, rate limits, and the JWT secret rule."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.api_server import start_api


@pytest.fixture(scope="module")
def strict_api(prefect_stack, tmp_path_factory):
    """A second API server whose overall budget is 5 requests a minute per caller."""
    server, stop = start_api(prefect_stack.env, tmp_path_factory.mktemp("strict-api"), {"MA_RATE_LIMIT": "5"})
    yield server
    stop()


def test_unknown_paths_and_bad_bodies_use_the_documented_envelope(api_server):
    with api_server.client() as c:
        missing = c.get("/no/such/thing")
        invalid = c.post("/auth/token", json={"username": 7})
        echoed = c.get("/health", headers={"X-Request-ID": "trace-from-caller-1"})
    assert missing.status_code == 404
    body = missing.json()["error"]
    assert body["code"] == "NOT_FOUND" and body["request_id"].startswith("req-") and body["timestamp"]
    assert missing.headers["X-Request-ID"] == body["request_id"]
    assert invalid.status_code == 400
    fields = {e["field"] for e in invalid.json()["error"]["details"]["validation_errors"]}
    assert fields == {"username", "password"}
    assert echoed.headers["X-Request-ID"] == "trace-from-caller-1"


def test_schema_orchestrator_paths_answer_with_trace_ids(api_server):
    with api_server.client() as c:
        r = c.get("/api/v1/no-such-resource")
    assert r.status_code in (401, 404)
    error = r.json()["error"]
    assert error["traceId"] == r.headers["X-Request-ID"] and isinstance(error["details"], list)


def test_over_budget_callers_get_429_with_retry_after(strict_api):
    with strict_api.client() as c:
        answers = [c.post("/auth/token", data={"username": "admin", "password": "wrong"}) for _ in range(6)]
    assert [a.status_code for a in answers[:5]] == [401] * 5
    assert [a.headers["X-RateLimit-Remaining"] for a in answers[:5]] == ["4", "3", "2", "1", "0"]
    refused = answers[5]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Limit"] == "5" and refused.headers["X-RateLimit-Remaining"] == "0"


def test_the_server_refuses_to_start_with_auth_and_the_default_secret_in_production(tmp_path):
    cli = Path(sys.executable).parent / "migration-assistant"
    env = {k: v for k, v in os.environ.items() if k not in ("MA_JWT_SECRET", "SECRET_KEY", "MA_ENV")}
    env.update({"MA_ENV": "production", "MA_STORE_URL": f"sqlite:///{tmp_path / 'api.db'}"})
    done = subprocess.run([str(cli), "serve", "--auth-enabled", "--port", "1"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert "jwt secret" in done.stderr.lower() or "jwt-secret" in done.stderr.lower(), done.stderr


def test_health_answers_without_credentials(api_server):
    r = httpx.get(f"{api_server.url}/health")
    assert r.status_code == 200 and r.json()["status"] == "healthy"
