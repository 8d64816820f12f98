"""Schema migrations against real PostgreSQL (a logical-replication pair), MariaDB and chDB.

Flows run in-process on the session's Prefect harness, except approvals: those need a
deployment run on the real server + worker (`prefect_stack`), because a suspended run is
re-run by the worker after the resume.
"""
from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pymysql
import pytest

from connectors.endpoint import Endpoint
from flows.schema_migration import ApprovalExpired, schema_migration, schema_rollback, submit_decision
from tasks.schema_apply import HISTORY_TABLE
from tasks.schema_validate import validate_script
from tests.replicas import replica_pair  # noqa: F401  (session fixture)

INDEX_SCRIPT = "CREATE INDEX CONCURRENTLY idx_users_email ON users(email);"
INDEX_ROLLBACK = "DROP INDEX CONCURRENTLY IF EXISTS idx_users_email;"


def _phases(pair):
    return [{"name": "replica-1", "endpoint": pair.subscriber}, {"name": "master", "endpoint": pair.publisher}]


def _run(**params):
    """Run schema-migration in-process; returns (final state, report)."""
    params.setdefault("author", "dev@example.com")
    params.setdefault("require_approval", False)
    params.setdefault("probe_iterations", 10)
    state = schema_migration(**params, return_state=True)
    return state, state.result(raise_on_failure=False)


def _one(url: str, sql: str, params=()):
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(sql, params or None).fetchone()
    return row[0] if row else None


def _index_exists(url: str, name: str) -> bool:
    return _one(url, "SELECT to_regclass(%s) IS NOT NULL", [name])


def _columns(url: str, table: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as c:
        return [r[0] for r in c.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                                        "ORDER BY ordinal_position", [table])]


