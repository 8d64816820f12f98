"""The Jarvis operations contract against a real uvicorn, Prefect server and worker, PostgreSQL, MariaDB and chDB.

The documented examples run with only hosts and credentials changed (ClickHouse is embedded chDB by `path`).
"""
from __future__ import annotations

import datetime as dt
import time
import uuid
from zoneinfo import ZoneInfo

import psycopg
import pymysql
import pytest

import connectors
from connectors.endpoint import Endpoint
from tests.helpers import open_url

IST = ZoneInfo("Asia/Kolkata")
OTHER_TENANT, OTHER_USER, OTHER_PASSWORD = "jarvis-other-org", "jarvis-other", "other-pass-123"


@pytest.fixture(scope="module", autouse=True)
def no_server_errors(api_server):
    """Nothing these tests do makes the server log an unhandled error."""
    start = api_server.log.stat().st_size
    yield
    with open(api_server.log, errors="replace") as log:
        log.seek(start)
        assert "Traceback" not in log.read()


@pytest.fixture(scope="module")
def jarvis(api_server):
    with api_server.as_user("testuser", "test123") as client:
        yield client


@pytest.fixture(scope="module")
def outsider(api_server):
    """A user of another tenant (created through /auth/tenants and /auth/users)."""
    with api_server.admin() as admin:
        tenant = admin.post("/auth/tenants", json={"id": OTHER_TENANT, "name": "Other organisation"})
        user = admin.post("/auth/users", json={"username": OTHER_USER, "password": OTHER_PASSWORD,
                                               "role": "User", "tenant_id": OTHER_TENANT})
    assert tenant.status_code in (201, 409) and user.status_code in (201, 409), (tenant.text, user.text)
    with api_server.as_user(OTHER_USER, OTHER_PASSWORD) as client:
        yield client


@pytest.fixture(scope="module")
def master_id(jarvis):
    r = jarvis.post("/api/database-master",
                    json={"name": "Universal Migration", "service_url": "http://localhost:5010"})
    assert r.status_code == 201, r.text
    assert r.json()["message"] == "Database master created successfully"
    return r.json()["database"]["id"]


def seed_postgres(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, name text, updated_at timestamptz)")
        conn.execute("INSERT INTO users SELECT g, 'user ' || g, now() FROM generate_series(1, 1000) g")
        conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(12,2), updated_at timestamptz)")
        conn.execute("INSERT INTO orders SELECT g, g * 1.25, now() FROM generate_series(1, 500) g")


def pg_settings(url: str, password: str) -> dict:
    ep = Endpoint.from_url(url)
    return {"host": ep.host, "port": ep.port, "database": ep.database, "username": ep.user, "password": password}


def chdb_count(folder, database: str, table: str) -> int:
    conn = open_url(f"chdb://{folder}?database={database}")
    try:
        return conn.query(f"SELECT count() FROM `{table}`")[0][0]
    finally:
        conn.close()
        connectors.release_embedded()


def wait_for_status(client, op_id: int, wanted: set[str], timeout: float = 150) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        op = client.get(f"/api/operations/{op_id}").json()["operation"]
        if op["status"] in wanted or time.monotonic() > deadline:
            return op
        time.sleep(1)


