"""Migration sessions over REST, against a real uvicorn, Prefect server + worker, MariaDB, PostgreSQL and chDB.

The documented "Basic API Usage" loop runs as written, adapted only in host, credentials and the config.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
import uuid

import psycopg
import pymysql
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from connectors.endpoint import Endpoint
from tests.helpers import open_url

ROWS = 300
FINAL = ("completed", "failed", "cancelled")
pytestmark = pytest.mark.timeout(300)


# ---- fixtures and helpers ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def other_tenant(api_server):
    """A second tenant with one User, made through the admin API; returns its client."""
    tenant, password = f"t2-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    with api_server.admin() as admin:
        assert admin.post("/auth/tenants", json={"id": tenant, "name": "Other Org"}).status_code == 201
        r = admin.post("/auth/users", json={"username": f"u-{tenant}", "password": password, "role": "User",
                                            "tenant_id": tenant})
        assert r.status_code == 201, r.text
    with api_server.as_user(f"u-{tenant}", password) as client:
        yield client


@pytest.fixture(scope="module")
def viewer(api_server):
    password = f"pw-{uuid.uuid4().hex}"
    with api_server.admin() as admin:
        r = admin.post("/auth/users", json={"username": f"viewer-{uuid.uuid4().hex[:6]}", "password": password,
                                            "role": "Viewer", "tenant_id": "tenant1"})
        assert r.status_code == 201, r.text
        name = r.json()["username"]
    with api_server.as_user(name, password) as client:
        yield client


@pytest.fixture
def user(api_server):
    with api_server.as_user("testuser", "test123") as client:
        yield client


def system(url: str, password: str | None = None) -> dict:
    """A Migration Assistant system config for a database URL."""
    ep = Endpoint.from_url(url)
    kind = {"postgres": "postgresql", "mysql": "mysql", "clickhouse": "clickhouse"}[ep.engine]
    if ep.path:
        return {"type": kind, "path": ep.path, "database": ep.database}
    return {"type": kind, "host": ep.host, "port": ep.port, "username": ep.user, "password": password,
            "database": ep.database}


def fill_mysql(url: str, table: str = "orders", rows: int = ROWS) -> list[tuple]:
    ep = Endpoint.from_url(url)
    data = [(i, f"name {i} ünïcode", f"{i * 1.25:.2f}") for i in range(1, rows + 1)]
    with pymysql.connect(host=ep.host, port=ep.port, user=ep.user, password=ep.secret(), database=ep.database,
                         autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, name VARCHAR(100), amount DECIMAL(12,2))")
        cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s)", data)
    return data


def fill_postgres(url: str, table: str, rows: int = ROWS) -> list[tuple]:
    data = [(i, f"row {i}") for i in range(1, rows + 1)]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, label text)")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)", data)
    return data


def postgres_rows(url: str, table: str) -> list[tuple] | None:
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
            return None
        return [tuple(str(v) if not isinstance(v, int) else v for v in r)
                for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()]


def wait_status(client, session_id: str, until: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/migrations/{session_id}/status")
        assert r.status_code == 200, r.text
        if r.json()["status"] in until:
            return r.json()
        time.sleep(0.5)
    raise AssertionError(f"session {session_id} still {r.json()['status']} after {timeout} s")


def follow(url: str, token: str, messages: list) -> threading.Thread:
    """A WebSocket client collecting every message until the server closes the stream."""
    def run():
        with ws_connect(f"{url}?token={token}", open_timeout=30) as ws:
            for raw in ws:
                messages.append(json.loads(raw))
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def prefect_client(prefect_stack):
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    with temporary_settings({PREFECT_API_URL: prefect_stack.api_url}):
        with get_client(sync_client=True) as client:
            yield client


def prefect_run(prefect_stack, run_id: str):
    with prefect_client(prefect_stack) as client:
        return client.read_flow_run(uuid.UUID(run_id))


def prefect_run_states(prefect_stack, run_id: str) -> list:
    with prefect_client(prefect_stack) as client:
        return client.read_flow_run_states(uuid.UUID(run_id))


def error_code(response) -> str:
    return response.json()["error"]["code"]


# ---- the documented lifecycle -----------------------------------------------------------------------------

def test_basic_usage_loop_mysql_to_postgres_then_rollback(api_server, prefect_stack, user, other_tenant,
                                                          mysql_user_with_password, postgres_db):
    source_url, db_user, db_password = mysql_user_with_password
    source_rows = fill_mysql(source_url)
    destination_url = postgres_db()
    source = {**system(source_url, db_password), "username": db_user}
    migration_config = {"name": "Orders to PostgreSQL", "source": source, "destination": system(destination_url),
                        "tables": ["orders"], "transfer": {"method": "direct_copy", "options": {"parallel_transfers": 2}},
                        "safety": {"backup_before": True, "verify_after": True, "rollback_on_failure": True}}
    bodies = []

    # the documented loop, adapted in host, credentials and config
    response = user.post("/migrations/", json=migration_config)
    assert response.status_code == 201, response.text
    bodies.append(response.text)
    session_data = response.json()
    session_id = session_data["session_id"]
    assert session_data["status"] == "created"
    assert user.get(f"/migrations/{session_id}/status").json()["status"] == "pending"

    messages: list[dict] = []
    follower = follow(f"{api_server.url.replace('http', 'ws')}/ws/migrations/{session_id}",
                      api_server.token("testuser", "test123"), messages)
    response = user.post(f"/migrations/{session_id}/start", json={"auto_rollback": True})
    assert response.status_code == 200 and response.json()["status"] == "started", response.text
    assert error_code(user.post(f"/migrations/{session_id}/start", json={})) == "MIGRATION_ALREADY_RUNNING"
    while True:
        response = user.get(f"/migrations/{session_id}/status")
        status_data = response.json()
        bodies.append(response.text)
        print(f"Status: {status_data['status']}, Progress: {status_data['progress']:.1f}%")
        if status_data["status"] in ["completed", "failed", "cancelled"]:
            break
        time.sleep(1)
    assert status_data["status"] == "completed", status_data

    # the destination holds the same rows
    assert postgres_rows(destination_url, "orders") == [(i, n, a) for i, n, a in source_rows]

    # status and metrics carry the run's real figures
    assert status_data["progress"] == 100.0 and status_data["error"] is None
    assert status_data["steps_completed"] == status_data["steps_total"] >= 6
    assert [s["name"] for s in status_data["steps"]][:2] == ["connect-test", "plan"]
    perf = status_data["performance_metrics"]
    assert perf["rows_transferred"] == ROWS and perf["bytes_transferred"] > ROWS * 8
    assert perf["tables_completed"] == perf["tables_total"] == 1 and perf["chunks_copied"] >= 1
    metrics = user.get(f"/migrations/{session_id}/metrics").json()["metrics"]
    bodies.append(json.dumps(metrics))
    assert metrics["database"]["rows_migrated"] == ROWS and metrics["database"]["tables_migrated"] == 1
    assert metrics["database"]["tables"][0]["table"] == "orders"
    assert metrics["transfer"]["bytes_transferred"] == perf["bytes_transferred"]
    assert metrics["overall"]["duration"] > 0 and metrics["overall"]["progress"] == 100.0
    assert metrics["transfer"]["rate_average"].endswith("/s")

    # the WebSocket client followed the run to its end
    follower.join(timeout=30)
    assert not follower.is_alive()
    assert messages[-1]["type"] == "final" and messages[-1]["status"] == "completed"
    assert messages[0]["status"] in ("pending", "scheduled", "starting", "running")
    assert [m["progress"] for m in messages] == sorted(m["progress"] for m in messages)
    bodies += [json.dumps(m) for m in messages]

    check_logs(user, session_id, bodies)
    check_listing(user, other_tenant, session_id)
    check_other_tenant_sees_nothing(api_server, other_tenant, session_id)
    assert error_code(user.post(f"/migrations/{session_id}/start")) == "MIGRATION_ALREADY_FINISHED"
    assert error_code(user.post(f"/migrations/{session_id}/cancel")) == "MIGRATION_NOT_CANCELLABLE"

    # rollback restores the destination (the run created the table, so it is gone again)
    response = user.post(f"/migrations/{session_id}/rollback", json={"rollback_options": {"restore_database": True}})
    assert response.status_code == 200 and response.json()["status"] == "rollback_started", response.text
    assert error_code(user.post(f"/migrations/{session_id}/rollback")) == "ROLLBACK_ALREADY_STARTED"
    rolled = wait_status(user, session_id, ("rolled_back", "rollback_failed"))
    assert rolled["status"] == "rolled_back", rolled
    assert postgres_rows(destination_url, "orders") is None

    # the password is in no response, flow-run parameter or server log line
    params = json.dumps(prefect_run(prefect_stack, session_id).parameters)
    assert params and "sqlalchemy-connector/t-tenant1-source-" in params
    for text in [*bodies, params, api_server.log.read_text()]:
        assert db_password not in text


def check_logs(user, session_id: str, bodies: list) -> None:
    info = user.get(f"/migrations/{session_id}/logs", params={"level": "INFO", "limit": 200}).json()
    bodies.append(json.dumps(info))
    messages = [entry["message"] for entry in info["logs"]]
    assert any(m.startswith(f"Done: {ROWS} rows") for m in messages), messages
    assert {e["level"] for e in info["logs"]} <= {"INFO", "WARNING", "ERROR", "CRITICAL"}
    errors = user.get(f"/migrations/{session_id}/logs", params={"level": "ERROR"}).json()
    assert not any(m.startswith("Done:") for m in (e["message"] for e in errors["logs"]))
    assert {e["level"] for e in errors["logs"]} <= {"ERROR", "CRITICAL"}
    two = user.get(f"/migrations/{session_id}/logs", params={"limit": 2}).json()
    assert len(two["logs"]) == 2 and two["has_more"] is True
    last = info["logs"][-1]["timestamp"]
    later = user.get(f"/migrations/{session_id}/logs", params={"since": last}).json()
    assert all(e["timestamp"] >= last for e in later["logs"]) and len(later["logs"]) < len(info["logs"])


def check_listing(user, other_tenant, session_id: str) -> None:
    listed = {s["session_id"]: s for s in user.get("/migrations/", params={"limit": 200}).json()}
    assert listed[session_id]["status"] == "completed" and listed[session_id]["source_type"] == "mysql"
    assert listed[session_id]["destination_type"] == "postgresql" and listed[session_id]["progress"] == 100.0
    completed = [s["session_id"] for s in user.get("/migrations/", params={"status_filter": "completed"}).json()]
    pending = [s["session_id"] for s in user.get("/migrations/", params={"status_filter": "pending"}).json()]
    assert session_id in completed and session_id not in pending
    assert session_id not in [s["session_id"] for s in other_tenant.get("/migrations/").json()]
    r = user.get("/migrations/", params={"status_filter": "sideways"})
    assert r.status_code == 400 and "status_filter" in r.text


def check_other_tenant_sees_nothing(api_server, other_tenant, session_id: str) -> None:
    for method, path in [("get", "status"), ("get", "logs"), ("get", "metrics"), ("post", "start"),
                         ("post", "cancel"), ("post", "rollback"), ("post", "schedule")]:
        body = {"scheduled_time": "2999-01-01T00:00:00Z"} if path == "schedule" else None
        r = getattr(other_tenant, method)(f"/migrations/{session_id}/{path}", **({"json": body} if body else {}))
        assert r.status_code == 404 and error_code(r) == "MIGRATION_NOT_FOUND", (path, r.text)
    token = other_tenant.headers["authorization"].split()[1]
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"{api_server.url.replace('http', 'ws')}/ws/migrations/{session_id}?token={token}")
    assert refused.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as anonymous:
        ws_connect(f"{api_server.url.replace('http', 'ws')}/ws/migrations/{session_id}")
    assert anonymous.value.response.status_code == 401


# ---- batches, schedules, conflicts ------------------------------------------------------------------------

def test_batch_runs_one_at_a_time_and_stops_on_failure(user, postgres_db, prefect_stack):
    source, destination = postgres_db(), postgres_db()
    fill_postgres(source, "a")
    fill_postgres(source, "b")
    config = lambda name, table: {"name": name, "source": system(source), "destination": system(destination),  # noqa: E731
                                  "tables": [table]}
    r = user.post("/migrations/batch", json={
        "migrations": [config("first", "a"), config("broken", "no_such_table"), config("never", "b")],
        "batch_options": {"parallel_limit": 1, "stop_on_failure": True}})
    assert r.status_code == 201, r.text
    first, broken, never = [s["session_id"] for s in r.json()["sessions"]]
    assert wait_status(user, never, FINAL)["status"] == "cancelled"
    assert user.get(f"/migrations/{first}/status").json()["status"] == "completed"
    failed = user.get(f"/migrations/{broken}/status").json()
    assert failed["status"] == "failed" and "no_such_table" in failed["error"]
    runs = {sid: prefect_run(prefect_stack, sid) for sid in (first, broken, never)}
    assert runs[broken].start_time >= runs[first].end_time  # one at a time
    assert runs[never].run_count == 0  # stopped before it began
    assert postgres_rows(destination, "a") is not None and postgres_rows(destination, "b") is None


def test_scheduled_session_runs_at_its_time_into_embedded_clickhouse(user, postgres_db, clickhouse_db,
                                                                      prefect_stack):
    source, destination = postgres_db(), clickhouse_db()
    rows = fill_postgres(source, "events")
    r = user.post("/migrations/", json={"name": "events to chDB", "source": system(source),
                                        "destination": system(destination)})
    session_id = r.json()["session_id"]
    past = user.post(f"/migrations/{session_id}/schedule", json={"scheduled_time": "2020-01-01T00:00:00Z"})
    assert past.status_code == 400 and past.json()["error"]["details"]["validation_errors"][0]["field"] == \
        "scheduled_time"
    at = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=4)).replace(microsecond=0)
    r = user.post(f"/migrations/{session_id}/schedule",
                  json={"schedule_type": "datetime", "scheduled_time": at.isoformat(), "timezone": "UTC",
                        "auto_start": True})
    assert r.status_code == 200 and r.json()["status"] == "scheduled", r.text
    # the state history, not the current state: a worker polling every 2 s may already have taken the run
    assert at in [s.state_details.scheduled_time for s in prefect_run_states(prefect_stack, session_id)
                  if s.type.value == "SCHEDULED"]
    assert wait_status(user, session_id, FINAL)["status"] == "completed"
    assert prefect_run(prefect_stack, session_id).start_time >= at
    conn = open_url(destination)  # our connector: it also closes any other chDB folder this process had open
    try:
        got = conn.query("SELECT id, label FROM events ORDER BY id")
    finally:
        conn.close()
    assert [tuple(r) for r in got] == rows


def test_held_session_cancel_schedule_and_conflicts(user, postgres_db, prefect_stack):
    config = {"name": "held", "source": system(postgres_db()), "destination": system(postgres_db())}
    session_id = user.post("/migrations/", json=config).json()["session_id"]
    later = "2999-01-01T02:00:00"
    r = user.post(f"/migrations/{session_id}/schedule", json={"scheduled_time": later, "timezone": "Asia/Kolkata"})
    assert r.status_code == 200 and r.json()["scheduled_time"].startswith("2998-12-31T20:30:00"), r.text
    assert user.get(f"/migrations/{session_id}/status").json()["status"] == "scheduled"
    r = user.post(f"/migrations/{session_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert prefect_run(prefect_stack, session_id).state.type.value == "CANCELLED"
    assert user.get(f"/migrations/{session_id}/status").json()["status"] == "cancelled"
    assert error_code(user.post(f"/migrations/{session_id}/cancel")) == "MIGRATION_NOT_CANCELLABLE"
    assert error_code(user.post(f"/migrations/{session_id}/start")) == "MIGRATION_ALREADY_FINISHED"
    assert error_code(user.post(f"/migrations/{session_id}/rollback")) == "MIGRATION_NOT_COMPLETED"
    assert error_code(user.get("/migrations/not-a-session/status")) == "MIGRATION_NOT_FOUND"
    assert error_code(user.get(f"/migrations/{uuid.uuid4()}/logs")) == "MIGRATION_NOT_FOUND"


# ---- refusals ---------------------------------------------------------------------------------------------

DOCUMENTED_WORDPRESS = {
    "name": "WordPress to AWS Migration",
    "source": {"type": "wordpress", "host": "old-server.com", "username": "user", "password": "pass-Secret-1",
               "database": {"type": "mysql", "host": "old-server.com", "username": "wp_user",
                            "password": "wp-pass-Secret-2", "database": "wordpress_db"}},
    "destination": {"type": "aws-s3", "region": "us-east-1", "bucket": "my-new-website",
                    "database": {"type": "aurora-mysql", "cluster": "my-website-cluster", "username": "admin",
                                 "password": "admin-pass-Secret-3"}},
    "transfer": {"method": "hybrid_sync", "options": {"compression": True, "parallel_transfers": 4}},
}


def test_file_systems_are_refused_naming_the_field(user, api_server):
    r = user.post("/migrations/", json=DOCUMENTED_WORDPRESS)
    assert r.status_code == 400 and error_code(r) == "INVALID_CONFIGURATION", r.text
    problems = {e["field"]: e["message"] for e in r.json()["error"]["details"]["validation_errors"]}
    assert set(problems) == {"source.type", "destination.type"} and "postgresql" in problems["source.type"]
    batch = user.post("/migrations/batch", json={"migrations": [
        {"name": "ok", "source": {"type": "postgresql", "host": "h"}, "destination": {"type": "sqlite", "path": "/x"}},
        DOCUMENTED_WORDPRESS]})
    assert batch.status_code == 400
    assert "migrations.1.source.type" in [e["field"] for e in batch.json()["error"]["details"]["validation_errors"]]
    unknown = user.post("/migrations/", json={**DOCUMENTED_WORDPRESS, "source": {"type": "mainframe"}})
    assert unknown.status_code == 400 and "source.type" in unknown.text
    for text in (r.text, batch.text, unknown.text, api_server.log.read_text()):
        assert "Secret-" not in text


def test_scopes_and_authentication(api_server, viewer):
    config = {"name": "x", "source": {"type": "postgresql", "host": "h"}, "destination": {"type": "postgresql",
                                                                                          "host": "h"}}
    r = viewer.post("/migrations/", json=config)
    assert r.status_code == 403 and r.json()["error"]["details"]["required_scope"] == "migrations:write"
    assert viewer.get("/migrations/").status_code == 200
    with api_server.client() as anonymous:
        assert error_code(anonymous.get("/migrations/")) == "AUTHENTICATION_REQUIRED"


def test_root_and_system_information(api_server):
    with api_server.client() as client:
        root = client.get("/").json()
        types = client.get("/system/types").json()
        modules = client.get("/system/modules").json()
        health = client.get("/health").json()
    assert root["health_url"] == "/health" and root["version"] == health["version"] == "1.0.0"
    assert {"postgresql", "mysql", "clickhouse", "wordpress"} <= set(types["system_types"])
    assert "aurora-mysql" in types["database_types"] and "rsync" in types["transfer_methods"]
    engines = {m["engine"]: m for m in modules["database_connectors"]}
    assert set(engines) == {"postgres", "mysql", "sqlite", "clickhouse"} and all(m["available"] for m in engines.values())
    assert "aurora-postgres" in engines["postgres"]["system_types"] and "wordpress" in modules["refused_system_types"]
