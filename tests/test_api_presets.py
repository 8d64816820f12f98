"""Presets, templates and POST /validate/ over REST, against a real uvicorn, Prefect server, PostgreSQL,
MariaDB and embedded ClickHouse. Validation connects for real; no password may come back or reach the log."""
from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from connectors.endpoint import Endpoint
from tests.test_api_migrations import fill_postgres, other_tenant, prefect_run, system, user  # noqa: F401

pytestmark = pytest.mark.timeout(240)
PASSWORD = f"Preset-PW-{uuid.uuid4().hex}"  # sent in configs; must never come back


def error(response) -> dict:
    return response.json()["error"]


def fields(response) -> list[str]:
    return [e["field"] for e in error(response)["details"]["validation_errors"]]


def overrides_for(source_url: str, chdb_url: str) -> dict:
    src, dst = Endpoint.from_url(source_url), Endpoint.from_url(chdb_url)
    return {"source.host": src.host, "source.port": src.port, "source.database": src.database,
            "source.password": PASSWORD, "destination.path": dst.path, "destination.database": dst.database,
            "tables": ["orders"]}


def test_presets_list_get_and_create_migration_with_dotted_overrides(api_server, prefect_stack, user, postgres_url,
                                                                     clickhouse_url):
    listed = user.get("/presets/")
    assert listed.status_code == 200
    by_id = {p["id"]: p for p in listed.json()}
    assert {"postgres-to-clickhouse", "mysql-to-postgres", "wordpress-mysql", "django-postgres"} <= set(by_id)
    assert by_id["wordpress-mysql"]["destination_types"] == ["aws-s3", "gcp-gcs", "azure-blob"]
    preset = user.get("/presets/postgres-to-clickhouse").json()
    assert preset["custom"] is False and preset["config_template"]["source"]["host"] == "{{source_host}}"
    assert user.get("/presets/no-such-preset").status_code == 404

    fill_postgres(postgres_url, "orders", rows=10)
    made = user.post("/presets/postgres-to-clickhouse/create-migration",
                     json={"overrides": overrides_for(postgres_url, clickhouse_url)})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["status"] == "created" and "postgres-to-clickhouse" in body["message"]
    status = user.get(f"/migrations/{body['session_id']}/status")
    assert status.status_code == 200 and status.json()["status"] == "pending"
    run = prefect_run(prefect_stack, body["session_id"])
    assert run.parameters["source"].startswith("sqlalchemy-connector/t-tenant1-source-")
    assert run.parameters["destination"].startswith("clickhouse-endpoint/t-tenant1-destination-")
    assert run.parameters["tables"] == ["orders"] and "preset:postgres-to-clickhouse" in run.tags
    assert PASSWORD not in json.dumps(run.parameters) and PASSWORD not in made.text


def test_create_migration_names_bad_paths_missing_variables_and_web_systems(user):
    typo = user.post("/presets/postgres-to-clickhouse/create-migration",
                     json={"overrides": {"source.hots": "db1", "source.host": "db1"}})
    assert typo.status_code == 400 and fields(typo) == ["overrides.source.hots"]
    missing = user.post("/presets/postgres-to-clickhouse/create-migration", json={"overrides": {"source.host": "db1"}})
    assert missing.status_code == 400 and error(missing)["code"] == "MISSING_VARIABLES"
    assert error(missing)["details"]["missing_variables"] == ["clickhouse_path", "source_database"]
    wrong_type = user.post("/presets/postgres-to-clickhouse/create-migration",
                           json={"variables": {"source_port": "five", "nope": 1}})
    assert wrong_type.status_code == 400 and fields(wrong_type) == ["variables.source_port", "variables.nope"]
    names = ["source_host", "source_username", "db_host", "db_username", "db_name", "s3_bucket", "aurora_cluster",
             "aurora_username"]
    web = user.post("/presets/wordpress-mysql/create-migration",
                    json={"variables": {n: "x" for n in names}, "overrides": {"destination.region": "us-west-2"}})
    assert web.status_code == 400 and error(web)["code"] == "INVALID_CONFIGURATION"
    assert fields(web) == ["source.type", "destination.type"]


