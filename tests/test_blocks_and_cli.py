"""Credentials live in Prefect blocks and never show up in flow-run parameters or logs; the CLI works."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pymysql
from prefect import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.settings import PREFECT_API_URL
from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector

from blocks import ClickHouseEndpoint
from flows.migrate_tables import migrate_tables
from tests.helpers import create_table, read_rows, assert_rows_equal
from connectors.base import Column, TableSchema

PEOPLE = TableSchema("people", (Column("id", "int64", False), Column("name", "string")), ("id",))


def _flow_run_text(run_id: str) -> str:
    async def read():
        async with get_client() as client:
            run = await client.read_flow_run(run_id)
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            return repr(run.parameters) + "\n".join(l.message for l in logs)
    return asyncio.run(read())


def test_migration_between_blocks_keeps_password_out_of_parameters_and_logs(mysql_user_with_password, tmp_path):
    url, user, password = mysql_user_with_password
    host_port, database = url.split("@", 1)[1].split("/", 1)
    host, port = host_port.split(":")
    SqlAlchemyConnector(connection_info=ConnectionComponents(
        driver="mysql+pymysql", username=user, password=password, host=host, port=int(port), database=database,
    )).save("ma-test-mysql", overwrite=True)
    ClickHouseEndpoint(path=str(tmp_path / "chdb")).save("ma-test-warehouse", overwrite=True)
    rows = [{"id": i, "name": f"person {i}"} for i in range(1, 101)]
    conn = pymysql.connect(host=host, port=int(port), user=user, password=password, database=database)
    conn.close()  # the user really can log in with that password
    create_table(f"mysql://root@{host_port}/{database}", PEOPLE, rows)

    report = migrate_tables(source="sqlalchemy-connector/ma-test-mysql", destination="clickhouse-endpoint/ma-test-warehouse")

    assert report["rows"] == 100
    assert_rows_equal(PEOPLE, rows, read_rows(f"chdb://{tmp_path / 'chdb'}", PEOPLE))
    text = _flow_run_text(report["run_id"])
    assert "sqlalchemy-connector/ma-test-mysql" in text
    assert password not in text


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    exe = os.path.join(os.path.dirname(sys.executable), "migration-assistant")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}  # the tests' Prefect server
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def test_cli_test_connection_lists_tables(sqlite_url):
    create_table(sqlite_url, PEOPLE, [{"id": 1, "name": "x"}])
    done = _cli("test-connection", sqlite_url, "--write")
    assert done.returncode == 0, done.stderr
    assert "1 table(s): people" in done.stdout


def test_cli_test_connection_refused_endpoint_exits_2():
    done = _cli("test-connection", "postgresql://postgres@127.0.0.1:1/none")
    assert done.returncode == 2
    assert "connect failed" in done.stderr


def test_cli_run_yaml_then_rollback(tmp_path, sqlite_url, clickhouse_url):
    create_table(sqlite_url, PEOPLE, [{"id": i, "name": f"n{i}"} for i in range(1, 51)])
    cfg = tmp_path / "m.yaml"
    cfg.write_text(f"source: {sqlite_url}\ndestination: {clickhouse_url}\ntables: [people]\n")
    done = _cli("run", str(cfg), "--json")
    assert done.returncode == 0, done.stderr
    import json
    report = json.loads(done.stdout)
    assert report["verdict"] == "verified" and report["rows"] == 50
    undone = _cli("rollback", clickhouse_url, report["run_id"])
    assert undone.returncode == 0, undone.stderr
    assert "restored people" in undone.stdout


def test_cli_demo_small(tmp_path):
    done = _cli("demo", "--orders", "20000", "--workdir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "orders" in done.stdout and "verified" in done.stdout


def test_blocks_saved_from_yaml_and_environment(tmp_path, monkeypatch, postgres_url, sqlite_url):
    from blocks.resolve import resolve_endpoint
    from prefect.blocks.core import Block
    secret = "Pg-Secret-Not-In-The-File"
    monkeypatch.setenv("MA_TEST_SOURCE_URL", postgres_url.replace("postgres@", f"postgres:{secret}@"))
    spec = tmp_path / "endpoints.yaml"
    spec.write_text(f"endpoints:\n  ma-src:\n    url_env: MA_TEST_SOURCE_URL\n"
                    f"  ma-dw:\n    engine: clickhouse\n    path: {tmp_path / 'dw'}\n")
    done = _cli("blocks", "save", str(spec))
    assert done.returncode == 0, done.stderr
    assert "saved sqlalchemy-connector/ma-src" in done.stdout and "saved clickhouse-endpoint/ma-dw" in done.stdout
    assert secret not in done.stdout + done.stderr
    assert resolve_endpoint("sqlalchemy-connector/ma-src").secret() == secret
    assert secret not in repr(Block.load("sqlalchemy-connector/ma-src").model_dump())  # stored as SecretStr
    create_table(postgres_url, PEOPLE, [{"id": 1, "name": "via blocks"}])
    report = migrate_tables(source="sqlalchemy-connector/ma-src", destination="clickhouse-endpoint/ma-dw")
    assert report["rows"] == 1
