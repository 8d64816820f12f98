"""Bad input gets a clear error naming what is wrong, and nothing is written."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psycopg
import pytest

from connectors.base import ConnectionFailed, LossyConversion, MigrationError, TableNotFound, UnsupportedType
from flows.migrate_tables import migrate_tables
from migration_assistant.config import load_config
from tasks.state import LEDGER
from tests.conftest import MYSQL_URL
from tests.helpers import list_tables


def _pg_table(url: str, ddl: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(ddl)


def _nothing_written(url: str) -> bool:
    return [t for t in list_tables(url) if t != LEDGER] == []


def test_unknown_table_names_it(postgres_db):
    source, dest = postgres_db(), postgres_db()
    _pg_table(source, "CREATE TABLE real_one (id int PRIMARY KEY)")
    with pytest.raises(TableNotFound, match=r"'no_such_table' not found; available: real_one"):
        migrate_tables(source=source, destination=dest, tables=["no_such_table"])
    assert _nothing_written(dest)


def test_unreachable_host_names_the_endpoint(sqlite_url):
    with pytest.raises(ConnectionFailed, match=r"postgresql://postgres@127\.0\.0\.1:1/.*connect failed"):
        migrate_tables(source="postgresql://postgres@127.0.0.1:1/nowhere", destination=sqlite_url)


def test_wrong_password_is_refused_without_echoing_it(mysql_user_with_password, sqlite_url, monkeypatch, caplog):
    url, user, _ = mysql_user_with_password
    wrong = f"Wrong-{uuid.uuid4().hex}"
    host = url.split("@", 1)[1]
    monkeypatch.setenv("MA_TEST_DEST", f"mysql://{user}:{wrong}@{host}")
    with pytest.raises(ConnectionFailed, match=r"env:MA_TEST_DEST: connect failed.*Access denied") as err:
        migrate_tables(source=sqlite_url, destination="env:MA_TEST_DEST")
    assert wrong not in str(err.value)
    assert wrong not in caplog.text


def test_password_in_url_parameter_is_refused(sqlite_url):
    with pytest.raises(MigrationError, match="carries a password"):
        migrate_tables(source=sqlite_url, destination="postgresql://postgres:hunter2@127.0.0.1/x")


def test_unsupported_type_names_column_and_type(postgres_db):
    source, dest = postgres_db(), postgres_db()
    _pg_table(source, "CREATE TABLE shifts (id int PRIMARY KEY, length interval)")
    with pytest.raises(UnsupportedType, match=r"column shifts\.length has type interval"):
        migrate_tables(source=source, destination=dest)
    assert _nothing_written(dest)


def test_value_the_destination_cannot_hold_fails_before_loading_unless_cast_named(postgres_db, sqlite_url):
    source = postgres_db()
    _pg_table(source, "CREATE TABLE ledger (id int PRIMARY KEY, big numeric(70,2))")
    _pg_table(source, "INSERT INTO ledger VALUES (1, 12345678901234567890123456789012345678901234567890123456789012345678.91)")
    mysql = f"{MYSQL_URL.rsplit('/', 1)[0]}/test"
    with pytest.raises(LossyConversion, match=r"column 'big'.*decimal_as_text"):
        migrate_tables(source=source, destination=mysql, tables=["ledger"], target_prefix="ma_lossy_")

    report = migrate_tables(source=source, destination=sqlite_url, tables=["ledger"])
    assert report["verdict"] == "verified"  # SQLite holds 70 digits as text, no cast needed


def test_malformed_yaml_names_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: sqlite:///a.db\ndestination: [unclosed\n")
    with pytest.raises(MigrationError, match=r"not valid YAML at line 3"):
        load_config(bad)


def test_config_with_unknown_key_and_missing_watermark_lists_each(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("source: a\ndestination: b\nmode: incremental\ntabels: [x]\n")
    with pytest.raises(MigrationError) as err:
        load_config(cfg)
    assert "tabels: Extra inputs are not permitted" in str(err.value)


def test_cli_run_reports_bad_yaml_and_exits_nonzero(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: [\n")
    cli = os.path.join(os.path.dirname(sys.executable), "migration-assistant")
    done = subprocess.run([cli, "run", str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "not valid YAML at line" in done.stderr
