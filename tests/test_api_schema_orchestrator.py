"""The Schema Orchestrator contract over HTTP: a real uvicorn (api_server) on the session's real Prefect
server and worker, real PostgreSQL databases and a logical-replication pair (tests/replicas.py)."""
from __future__ import annotations

import datetime as dt
import time
import uuid

import httpx
import psycopg

from connectors.endpoint import Endpoint
from tests.replicas import replica_pair  # noqa: F401  (session fixture)

FINAL = {"Completed", "Failed", "RolledBack", "Rejected", "Cancelled"}
CALM = {"minLatencyIncreaseMs": 50}  # not about probes: a busy machine must not fail these runs
SECRET = f"Pw-{uuid.uuid4().hex}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_user(api_server, role: str, tenant: str | None = "tenant1") -> httpx.Client:
    """A new user of `role`, signed in through the contract's login."""
    username, password = unique(role.lower()), f"Pw-{uuid.uuid4().hex}"
    with api_server.admin() as admin:
        made = admin.post("/auth/users", json={"username": username, "password": password, "role": role,
                                               **({"tenant_id": tenant} if tenant else {})})
        assert made.status_code == 201, made.text
    with api_server.client() as c:
        login = c.post("/api/v1/authentication/login", json={"username": username, "password": password})
    assert login.status_code == 200 and login.json()["user"]["role"] == role, login.text
    return api_server.client(headers={"Authorization": f"Bearer {login.json()['token']}"})


def conn_string(url: str) -> str:
    """The contract's Host=...;Password=... form of a test database URL, with the secret password."""
    ep = Endpoint.from_url(url)
    return f"Host={ep.host};Port={ep.port};Database={ep.database};Username={ep.user};Password={SECRET}"


def register(c: httpx.Client, environment: str, master: str, replicas: list[str] = (), as_url: bool = False) -> dict:
    """Register a cluster; the master's connection string as a URL (with the password) when `as_url`."""
    r = c.post("/api/v1/databases", json={
        "name": unique("cluster"), "type": "PostgreSQL", "environment": environment,
        "masterConnectionString": master.replace("postgres@", f"postgres:{SECRET}@") if as_url else conn_string(master),
        "replicas": [{"replicaId": f"replica-{i + 1}", "connectionString": conn_string(u), "role": "AsyncReplica"}
                     for i, u in enumerate(replicas)]})
    assert r.status_code == 201, r.text
    return r.json()


def create(c: httpx.Client, db: dict, script: str, rollback: str, **extra) -> httpx.Response:
    return c.post("/api/v1/migrations", json={"name": unique("mig"), "targetDatabaseId": db["databaseId"],
                                              "migrationScript": script, "rollbackScript": rollback, **extra})


def created(c: httpx.Client, db: dict, script: str, rollback: str, **extra) -> dict:
    r = create(c, db, script, rollback, **extra)
    assert r.status_code == 201, r.text
    return r.json()


def execute(c: httpx.Client, migration: dict, **body) -> httpx.Response:
    return c.post(f"/api/v1/migrations/{migration['migrationId']}/execute", json={"thresholds": CALM, **body})


