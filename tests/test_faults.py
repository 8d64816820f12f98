"""Faults: a killed connection is retried to an exact copy; a permanent fault leaves the destination as it was."""
from __future__ import annotations

import threading
import time

import psycopg
import pymysql
import pytest

from connectors.base import LossyConversion, MigrationError
from connectors.endpoint import Endpoint
from flows.migrate_tables import migrate_tables
from flows.rollback import rollback_migration
import tasks.copy
from tasks.state import LEDGER
from tasks.verify import compare_tables
from connectors.base import Column, TableSchema
from tests.conftest import make_endpoint
from tests.helpers import create_table, list_tables, open_url, read_rows, snapshot


def _pg_source(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE events (id bigint PRIMARY KEY, kind text, amount numeric(12,2), at timestamptz, "
                  "payload jsonb)")
        c.execute("INSERT INTO events SELECT g, 'kind ' || mod(g, 17), g / 7.0, timestamptz '2025-01-01' + g * interval '1 min', "
                  "jsonb_build_object('n', g) FROM generate_series(1, %s) g", [rows])


class Killer(threading.Thread):
    """Kills the destination's loading connection the first time it sees one."""

    def __init__(self, find_and_kill):
        super().__init__(daemon=True)
        self.find_and_kill, self.killed, self.stop = find_and_kill, 0, threading.Event()

    def run(self):
        while not self.stop.is_set() and not self.killed:
            self.killed += self.find_and_kill()
            time.sleep(0.005)


def _kill_pg_copy(admin_url: str, dbname: str):
    admin = psycopg.connect(admin_url, autocommit=True)

    def kill() -> int:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
            "AND query LIKE 'COPY%%FROM STDIN%%' AND pid <> pg_backend_pid()", [dbname]).fetchall()
        return sum(1 for r in rows if r[0])
    return kill


def _kill_mysql_insert(url: str, dbname: str):
    ep = Endpoint.from_url(url)
    admin = pymysql.connect(host=ep.host, port=ep.port, user=ep.user, password=ep.secret(), autocommit=True)

    def kill() -> int:
        with admin.cursor() as cur:
            cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s AND info LIKE 'INSERT INTO%%'", [dbname])
            ids = [r[0] for r in cur.fetchall()]
            for i in ids:
                cur.execute(f"KILL CONNECTION {int(i)}")
        return len(ids)
    return kill


@pytest.mark.parametrize("dst", ["postgres", "mysql"])
def test_killed_destination_connection_still_ends_in_exact_copy(request, postgres_db, dst):
    source = postgres_db()
    destination = request.getfixturevalue(f"{dst}_db")()
    _pg_source(source, 300_000)
    dbname = destination.rsplit("/", 1)[1]
    killer = Killer(_kill_pg_copy(source, dbname) if dst == "postgres" else _kill_mysql_insert(destination, dbname))
    killer.start()
    try:
        report = migrate_tables(source=source, destination=destination, tables=["events"], chunk_rows=50_000)
    finally:
        killer.stop.set()
        killer.join()
    assert killer.killed >= 1, "the test never caught a load in flight"
    assert report["verdict"] == "verified" and report["rows"] == 300_000
    assert compare_tables(open_url(source), open_url(destination), "events") == []


READINGS = TableSchema("readings", (Column("id", "int64", False), Column("label", "string"), Column("value", "float64")), ("id",))


def _readings(url: str, label: str, value: float) -> str:
    rows = [{"id": i, "label": f"r{i}", "value": i * 0.5} for i in range(1, 2001)]
    rows[1499].update(label=label, value=value)
    create_table(url, READINGS, rows)
    return url


@pytest.mark.parametrize("src,dst,bad,message", [
    ("sqlite", "mysql", ("x", float("inf")), "holds infinity or NaN"),
    ("sqlite", "postgres", ("nul\x00char", 1.0), "NUL character"),
    ("clickhouse", "sqlite", ("x", -0.0), "-0.0"),
], ids=["inf-into-mysql", "nul-into-postgres", "negative-zero-into-sqlite"])
def test_permanent_fault_leaves_destination_as_it_was(request, src, dst, bad, message):
    source, destination = make_endpoint(request, src), make_endpoint(request, dst)
    migrate_tables(source=_readings(source, "fine", 3.0), destination=destination, tables=["readings"], chunk_rows=500)
    before = snapshot(destination)

    _readings(source, *bad)
    with pytest.raises(LossyConversion, match=message):
        migrate_tables(source=source, destination=destination, tables=["readings"], chunk_rows=500)

    assert snapshot(destination) == before


def test_failed_load_leaves_no_reader_on_the_source(request, monkeypatch):
    monkeypatch.setattr(tasks.copy, "BATCH_ROWS", 100)  # many batches a chunk: the reader is ahead when loading fails
    source, destination = make_endpoint(request, "sqlite"), make_endpoint(request, "postgres")
    _readings(source, "nul\x00char", 1.0)
    with pytest.raises(LossyConversion, match="NUL character") as failed:
        migrate_tables(source=source, destination=destination, tables=["readings"], chunk_rows=5000)
    assert not _extract_threads(), "the failed run left a thread reading the source"
    assert failed.value  # its error (and what the error refers to) is still alive here