def test_templates_with_variables_are_tenant_owned(api_server, prefect_stack, user, other_tenant):
    template = {"name": "PG to warehouse", "description": "nightly copy",
                "template": {"name": "{{label}} copy",
                             "source": {"type": "postgresql", "host": "{{source_host}}", "database": "{{db}}",
                                        "username": "postgres", "password": "{{source_password}}"},
                             "destination": {"type": "clickhouse", "path": "{{chdb_path}}", "database": "dw"},
                             "tables": ["orders"]},
                "variables": [{"name": "label", "type": "string", "default": "Warehouse"},
                              {"name": "source_host", "type": "string", "required": True},
                              {"name": "db", "type": "string", "required": True},
                              {"name": "source_password", "type": "secret"},
                              {"name": "chdb_path", "type": "string", "required": True}]}
    assert user.post("/templates/", json=template).status_code == 403  # Users lack presets:write
    with api_server.admin() as admin:
        tenant1 = {"X-Tenant-ID": "tenant1"}
        leaky = {**template, "template": {**template["template"], "destination": {
            "type": "clickhouse", "host": "ch", "password": "hunter2-literal"}}}
        refused = admin.post("/templates/", json=leaky, headers=tenant1)
        assert refused.status_code == 400 and "template.destination.password" in fields(refused)
        undeclared = admin.post("/templates/", json={**template, "variables": template["variables"][1:]}, headers=tenant1)
        assert undeclared.status_code == 400 and "{{label}}" in undeclared.text
        made = admin.post("/templates/", json=template, headers=tenant1)
        assert made.status_code == 201, made.text
        template_id = made.json()["id"]
        assert made.json()["tenant_id"] == "tenant1"

    assert user.get(f"/templates/{template_id}").json()["variables"][0]["default"] == "Warehouse"
    assert {"id": template_id, "custom": True}.items() <= user.get("/presets/").json()[-1].items()
    for path in (f"/templates/{template_id}", f"/presets/{template_id}"):
        assert other_tenant.get(path).status_code == 404
    assert template_id not in other_tenant.get("/presets/").text
    assert other_tenant.post(f"/presets/{template_id}/create-migration", json={}).status_code == 404

    missing = user.post(f"/presets/{template_id}/create-migration", json={"variables": {"source_host": "127.0.0.1"}})
    assert missing.status_code == 400 and error(missing)["details"]["missing_variables"] == ["chdb_path", "db"]
    made = user.post(f"/presets/{template_id}/create-migration",
                     json={"variables": {"source_host": "127.0.0.1", "db": "shop", "chdb_path": "/tmp/x",
                                         "source_password": PASSWORD}})
    assert made.status_code == 201, made.text
    run = prefect_run(prefect_stack, made.json()["session_id"])
    assert run.name == "Warehouse copy" and PASSWORD not in json.dumps(run.parameters)

    with api_server.admin() as admin:
        assert admin.delete(f"/templates/{template_id}").status_code == 204
    assert user.get(f"/templates/{template_id}").status_code == 404


def _validate(client, source: dict, destination: dict, **extra):
    r = client.post("/validate/", json={"name": "check", "source": source, "destination": destination, **extra})
    assert r.status_code == 200, r.text
    assert PASSWORD not in r.text
    return r.json()


def _check(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["check"] == name)


def test_validate_runs_real_checks(api_server, user, postgres_url, clickhouse_url, mysql_user_with_password, tmp_path):
    fill_postgres(postgres_url, "orders", rows=1234)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger (id bigint PRIMARY KEY, amount numeric)")
    source, warehouse = system(postgres_url, PASSWORD), system(clickhouse_url)

    good = _validate(user, source, warehouse, tables=["orders"])
    assert good["valid"] and good["can_proceed"] and good["checks_failed"] == 0
    assert good["checks_passed"] == good["checks_performed"] >= 8
    assert good["size"]["total_rows"] == 1234 and good["size"]["tables"][0]["rows_exact"]
    assert good["size"]["total_bytes"] > 0
    assert good["estimated_duration"].endswith("seconds") and "194,142 rows/s" in good["estimate_basis"]

    lossy = _validate(user, source, warehouse, tables=["orders", "ledger", "gone"])
    assert not lossy["can_proceed"]
    assert "'gone' not found" in _check(lossy, "source_tables")["message"]
    types = _check(lossy, "type_compatibility")
    assert types["status"] == "failed" and "'ledger'" in types["message"] and "'amount'" in types["message"]

    mysql_url, db_user, db_password = mysql_user_with_password
    mysql = {**system(mysql_url, "Wrong-" + PASSWORD), "username": db_user}
    wrong = _validate(user, mysql, warehouse)
    credentials = _check(wrong, "source_credentials")
    assert credentials["status"] == "failed" and credentials["field"] == "source.password"
    assert credentials["message"].startswith("source (mysql://") and "Access denied" in credentials["message"]
    assert _check(wrong, "source_connectivity")["status"] == "passed"
    right = _validate(user, {**mysql, "password": db_password}, warehouse)
    assert _check(right, "source_credentials")["status"] == "passed" and db_password not in json.dumps(right)

    unreachable = _validate(user, {**source, "port": 1}, warehouse)
    connectivity = _check(unreachable, "source_connectivity")
    assert connectivity["status"] == "failed" and connectivity["field"] == "source.host"
    assert _check(unreachable, "source_credentials")["status"] == "skipped" and not unreachable["valid"]

    ghost = tmp_path / "absent.sqlite"
    no_file = _validate(user, {"type": "sqlite", "path": str(ghost)}, warehouse)
    assert _check(no_file, "source_connectivity")["status"] == "failed" and not ghost.exists()

    web = _validate(user, {"type": "wordpress", "host": "old-server.com", "password": PASSWORD},
                    {"type": "aws-s3", "region": "us-east-1", "bucket": "my-new-website"})
    assert not web["can_proceed"] and [c["field"] for c in web["checks"]] == ["source.type", "destination.type"]
    assert "file/web system" in web["errors"][0]
    assert PASSWORD not in api_server.log.read_text()