def wait_for(c: httpx.Client, migration_id: str, execution_id: str, wanted: set[str], timeout: float = 150) -> dict:
    deadline, body = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        r = c.get(f"/api/v1/migrations/{migration_id}/executions/{execution_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in wanted:
            return body
        assert body["status"] not in FINAL, body
        time.sleep(1)
    raise AssertionError(f"execution not {wanted} after {timeout} s: {body}")


def error_of(r: httpx.Response) -> dict:
    return r.json()["error"]


def one(url: str, sql: str, params=()):
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(sql, params or None).fetchone()
    return row[0] if row else None


def columns(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as c:
        return {r[0] for r in c.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'users'")}


def users_db(postgres_db) -> str:
    url = postgres_db()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text, age int, nick text, score int)")
        c.execute("INSERT INTO users SELECT g, 'u' || g || '@example.com', g % 90, 'n' || g, g FROM generate_series(1, 500) g")
    return url


def test_contract_example_in_phases_over_replicas_then_rolled_back(api_server, prefect_api, replica_pair):
    index = f"idx_users_email_{uuid.uuid4().hex[:6]}"
    developer, dba = make_user(api_server, "Developer"), make_user(api_server, "DBA")
    seen: list[str] = []
    with developer, dba:
        db = register(dba, "Production", replica_pair.publisher, [replica_pair.subscriber])
        seen.append(str(db))
        assert db["health"]["isHealthy"] and db["health"]["activeConnections"] >= 1, db
        assert db["health"]["replicationLag"] is not None  # the subscriber reports how far behind it is
        assert db["masterConnectionString"].endswith("Password=********")
        migration = created(developer, db, f"CREATE INDEX CONCURRENTLY {index} ON users(email);",
                            f"DROP INDEX CONCURRENTLY IF EXISTS {index};", strategy="Phased", riskLevel="Low",
                            description="Add index on users.email for faster lookups", tags=["index", "performance"])
        assert (migration["status"], migration["riskLevel"], migration["requiresApproval"]) == ("Draft", "Low", False)

        started = execute(dba, migration, environment="Production", strategy="Phased", dryRun=False,
                          phases=["replica-1", "master"])
        assert started.status_code == 202, started.text
        assert started.json()["status"] == "Running" and started.json()["phases"] == ["replica-1", "master"]
        execution_id = started.json()["executionId"]
        done = wait_for(developer, migration["migrationId"], execution_id, {"Completed"})
        assert done["progress"] == 100 and done["currentPhase"] == "master", done
        metrics = done["performanceMetrics"]
        assert metrics["phase"] == "master" and metrics["avgQueryLatencyMs"] > 0, done
        for url in (replica_pair.subscriber, replica_pair.publisher):
            assert one(url, "SELECT to_regclass(%s) IS NOT NULL", [index])
        listed = developer.get("/api/v1/migrations", params={"status": "Completed", "database": db["name"]}).json()
        assert [m["migrationId"] for m in listed["migrations"]] == [migration["migrationId"]]
        assert listed["migrations"][0]["targetDatabase"] == db["name"]

        again = execute(dba, migration, phases=["replica-1", "master"])
        assert again.status_code == 409 and "applied already" in error_of(again)["message"], again.text

        rolled = dba.post(f"/api/v1/migrations/{migration['migrationId']}/executions/{execution_id}/rollback",
                          json={"reason": "Performance degradation detected: query latency increased by 60%"})
        assert rolled.status_code == 200, rolled.text
        body = rolled.json()
        assert body["status"] == "RolledBack" and body["rollbackDuration"] > 0 and body["phases"] == ["master", "replica-1"]
        assert dt.datetime.fromisoformat(body["rollbackCompletedAt"]) <= dt.datetime.now(dt.timezone.utc)
        for url in (replica_pair.subscriber, replica_pair.publisher):
            assert not one(url, "SELECT to_regclass(%s) IS NOT NULL", [index])
        status = developer.get(f"/api/v1/migrations/{migration['migrationId']}/executions/{execution_id}").json()
        assert status["status"] == "RolledBack"
        seen += [str(migration), started.text, str(done), str(listed), rolled.text, str(status),
                 developer.get(f"/api/v1/databases/{db['databaseId']}").text, developer.get("/api/v1/databases").text]
    from prefect import get_client
    with get_client(sync_client=True) as client:
        seen.append(str(client.read_flow_run(uuid.UUID(execution_id)).parameters))
    assert not [s for s in seen if SECRET in s]
    assert SECRET not in api_server.log.read_text()


def test_approval_by_another_admin_rejection_and_approval_before_execution(api_server, postgres_db):
    url = users_db(postgres_db)
    author, reviewer = make_user(api_server, "Admin", tenant=None), make_user(api_server, "Admin", tenant=None)
    with author, reviewer:
        db = register(author, "Production", url, as_url=True)
        assert db["masterConnectionString"].endswith(";Password=********") and db["health"]["isHealthy"], db
        drops = {column: created(author, db, f"ALTER TABLE users DROP COLUMN {column};",
                                 f"ALTER TABLE users ADD COLUMN {column} int;") for column in ("age", "nick", "score")}
        assert all(m["riskLevel"] == "High" and m["requiresApproval"] for m in drops.values())
        # approved before execution: the execution then does not wait
        early = drops["score"]["migrationId"]
        submitted = author.post(f"/api/v1/migrations/{early}/submit-approval")
        assert submitted.status_code == 201 and submitted.json()["status"] == "Pending", submitted.text
        expires = dt.datetime.fromisoformat(submitted.json()["expiresAt"])
        assert dt.timedelta(days=6, hours=23) < expires - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(days=7)
        assert reviewer.post(f"/api/v1/migrations/{early}/approve", json={"notes": "fine"}).json()["status"] == "Approved"
        runs = {}
        for column, migration in drops.items():
            r = execute(author, migration, environment="Production")
            assert r.status_code == 202, r.text
            runs[column] = (migration["migrationId"], r.json()["executionId"])
            assert r.json()["status"] == ("Running" if column == "score" else "PendingApproval")
        for column in ("age", "nick"):
            wait_for(author, *runs[column], {"PendingApproval"})
        assert author.post(f"/api/v1/migrations/{runs['age'][0]}/submit-approval").status_code == 409
        own = author.post(f"/api/v1/migrations/{runs['age'][0]}/approve", json={"notes": "mine"})
        assert own.status_code == 403 and error_of(own)["code"] == "FORBIDDEN", own.text
        approved = reviewer.post(f"/api/v1/migrations/{runs['age'][0]}/approve",
                                 json={"notes": "Reviewed and approved. Performance impact minimal."})
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "Approved" and approved.json()["executionId"] == runs["age"][1]
        rejected = reviewer.post(f"/api/v1/migrations/{runs['nick'][0]}/reject", json={"notes": "not during the sale"})
        assert rejected.status_code == 200 and rejected.json()["status"] == "Rejected", rejected.text
        assert wait_for(author, *runs["age"], {"Completed"})["status"] == "Completed"
        outcome = wait_for(author, *runs["nick"], {"Rejected"})
        assert "not during the sale" in outcome["message"]
        wait_for(author, *runs["score"], {"Completed"})
        late = reviewer.post(f"/api/v1/migrations/{runs['nick'][0]}/approve")
        assert late.status_code == 409, late.text
    assert columns(url) == {"id", "email", "nick"}
    assert SECRET not in api_server.log.read_text()


def test_roles_tenants_validation_and_dry_run(api_server, postgres_db):
    prod_url, dev_url = users_db(postgres_db), users_db(postgres_db)
    developer, dba, viewer = (make_user(api_server, r) for r in ("Developer", "DBA", "Viewer"))
    outsider_tenant = unique("org")
    with api_server.admin() as admin:
        assert admin.post("/auth/tenants", json={"id": outsider_tenant, "name": "Other"}).status_code == 201
    outsider = make_user(api_server, "Developer", tenant=outsider_tenant)
    with developer, dba, viewer, outsider:
        refused_db = developer.post("/api/v1/databases", json={"name": "x", "type": "PostgreSQL", "environment": "Production",
                                                                "masterConnectionString": conn_string(prod_url)})
        assert refused_db.status_code == 403, refused_db.text
        prod, dev = register(dba, "Production", prod_url), register(developer, "Development", dev_url)
        on_prod = created(developer, prod, "ALTER TABLE users ADD COLUMN city text;",
                          "ALTER TABLE users DROP COLUMN city;")
        assert (on_prod["riskLevel"], on_prod["requiresApproval"]) == ("Low", False)
        assert create(dba, prod, "SELECT 1;", "SELECT 1;").status_code == 403  # Developer, Admin create
        assert create(viewer, prod, "SELECT 1;", "SELECT 1;").status_code == 403
        denied = execute(developer, on_prod)
        assert denied.status_code == 403 and error_of(denied)["code"] == "FORBIDDEN", denied.text
        assert developer.post(f"/api/v1/migrations/{on_prod['migrationId']}/approve").status_code == 403
        assert dba.post(f"/api/v1/migrations/{on_prod['migrationId']}/approve").status_code == 403
        assert developer.post(f"/api/v1/migrations/{on_prod['migrationId']}/validate",
                              json={"dryRun": True}).status_code == 403
        static = developer.post(f"/api/v1/migrations/{on_prod['migrationId']}/validate", json={"dryRun": False})
        assert static.status_code == 200 and static.json()["isValid"], static.text
        mismatch = execute(dba, on_prod, environment="Development")
        assert mismatch.status_code == 400 and error_of(mismatch)["details"][0]["field"] == "environment"
        unknown = execute(dba, on_prod, phases=["replica-7", "master"])
        assert unknown.status_code == 400 and error_of(unknown)["details"][0]["field"] == "phases"
        assert viewer.get("/api/v1/migrations").status_code == 200

        on_dev = created(developer, dev, "ALTER TABLE users ADD COLUMN city text;", "ALTER TABLE users DROP COLUMN city;")
        checked = developer.post(f"/api/v1/migrations/{on_dev['migrationId']}/validate", json={"dryRun": True})
        assert checked.status_code == 200, checked.text
        report = checked.json()
        assert report["isValid"] and report["errors"] == [] and report["estimatedDuration"] >= 1
        assert "users table" in report["dependencyCheck"]["affectedObjects"]
        dry = execute(developer, on_dev, dryRun=True)
        assert dry.status_code == 202 and dry.json()["dryRun"], dry.text
        busy = execute(developer, on_dev, dryRun=True)
        assert busy.status_code == 409 and error_of(busy)["code"] == "CONFLICT", busy.text
        validated = wait_for(developer, on_dev["migrationId"], dry.json()["executionId"], {"Completed"})
        assert validated["dryRun"] and validated["progress"] == 100
        assert "city" not in columns(dev_url)  # a dry run leaves nothing behind

        for path in (f"/api/v1/migrations/{on_dev['migrationId']}", f"/api/v1/databases/{dev['databaseId']}",
                     f"/api/v1/migrations/{on_dev['migrationId']}/executions/{dry.json()['executionId']}"):
            hidden = outsider.get(path)
            assert hidden.status_code == 404 and error_of(hidden)["code"] == "NOT_FOUND", (path, hidden.text)
        assert execute(outsider, on_dev).status_code == 404
        assert outsider.get("/api/v1/migrations").json()["total"] == 0
        assert create(outsider, dev, "SELECT 1;", "SELECT 1;").status_code == 400  # an unknown database to them


def test_bad_sql_is_400_with_line_and_column_and_create_is_limited_to_10_a_minute(api_server, postgres_db):
    developer = make_user(api_server, "Developer")
    with developer:
        db = register(developer, "QA", users_db(postgres_db))
        line_2 = "CREATE INDEX idx_nick2 ON users (nick2;"
        bad = create(developer, db, f"ALTER TABLE users ADD COLUMN nick2 text;\n{line_2}", "DROP INDEX idx_nick2;")
        assert bad.status_code == 400, bad.text
        error = error_of(bad)
        assert error["code"] == "VALIDATION_ERROR" and error["traceId"] == bad.headers["X-Request-ID"]
        assert (error["details"][0]["field"], error["details"][0]["line"], error["details"][0]["column"]) == \
            ("migrationScript", 2, line_2.index("nick2;") + len("nick2")), error  # where the parser gave up
        answers = [create(developer, db, "SELECT 1;", "SELECT 1;").status_code for _ in range(10)]
        assert answers[:9] == [201] * 9 and answers[9] == 429, answers
        limited = create(developer, db, "SELECT 1;", "SELECT 1;")
        assert limited.status_code == 429 and error_of(limited)["code"] == "RATE_LIMIT_EXCEEDED"
        assert 0 < int(limited.headers["Retry-After"]) <= 60