def _history(url: str, name: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute(f"SELECT action, phase, execution_id, reason FROM {HISTORY_TABLE} WHERE migration_name = %s "
                         "ORDER BY applied_at", [name]).fetchall()


# --- connection strings -------------------------------------------------------------------
def test_connection_strings_in_both_forms_parse_into_endpoints():
    ep = Endpoint.from_connection_string("Host=db1;Port=5433;Database=app;Username=migrator;Password=s3cr=t",
                                         engine="PostgreSQL", label="prod-db")
    assert (ep.engine, ep.host, ep.port, ep.database, ep.user, ep.secret()) == ("postgres", "db1", 5433, "app",
                                                                                   "migrator", "s3cr=t")
    assert "s3cr=t" not in repr(ep) and "s3cr=t" not in ep.describe()
    ep = Endpoint.from_connection_string("Server=m1;Database=shop;User Id=root;Pwd=x", engine="MariaDB")
    assert (ep.engine, ep.port, ep.user) == ("mysql", 3306, "root")
    assert Endpoint.from_connection_string("clickhouse://u@ch1:8123/dw").engine == "clickhouse"
    with pytest.raises(Exception, match="Colour"):
        Endpoint.from_connection_string("Host=a;Colour=blue;Password=hush", engine="PostgreSQL")


# --- the contract's example, in phases, then rolled back on request --------------------------
def test_concurrent_index_in_phases_then_rollback_on_request(replica_pair):
    name = f"add_users_email_index_{uuid.uuid4().hex[:6]}"
    state, report = _run(migration_name=name, script=INDEX_SCRIPT, rollback_script=INDEX_ROLLBACK,
                         phases=_phases(replica_pair))
    assert state.is_completed(), report
    assert [p["name"] for p in report["phases"]] == ["replica-1", "master"]
    assert all(p["status"] == "applied" for p in report["phases"])
    assert set(report["phases"][1]["after"]) == {"avgQueryLatencyMs", "p99QueryLatencyMs", "replicationLagSeconds"}
    for url in (replica_pair.subscriber, replica_pair.publisher):
        assert _index_exists(url, "idx_users_email")
        assert _history(url, name)[0][:3] == ("applied", "replica-1" if url == replica_pair.subscriber else "master",
                                              report["execution_id"])
    # applying the same migration again is refused (409 in the API)
    state, again = _run(migration_name=name, script=INDEX_SCRIPT, rollback_script=INDEX_ROLLBACK,
                        phases=_phases(replica_pair))
    assert state.is_failed() and "applied already" in again["reason"]
    # the same name with another script is detected
    state, changed = _run(migration_name=name, script=INDEX_SCRIPT.replace("(email)", "(email, id)"),
                          rollback_script=INDEX_ROLLBACK, phases=_phases(replica_pair))
    assert state.is_failed() and "different script" in changed["reason"]

    result = schema_rollback(report["execution_id"], reason="Performance degradation detected", requested_by="dba")
    assert result["status"] == "RolledBack" and result["phases"] == ["master", "replica-1"]
    assert result["rollbackDuration"] > 0
    assert not _index_exists(replica_pair.subscriber, "idx_users_email")
    assert not _index_exists(replica_pair.publisher, "idx_users_email")
    assert _history(replica_pair.publisher, name)[-1][0] == "rolled_back"


def test_additive_column_subscriber_first_then_publisher_keeps_replicating(replica_pair):
    name = f"add_users_nickname_{uuid.uuid4().hex[:6]}"
    state, report = _run(migration_name=name, script="ALTER TABLE users ADD COLUMN nickname text;",
                         rollback_script="ALTER TABLE users DROP COLUMN IF EXISTS nickname;",
                         phases=_phases(replica_pair))
    assert state.is_completed(), report
    with psycopg.connect(replica_pair.publisher, autocommit=True) as c:
        c.execute("INSERT INTO users (id, email, age, nickname) VALUES (100001, 'new@example.com', 30, 'newbie')")
    replica_pair.wait_replicated("SELECT nickname FROM users WHERE id = 100001", "newbie")
    assert report["phases"][0]["after"]["replicationLagSeconds"] is not None  # the subscriber reports its lag
    schema_rollback(report["execution_id"])
    with psycopg.connect(replica_pair.publisher, autocommit=True) as c:
        c.execute("DELETE FROM users WHERE id = 100001")
    replica_pair.wait_replicated("SELECT count(*) FROM users WHERE id = 100001", 0)


def test_failure_in_phase_two_rolls_back_phase_one(replica_pair):
    """The master's table is held by a long transaction: the ALTER's lock times out (retried once),
    phase 2 fails, and phase 1 (the replica) is rolled back."""
    name = f"add_users_score_{uuid.uuid4().hex[:6]}"
    release = threading.Event()

    def hold_lock_once_replica_applied():
        # both connections open beforehand: the lock must be taken within the probes that run
        # between the replica's apply and the master's (a loaded CI machine once missed that window)
        with psycopg.connect(replica_pair.subscriber, autocommit=True) as watch, \
                psycopg.connect(replica_pair.publisher) as holder:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if watch.execute(f"SELECT to_regclass('{HISTORY_TABLE}') IS NOT NULL").fetchone()[0] and \
                        watch.execute(f"SELECT count(*) FROM {HISTORY_TABLE} WHERE migration_name = %s",
                                      [name]).fetchone()[0]:
                    break
                time.sleep(0.005)
            holder.execute("SELECT * FROM users LIMIT 1")  # a reader that never finishes
            release.wait(60)
            holder.rollback()

    holder = threading.Thread(target=hold_lock_once_replica_applied, daemon=True)
    holder.start()
    try:
        state, report = _run(migration_name=name, script="ALTER TABLE users ADD COLUMN score int;",
                             rollback_script="ALTER TABLE users DROP COLUMN IF EXISTS score;",
                             phases=_phases(replica_pair), lock_timeout_seconds=0.5, lock_retries=1,
                             probe_iterations=40)
    finally:
        release.set()
        holder.join()
    assert state.is_failed() and state.name == "RolledBack", report
    assert "phase master failed" in report["reason"] and "lock timeout" in report["reason"]
    assert [p["status"] for p in report["phases"]] == ["rolled back", "failed"]
    assert "score" not in _columns(replica_pair.subscriber, "users")
    assert "score" not in _columns(replica_pair.publisher, "users")
    action, phase, _, reason = _history(replica_pair.subscriber, name)[-1]
    assert (action, phase) == ("rolled_back", "replica-1") and "lock timeout" in reason


def test_probe_latency_regression_rolls_back_automatically(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute("CREATE TABLE events (id bigint PRIMARY KEY, k int NOT NULL, payload text)")
        c.execute("INSERT INTO events SELECT g, g, repeat('x', 40) FROM generate_series(1, 300000) g")
        c.execute("CREATE INDEX idx_events_k ON events(k)")
        c.execute("ANALYZE events")
    probe = "SELECT payload FROM events WHERE k = 123456"
    state, report = _run(migration_name="drop_events_k_index", script="DROP INDEX idx_events_k;",
                         rollback_script="CREATE INDEX idx_events_k ON events(k);",
                         phases=[{"name": "master", "endpoint": postgres_url, "probes": [probe]}])
    assert state.is_failed() and state.name == "RolledBack", report
    assert "latency increased" in report["reason"]
    assert report["phases"][0]["status"] == "rolled back"
    assert report["phases"][0]["after"]["avgQueryLatencyMs"] > report["phases"][0]["baseline"]["avgQueryLatencyMs"]
    assert _index_exists(postgres_url, "idx_events_k")
    assert _history(postgres_url, "drop_events_k_index")[-1][0] == "rolled_back"


def test_dry_run_leaves_no_trace_on_postgres(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text, age int)")
        c.execute("INSERT INTO users SELECT g, 'u' || g, g FROM generate_series(1, 500) g")

    def snapshot():
        with psycopg.connect(postgres_url, autocommit=True) as c:
            return c.execute("SELECT c.relname, c.relkind, a.attname, a.atttypid FROM pg_class c LEFT JOIN pg_attribute a "
                             "ON a.attrelid = c.oid AND a.attnum > 0 JOIN pg_namespace n ON n.oid = c.relnamespace "
                             "WHERE n.nspname = 'public' ORDER BY 1, 3").fetchall()
    before = snapshot()
    script = ("ALTER TABLE users ADD COLUMN nick text;\nCREATE TABLE audit (id int);\n"
              "ALTER TABLE users ALTER COLUMN age TYPE bigint;\nCREATE INDEX CONCURRENTLY idx_nick ON users(nick);")
    result = validate_script(postgres_url, script, "DROP INDEX CONCURRENTLY idx_nick; DROP TABLE audit; "
                             "ALTER TABLE users DROP COLUMN nick; ALTER TABLE users ALTER COLUMN age TYPE int;")
    assert result.is_valid and result.dry_run, result.errors
    assert result.risk_level == "High"  # the column type change rewrites the table
    assert any("rewrite" in w.message for w in result.warnings)
    assert "users.nick column (new)" in result.to_contract()["dependencyCheck"]["affectedObjects"]
    state, report = _run(migration_name="dry", script=script, rollback_script="SELECT 1;", dry_run=True,
                         phases=[{"name": "master", "endpoint": postgres_url}])
    assert state.is_completed() and state.name == "Validated", report
    assert snapshot() == before


def test_bad_sql_is_reported_with_line_and_column(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text)")
    result = validate_script(postgres_url, "ALTER TABLE users ADD COLUMN nick text;\n"
                                           "CREATE INDEX idx_nick ON users (nick;", "DROP INDEX idx_nick;")
    assert not result.is_valid
    error = result.to_contract()["errors"][0]
    assert (error["script"], error["line"], error["column"]) == ("migrationScript", 2, 36), error
    # what the parser cannot place, PostgreSQL's dry run places
    result = validate_script(postgres_url, "ALTER TABLE users ADD COLUMN nick text\n  CREAT INDEX i ON users(nick);")
    assert (result.errors[0].line, result.errors[0].column) == (2, 3), result.errors
    missing = validate_script(postgres_url, "SELECT 1;\nALTER TABLE nope ADD COLUMN x int;", "SELECT 1;")
    assert "'nope' does not exist" in missing.errors[0].message and missing.errors[0].line == 2
    state, report = _run(migration_name="bad", script="ALTER TABLE users ADD COLUMN nick text,,;",
                         rollback_script="SELECT 1;", phases=[{"name": "master", "endpoint": postgres_url}])
    assert state.is_failed() and "line 1, column" in report["reason"]


def test_mysql_target(mysql_url):
    ep = Endpoint.from_url(mysql_url)
    with pymysql.connect(host=ep.host, port=ep.port, user=ep.user, database=ep.database, autocommit=True) as c:
        c.cursor().execute("CREATE TABLE users (id BIGINT PRIMARY KEY, email VARCHAR(200))")
    check = validate_script(mysql_url, "ALTER TABLE users ADD COLUMN nick VARCHAR(40);\nALTER TABLE users ADD COLUMN "
                                       "nick INT;", "SELECT 1")
    assert not check.is_valid and check.errors[0].line == 2  # the scratch copy refused the second ADD
    state, report = _run(migration_name="nick", script="ALTER TABLE users ADD COLUMN nick VARCHAR(40);\n"
                         "CREATE INDEX idx_nick ON users (nick);",
                         rollback_script="DROP INDEX idx_nick ON users;\nALTER TABLE users DROP COLUMN nick;",
                         phases=[{"name": "master", "endpoint": mysql_url}])
    assert state.is_completed(), report
    with pymysql.connect(host=ep.host, port=ep.port, user=ep.user, database=ep.database) as c:
        cur = c.cursor()
        cur.execute("SHOW COLUMNS FROM users")
        assert "nick" in [r[0] for r in cur.fetchall()]
        cur.execute(f"SELECT action, phase FROM {HISTORY_TABLE}")
        assert cur.fetchall() == (("applied", "master"),)
        cur.execute("SHOW DATABASES LIKE '\\_schema\\_dryrun%'")
        assert cur.fetchall() == ()  # the dry run's scratch database is gone


def test_clickhouse_target(clickhouse_url):
    import connectors
    conn = connectors.connect(Endpoint.from_url(clickhouse_url))
    conn.execute("CREATE TABLE users (id Int64, email String) ENGINE = MergeTree ORDER BY id")
    conn.execute("INSERT INTO users VALUES (1, 'a@example.com')")
    state, report = _run(migration_name="nick", script="ALTER TABLE users ADD COLUMN nick String DEFAULT 'none';",
                         rollback_script="ALTER TABLE users DROP COLUMN nick;",
                         phases=[{"name": "master", "endpoint": clickhouse_url}])
    assert state.is_completed(), report
    conn = connectors.connect(Endpoint.from_url(clickhouse_url))
    assert conn.query("SELECT nick FROM users") == [("none",)]
    assert conn.query(f"SELECT action FROM {HISTORY_TABLE}") == [("applied",)]
    assert not [d for (d,) in conn.query("SHOW DATABASES") if d.startswith("_schema_dryrun")]
    bad = validate_script(clickhouse_url, "ALTER TABLE users ADD COLUMN x Strin;", "SELECT 1")
    assert not bad.is_valid and bad.errors[0].line == 1


# --- approvals: suspended deployment runs on the real server and worker ------------------------
def _wait(run_id, done, what: str, timeout: float = 150):
    from prefect import get_client
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            if run.state and done(run.state):
                return run
            if run.state and run.state.is_final():
                break
            time.sleep(1)
    raise AssertionError(f"flow run {run_id}: not {what} after {timeout} s; last state {run.state}")


def _waiting(key: str):
    return lambda s: s.is_paused() and s.state_details.pause_key == key


def _final(s):
    return s.is_final()


def test_approval_approved_by_another_admin_rejected_expired_and_self_approval_refused(prefect_api, postgres_db):
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    urls = [postgres_db() for _ in range(3)]
    for url in urls:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text)")

    def params(url, **extra):
        return {"migration_name": "add_nick", "script": "ALTER TABLE users ADD COLUMN nick text;",
                "rollback_script": "ALTER TABLE users DROP COLUMN nick;", "author": "dev@example.com",
                "phases": [{"name": "master", "endpoint": url}], "environment": "Production",
                "require_approval": True, "probe_iterations": 3, **extra,
                "thresholds": {"min_latency_increase_ms": 50}}  # not about probes: a busy worker must not fail it
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("schema-migration/on-demand")
        approved, rejected, expired = (
            client.create_flow_run_from_deployment(dep.id, parameters=p).id
            for p in (params(urls[0]), params(urls[1]), params(urls[2], approval_timeout_seconds=4)))
    _wait(approved, _waiting("approval-1"), "waiting for approval")
    _wait(rejected, _waiting("approval-1"), "waiting for approval")

    submit_decision(str(approved), reviewer="dev@example.com", approved=True, notes="looks fine to me")
    _wait(approved, _waiting("approval-2"), "waiting again after the self-approval")
    deadline = time.monotonic() + 30  # the run's logs reach the server in batches, after its state
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[approved])))
            if any("Self-approval refused" in log.message for log in logs) or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert any("Self-approval refused" in log.message for log in logs)
    assert "nick" not in _columns(urls[0], "users")

    submit_decision(str(approved), reviewer="admin@example.com", approved=True, notes="Reviewed and approved.")
    submit_decision(str(rejected), reviewer="admin@example.com", approved=False, notes="not during the sale")

    run = _wait(approved, _final, "finished")
    assert run.state.is_completed(), run.state
    assert "nick" in _columns(urls[0], "users")
    assert _history(urls[0], "add_nick")[0][:3] == ("applied", "master", str(approved))

    run = _wait(rejected, _final, "finished")
    assert run.state.is_cancelled() and run.state.name == "Rejected", run.state
    assert "not during the sale" in run.state.message
    assert "nick" not in _columns(urls[1], "users")

    run = _wait(expired, _final, "expired")
    assert run.state.is_failed() and "never resumed" in run.state.message, run.state
    with pytest.raises(ApprovalExpired):
        submit_decision(str(expired), reviewer="admin@example.com", approved=True)
    assert "nick" not in _columns(urls[2], "users")


def test_database_registered_from_a_connection_string_is_a_block(postgres_url):
    from blocks.resolve import resolve_endpoint
    from blocks.save import save_database_block
    ep = Endpoint.from_url(postgres_url)
    ref = save_database_block(f"schema-db-{uuid.uuid4().hex[:6]}", f"Host={ep.host};Port={ep.port};"
                              f"Database={ep.database};Username={ep.user};Password=not-needed", engine="PostgreSQL")
    assert ref.startswith("sqlalchemy-connector/")
    again = resolve_endpoint(ref)
    assert (again.host, again.port, again.database, again.secret()) == (ep.host, ep.port, ep.database, "not-needed")
    from tasks.probes import health
    assert health(ref)["isHealthy"] and health(ref)["activeConnections"] >= 1