def _extract_threads(wait: float = 2.0) -> list:
    deadline = time.monotonic() + wait
    while (alive := [t for t in threading.enumerate() if t.name == "extract"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def test_rollback_of_finished_full_run_restores_previous_table_exactly(postgres_db, clickhouse_url):
    source = postgres_db()
    _pg_source(source, 5000)
    first = migrate_tables(source=source, destination=clickhouse_url, tables=["events"], chunk_rows=1000)
    before = snapshot(clickhouse_url)
    with psycopg.connect(source, autocommit=True) as c:
        c.execute("UPDATE events SET kind = 'rewritten' WHERE mod(id, 3) = 0")
        c.execute("DELETE FROM events WHERE id > 4000")
    second = migrate_tables(source=source, destination=clickhouse_url, tables=["events"], chunk_rows=1000)
    assert snapshot(clickhouse_url) != before

    restored = rollback_migration(destination=clickhouse_url, run_id=second["run_id"])

    assert restored == ["events"]
    assert snapshot(clickhouse_url) == before
    with pytest.raises(MigrationError, match="nothing to roll back"):
        rollback_migration(destination=clickhouse_url, run_id=second["run_id"])
    assert first["run_id"] != second["run_id"]


def test_rollback_of_first_run_removes_the_table_it_created(postgres_db):
    source, destination = postgres_db(), postgres_db()
    _pg_source(source, 100)
    run = migrate_tables(source=source, destination=destination, tables=["events"])
    rollback_migration(destination=destination, run_id=run["run_id"])
    assert [t for t in list_tables(destination) if t != LEDGER] == []


@pytest.mark.parametrize("dst", ["sqlite", "clickhouse"])
def test_an_older_run_is_rolled_back_only_after_the_runs_that_followed_it(request, sqlite_url, dst):
    """Undoing run 2 while run 3 stands would put run 1's rows back under run 3's: refused, nothing changed."""
    destination = make_endpoint(request, dst)
    schema = TableSchema("items", (Column("id", "int64", nullable=False), Column("name", "string")), ("id",))
    runs, states = [], []
    for version in range(3):
        create_table(sqlite_url, schema, [{"id": i, "name": f"v{version}-{i}"} for i in range(1, 4 + version)])
        runs.append(migrate_tables(source=sqlite_url, destination=destination, tables=["items"])["run_id"])
        states.append(read_rows(destination, schema))
    with pytest.raises(MigrationError, match=f"published again by run {runs[2]}.*Nothing was rolled back"):
        rollback_migration(destination=destination, run_id=runs[1])
    assert read_rows(destination, schema) == states[2]
    rollback_migration(destination=destination, run_id=runs[2])
    assert read_rows(destination, schema) == states[1]
    rollback_migration(destination=destination, run_id=runs[1])
    assert read_rows(destination, schema) == states[0]


def test_a_stopped_run_is_undone_even_where_it_had_published(sqlite_db):
    """What the cancel and crash hooks do (tasks.publish.restore, by run id): tables the run already
    published go back to their state before it, and its work tables are dropped."""
    from tasks.publish import restore
    source, dest = sqlite_db(), sqlite_db()
    schema = TableSchema("items", (Column("id", "int64", nullable=False), Column("name", "string"),
                                   Column("updated_at", "int64")), ("id",))
    run = dict(source=source, destination=dest, tables=["items"], mode="incremental", watermark_column="updated_at")
    create_table(source, schema, [{"id": i, "name": f"n{i}", "updated_at": 1} for i in range(1, 6)])
    migrate_tables(**run)
    before = read_rows(dest, schema)
    create_table(source, schema, [{"id": i, "name": f"m{i}", "updated_at": 2 if i % 2 else 1} for i in range(1, 9)])
    second = migrate_tables(**run)
    assert second["rows"] == 4 and read_rows(dest, schema) != before  # ids 1, 3, 5, 7 changed since the watermark

    restore(dest, second["run_id"])

    assert read_rows(dest, schema) == before
    assert sorted(list_tables(dest)) == sorted(["items", LEDGER])


def test_tables_whose_long_names_differ_only_at_the_end_move_in_one_run(sqlite_db):
    """Work-table names are cut to fit 63 characters; two names alike for 60 must not share a staging table."""
    source, dest = sqlite_db(), sqlite_db()
    names = ["orders_archive_of_the_northern_region_warehouse_before_migration_" + tail for tail in ("a", "b")]
    schemas = [TableSchema(n, (Column("id", "int64", nullable=False), Column("v", "string")), ("id",)) for n in names]
    for i, schema in enumerate(schemas):
        create_table(source, schema, [{"id": k, "v": f"{schema.name[-1]}{k}"} for k in range(1, 11 + i)])
    report = migrate_tables(source=source, destination=dest, tables=names)
    assert report["rows"] == 21 and report["verdict"] == "verified"
    for schema in schemas:
        assert read_rows(dest, schema) == read_rows(source, schema)