def flow_run(prefect_stack, run_id: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    with temporary_settings({PREFECT_API_URL: prefect_stack.api_url}):
        with get_client(sync_client=True) as client:
            return client.read_flow_run(uuid.UUID(run_id))


def assert_secret_free(secrets: list[str], texts: list[str], api_server) -> None:
    log = api_server.log.read_text()
    for secret in secrets:
        assert all(secret not in text for text in texts)
        assert secret not in log


def example_1_body(master: int, schedule: str, pg_url: str, pg_password: str, folder, ch_password: str) -> dict:
    return {"source_id": master, "schedule": schedule, "operation_type": "full", "config_data": {
        "source_type": "postgresql", "dest_type": "clickhouse",
        "source": pg_settings(pg_url, pg_password),
        "destination": {"path": str(folder), "database": "analytics_db", "username": "default",
                        "password": ch_password},
        "operation_type": "full"}}


def test_example_1_scheduled_postgres_to_clickhouse_runs_by_prefect_then_forced_incremental(
        api_server, prefect_stack, jarvis, outsider, postgres_url, tmp_path):
    seed_postgres(postgres_url)
    username, password = f"admin-{uuid.uuid4().hex[:8]}", "pass123-long-enough"
    registered = jarvis.post("/api/auth/register", json={"username": username, "email": f"{username}@example.com",
                                                         "password": password})
    assert registered.status_code == 201, registered.text
    login = jarvis.post("/api/auth/login", json={"username": username, "password": password})
    token = login.json()["access_token"]
    with api_server.client(headers={"Authorization": f"Bearer {token}"}) as admin:
        run_example_1(api_server, prefect_stack, admin, username, [jarvis, outsider], postgres_url, tmp_path,
                      texts=[registered.text, login.text])
    assert_secret_free([password], [registered.text, login.text], api_server)


def run_example_1(api_server, prefect_stack, jarvis, username, outsiders, postgres_url, tmp_path, texts):
    master = jarvis.post("/api/database-master",
                         json={"name": "Universal Migration", "service_url": "http://localhost:5010"})
    assert master.status_code == 201
    master_id = master.json()["database"]["id"]
    pg_password, ch_password = f"pg-{uuid.uuid4().hex}", f"ch-{uuid.uuid4().hex}"
    due = dt.datetime.now(IST).replace(microsecond=0, tzinfo=None) + dt.timedelta(seconds=6)
    created = jarvis.post("/api/operations", json=example_1_body(master_id, due.isoformat(), postgres_url,
                                                                 pg_password, tmp_path / "dw", ch_password))
    assert created.status_code == 201, created.text
    op = created.json()["operation"]
    assert (op["status"], op["source_name"], op["username"]) == ("pending", "Universal Migration", username)
    assert op["schedule"] == due.replace(tzinfo=IST).isoformat()
    assert op["config_data"]["source"]["password"] == "********"
    assert op["config_data"]["destination"]["password"] == "********"
    run = flow_run(prefect_stack, op["flow_run_id"])
    assert run.expected_start_time == due.replace(tzinfo=IST).astimezone(dt.timezone.utc)
    assert run.parameters["source"].startswith("sqlalchemy-connector/t-")
    assert "-jarvis-source-" in run.parameters["source"]
    assert run.parameters["destination"].startswith("clickhouse-endpoint/t-")

    done = wait_for_status(jarvis, op["id"], {"completed", "failed"})
    assert done["status"] == "completed", done
    assert done["result_data"]["tables_migrated"] == [{"table": "orders", "records": 500},
                                                      {"table": "users", "records": 1000}]
    # Prefect's WaitForScheduledTime rule rounds the wait to whole seconds: a run may start up to 0.5 s early
    assert dt.datetime.fromisoformat(done["started_at"]) >= due.replace(tzinfo=IST) - dt.timedelta(seconds=0.5)
    assert chdb_count(tmp_path / "dw", "analytics_db", "users") == 1000

    status = jarvis.get(f"/api/operations/{op['id']}/status")
    detail = status.json()
    assert (detail["is_completed"], detail["is_success"], detail["status"]) == (True, True, "completed")
    results = detail["migration_results"]
    assert (results["total_tables"], results["tables_migrated_count"], results["total_records"]) == (2, 2, 1500)
    assert detail["duration_seconds"] > 0 and detail["duration_formatted"].endswith("s")

    summary = jarvis.get("/api/operations/summary").json()
    assert summary["by_status"] == {"pending": 0, "running": 0, "completed": 1, "failed": 0}
    assert summary["by_type"] == {"full": 1, "incremental": 0}
    assert summary["recent_operations"][0]["id"] == op["id"]
    assert summary["total_operations"] == len(jarvis.get("/api/operations").json()["operations"]) == 1

    incremental = jarvis.put(f"/api/operations/{op['id']}", json={"operation_type": "incremental"})
    assert incremental.status_code == 200 and incremental.json()["operation"]["status"] == "completed"
    again = jarvis.post(f"/api/operations/{op['id']}/execute")
    assert again.status_code == 409 and again.json()["code"] == "OPERATION_ALREADY_COMPLETED"
    forced = jarvis.post(f"/api/operations/{op['id']}/execute", params={"force": "true"})
    assert forced.status_code == 200, forced.text
    executed = forced.json()
    assert executed["message"] == "Operation executed successfully"
    assert executed["operation"]["status"] == "completed"
    assert executed["operation"]["flow_run_id"] != op["flow_run_id"]
    assert executed["microservice_response"]["success"] is True
    assert executed["microservice_response"]["total_tables"] == 2

    for outsider in outsiders:  # other tenants see none of it
        assert_hidden(outsider, op["id"], master_id)

    rerun = flow_run(prefect_stack, executed["operation"]["flow_run_id"])
    assert (rerun.parameters["mode"], rerun.parameters["watermark_column"]) == ("incremental", "updated_at")
    texts += [created.text, status.text, forced.text, jarvis.get("/api/operations").text, str(run.parameters),
              str(rerun.parameters)]
    assert_secret_free([pg_password, ch_password], texts, api_server)


def assert_hidden(outsider, op_id: int, master_id: int) -> None:
    for path in (f"/api/operations/{op_id}", f"/api/operations/{op_id}/status", f"/api/database-master/{master_id}"):
        assert outsider.get(path).status_code == 404
    hidden = outsider.post(f"/api/operations/{op_id}/execute", params={"force": "true"})
    assert hidden.status_code == 404 and hidden.json()["code"] == "OPERATION_NOT_FOUND"
    assert outsider.delete(f"/api/operations/{op_id}").status_code == 404
    renamed = outsider.put(f"/api/database-master/{master_id}", json={"name": "x", "service_url": "http://x"})
    assert renamed.status_code == 404
    assert op_id not in [o["id"] for o in outsider.get("/api/operations").json()["operations"]]


def test_a_past_schedule_runs_at_once_and_a_failed_run_reports_its_error(jarvis, master_id, postgres_url, tmp_path):
    seed_postgres(postgres_url)
    body = example_1_body(master_id, "2024-01-01T00:00:00", postgres_url, "pw", tmp_path / "dw", "")
    body["config_data"]["tables"] = ["users", "no_such_table"]
    op = jarvis.post("/api/operations", json=body).json()["operation"]
    done = wait_for_status(jarvis, op["id"], {"completed", "failed"})
    assert done["status"] == "failed" and "no_such_table" in done["error_message"]
    detail = jarvis.get(f"/api/operations/{op['id']}/status").json()
    assert (detail["is_completed"], detail["is_success"]) == (True, False)
    results = detail["migration_results"]
    assert results["success"] is False and results["tables_migrated"] == []
    assert [t["table"] for t in results["tables_failed"]] == ["users", "no_such_table"]
    assert jarvis.get("/api/operations/summary").json()["by_status"]["failed"] >= 1


@pytest.fixture
def mysql_source(mysql_user_with_password):
    url, user, password = mysql_user_with_password
    ep = Endpoint.from_url(url)
    conn = pymysql.connect(host=ep.host, port=ep.port, user=ep.user, password=ep.secret(), database=ep.database,
                           autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(100), city VARCHAR(50))")
        cur.executemany("INSERT INTO customers VALUES (%s, %s, %s)",
                        [(i, f"customer {i}", ["Pune", "Delhi", "Goa"][i % 3]) for i in range(1, 301)])
    conn.close()
    return {"host": ep.host, "port": ep.port, "database": ep.database, "username": user, "password": password}


def test_example_3_direct_migration_mysql_to_clickhouse_is_synchronous(api_server, prefect_stack, jarvis,
                                                                       mysql_source, tmp_path):
    body = {"source_type": "mysql", "dest_type": "clickhouse", "source": mysql_source,
            "destination": {"path": str(tmp_path / "dw"), "database": "analytics_db"}, "operation_type": "full"}
    started = time.monotonic()
    r = jarvis.post("/migrate", json=body)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["success"] is True and result["errors"] == [] and result["tables_failed"] == []
    assert (result["tables_migrated"], result["total_tables"]) == ([{"table": "customers", "records": 300}], 1)
    assert chdb_count(tmp_path / "dw", "analytics_db", "customers") == 300, time.monotonic() - started
    run = flow_run(prefect_stack, result["flow_run_id"])
    assert run.state.is_completed() and mysql_source["password"] not in str(run.parameters)
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.client.orchestration import get_client
    with temporary_settings({PREFECT_API_URL: prefect_stack.api_url}), get_client(sync_client=True) as client:
        names = [b.name for b in client.read_block_documents()]
    assert not [n for n in names if "jarvis-migrate" in n], "the run's credential blocks are deleted after it"
    assert_secret_free([mysql_source["password"]], [r.text], api_server)


def test_test_connection_is_real_and_never_echoes_the_password(api_server, jarvis, mysql_source, master_id,
                                                               tmp_path):
    good = jarvis.post("/test-connection", json={"type": "source", "adapter_type": "mysql", "config": mysql_source})
    assert good.status_code == 200, good.text
    assert good.json()["valid"] is True and good.json()["tables"] == ["customers"]
    wrong = f"Wrong-{uuid.uuid4().hex}"
    bad = jarvis.post("/test-connection", json={"type": "destination", "adapter_type": "mysql",
                                                "config": {**mysql_source, "password": wrong}})
    assert bad.status_code == 200
    assert bad.json()["valid"] is False and "Access denied" in bad.json()["error"]

    held = jarvis.post("/api/operations", json={"source_id": master_id, "config_data": {
        "source_type": "mysql", "dest_type": "sqlite", "source": {**mysql_source, "password": wrong},
        "destination": {"path": str(tmp_path / "target.db")}}})
    assert held.status_code == 201 and held.json()["operation"]["status"] == "pending"
    refused = jarvis.post(f"/api/operations/{held.json()['operation']['id']}/execute")
    assert refused.status_code == 400 and refused.json()["error"] == "Source connection test failed"
    assert "Access denied" in refused.json()["details"]["operation"]["error_message"]
    assert_secret_free([wrong, mysql_source["password"]], [good.text, bad.text, held.text, refused.text], api_server)


def test_zoho_and_sql_server_are_refused_naming_the_supported_types(jarvis, master_id):
    zoho = {"refresh_token": "zoho-refresh-secret", "client_id": "id", "client_secret": "zoho-client-secret",
            "api_domain": "https://www.zohoapis.com"}
    pg = {"host": "127.0.0.1", "port": 5432, "database": "target_db", "username": "postgres", "password": "p"}
    answers = [
        jarvis.post("/api/operations", json={"source_id": master_id, "schedule": "2024-01-01T00:00:00",
                                             "operation_type": "full", "config_data": {
                                                 "source_type": "zoho", "dest_type": "postgresql",
                                                 "source": zoho, "destination": pg, "operation_type": "full"}}),
        jarvis.post("/migrate", json={"source_type": "sqlserver", "dest_type": "postgresql", "source": pg,
                                      "destination": pg}),
        jarvis.post("/test-connection", json={"type": "source", "adapter_type": "zoho", "config": zoho}),
    ]
    for r in answers:
        assert r.status_code == 422, r.text
        assert "postgresql, mysql, clickhouse, sqlite" in r.json()["error"]
        assert "secret" not in r.text
    assert "Zoho CRM has no connector yet" in answers[0].json()["error"]
    assert [r.json()["details"]["field"] for r in answers] == ["source_type", "source_type", "adapter_type"]


def test_naive_schedule_is_ist_and_a_scheduled_operation_waits_unless_forced(api_server, prefect_stack, jarvis,
                                                                            master_id, postgres_url, tmp_path):
    body = example_1_body(master_id, "2030-01-15T10:30:00", postgres_url, "pw", tmp_path / "dw", "")
    op = jarvis.post("/api/operations", json=body).json()["operation"]
    run = flow_run(prefect_stack, op["flow_run_id"])
    assert run.expected_start_time == dt.datetime(2030, 1, 15, 5, 0, tzinfo=dt.timezone.utc)
    assert op["schedule"] == "2030-01-15T10:30:00+05:30" and op["status"] == "pending"

    early = jarvis.post(f"/api/operations/{op['id']}/execute")
    assert early.status_code == 409 and early.json()["code"] == "OPERATION_SCHEDULED"
    moved = jarvis.put(f"/api/operations/{op['id']}", json={"schedule": "2030-01-15T10:30:00Z"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["operation"]["schedule"] == "2030-01-15T16:00:00+05:30"
    replaced = flow_run(prefect_stack, moved.json()["operation"]["flow_run_id"])
    assert replaced.expected_start_time == dt.datetime(2030, 1, 15, 10, 30, tzinfo=dt.timezone.utc)
    with pytest.raises(Exception):
        flow_run(prefect_stack, op["flow_run_id"])  # the superseded scheduled run is gone

    in_use = jarvis.delete(f"/api/database-master/{master_id}")
    assert in_use.status_code == 409 and in_use.json()["code"] == "DATABASE_MASTER_IN_USE"
    assert jarvis.delete(f"/api/operations/{op['id']}").json() == {"message": "Operation deleted successfully"}
    assert jarvis.get(f"/api/operations/{op['id']}").status_code == 404
    with pytest.raises(Exception):
        flow_run(prefect_stack, replaced.id.hex)  # a deleted operation never runs

    unknown = jarvis.post("/api/operations", json={**body, "source_id": 999999})
    assert unknown.status_code == 404 and unknown.json()["details"] == {"source_id": 999999}
    bad_time = jarvis.post("/api/operations", json={**body, "schedule": "next tuesday"})
    assert bad_time.status_code == 400 and "schedule" in bad_time.text


def test_database_master_crud(jarvis):
    made = jarvis.post("/api/database-master", json={"name": "Legacy Postgres Service",
                                                     "service_url": "http://localhost:5001"}).json()["database"]
    renamed = jarvis.put(f"/api/database-master/{made['id']}", json={"name": "Postgres Service",
                                                                     "service_url": "http://localhost:5001"})
    assert renamed.json()["database"]["name"] == "Postgres Service"
    assert dt.datetime.fromisoformat(made["created_at"]).utcoffset() == dt.timedelta(0)
    assert made["id"] in [d["id"] for d in jarvis.get("/api/database-master").json()["databases"]]
    assert jarvis.get(f"/api/database-master/{made['id']}").json()["database"]["service_url"] == "http://localhost:5001"
    assert jarvis.delete(f"/api/database-master/{made['id']}").status_code == 200
    gone = jarvis.get(f"/api/database-master/{made['id']}")
    assert gone.status_code == 404 and gone.json()["code"] == "DATABASE_MASTER_NOT_FOUND"
    bad = jarvis.post("/api/database-master", json={"name": "", "service_url": "ftp://x"})
    assert bad.status_code == 400
    assert {e["field"] for e in bad.json()["details"]["validation_errors"]} == {"name", "service_url"}
