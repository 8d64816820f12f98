"""Incremental runs move exactly the rows that changed, detect deletes, and can be rolled back."""
from __future__ import annotations

import psycopg
import pytest

from connectors.base import Column, TableSchema
from flows.migrate_tables import migrate_tables
from flows.rollback import rollback_migration
from tests.conftest import make_endpoint
from tests.helpers import assert_rows_equal, read_rows

ITEMS = TableSchema("items", (
    Column("id", "int64", False), Column("name", "string"), Column("price", "decimal", precision=10, scale=2),
    Column("updated_at", "timestamptz", False),
), ("id",))


def _pg(url):
    return psycopg.connect(url, autocommit=True)


def _source(url: str, rows: int) -> None:
    with _pg(url) as c:
        c.execute("CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(10,2), updated_at timestamptz NOT NULL)")
        c.execute("INSERT INTO items SELECT g, 'item ' || g, g * 1.25, timestamptz '2026-01-01' + g * interval '1 second' "
                  "FROM generate_series(1, %s) g", [rows])


def _run(source, dest, **kw):
    return migrate_tables(source=source, destination=dest, tables=["items"], mode="incremental",
                          watermark_column="updated_at", detect_deletes=True, chunk_rows=400, **kw)


@pytest.mark.parametrize("dst", ["postgres", "mysql", "sqlite", "clickhouse"])
def test_second_run_moves_only_changes_and_rollback_restores(request, postgres_url, dst):
    destination = make_endpoint(request, dst)
    _source(postgres_url, 1000)

    first = _run(postgres_url, destination)
    assert first["tables"][0]["rows"] == 1000
    assert_rows_equal(ITEMS, read_rows(postgres_url, ITEMS), read_rows(destination, ITEMS))

    unchanged = _run(postgres_url, destination)
    assert (unchanged["tables"][0]["rows"], unchanged["tables"][0]["deleted"]) == (0, 0)

    before = read_rows(destination, ITEMS)
    with _pg(postgres_url) as c:
        c.execute("INSERT INTO items SELECT g, 'new ' || g, 9.99, now() FROM generate_series(1001, 1005) g")
        c.execute("UPDATE items SET name = 'changed', updated_at = now() WHERE id IN (10, 500, 999)")
        c.execute("DELETE FROM items WHERE id IN (7, 700)")
    changed = _run(postgres_url, destination)
    assert (changed["tables"][0]["rows"], changed["tables"][0]["deleted"]) == (8, 2)
    assert_rows_equal(ITEMS, read_rows(postgres_url, ITEMS), read_rows(destination, ITEMS))

    rollback_migration(destination=destination, run_id=changed["run_id"])
    assert_rows_equal(ITEMS, before, read_rows(destination, ITEMS))
    # the rolled-back run's watermark no longer counts: the next run brings the changes again
    again = _run(postgres_url, destination)
    assert (again["tables"][0]["rows"], again["tables"][0]["deleted"]) == (8, 2)


LINES = TableSchema("order_lines", (
    Column("order_id", "int64", False), Column("line_no", "int32", False), Column("sku", "string"),
    Column("updated_at", "timestamptz", False),
), ("order_id", "line_no"))


def _lines(url: str) -> list[tuple]:
    return sorted(tuple(r.values()) for r in read_rows(url, LINES))


def _order_lines(url: str, orders: int, lines_per_order: str) -> None:
    """`orders` orders, each with `lines_per_order` (an SQL expression of the order number o) lines."""
    with _pg(url) as c:
        c.execute("CREATE TABLE order_lines (order_id bigint, line_no int, sku text, updated_at timestamptz NOT NULL, "
                  "PRIMARY KEY (order_id, line_no))")
        c.execute(f"INSERT INTO order_lines SELECT o, l, 'sku-' || o || '-' || l, timestamptz '2026-01-01' "
                  f"FROM generate_series(1, {orders}) o, generate_series(1, {lines_per_order}) l")


@pytest.mark.parametrize("dst", ["postgres", "mysql", "sqlite", "clickhouse"])
def test_composite_key_upsert_keeps_the_other_rows_of_the_same_leading_key(request, postgres_url, dst):
    """Order lines keyed by (order_id, line_no): changing or deleting one line of an order leaves its
    other lines alone, and rollback restores them all."""
    destination = make_endpoint(request, dst)
    _order_lines(postgres_url, 300, "3")
    run = dict(source=postgres_url, destination=destination, tables=["order_lines"], mode="incremental",
               watermark_column="updated_at", detect_deletes=True, chunk_rows=400)
    assert migrate_tables(**run)["tables"][0]["rows"] == 900

    before = _lines(destination)
    with _pg(postgres_url) as c:
        c.execute("UPDATE order_lines SET sku = 'changed', updated_at = now() WHERE order_id = 10 AND line_no = 2")
        c.execute("INSERT INTO order_lines VALUES (20, 4, 'added', now())")
        c.execute("DELETE FROM order_lines WHERE order_id = 30 AND line_no = 3")
    changed = migrate_tables(**run)
    assert (changed["tables"][0]["rows"], changed["tables"][0]["deleted"]) == (2, 1)
    assert _lines(destination) == _lines(postgres_url)  # lines 1 and 3 of order 10, 1-3 of 20, 1-2 of 30 kept

    rollback_migration(destination=destination, run_id=changed["run_id"])
    assert _lines(destination) == before


@pytest.mark.parametrize("dst", ["postgres", "mysql", "sqlite", "clickhouse"])
def test_composite_key_led_by_an_integer_is_copied_in_chunks_exactly(request, postgres_url, dst):
    from tasks.plan import key_chunks
    from tests.helpers import open_url
    destination = make_endpoint(request, dst)
    _order_lines(postgres_url, 1000, "1 + o % 4")
    source = open_url(postgres_url)
    chunks = key_chunks(source, source.describe("order_lines"), 400)
    source.close()
    assert len(chunks) == 7 and {c.key for c in chunks} == {"order_id"}  # 2,500 rows in ranges of order_id

    report = migrate_tables(source=postgres_url, destination=destination, tables=["order_lines"], chunk_rows=400)
    assert report["rows"] == 2500 and report["verdict"] == "verified"
    assert _lines(destination) == _lines(postgres_url)


def test_sqlite_composite_key_with_null_leading_values_loses_no_row(sqlite_db):
    """SQLite lets a composite primary key hold NULL: the first chunk also takes the NULL-keyed rows."""
    import sqlite3
    from tasks.plan import key_chunks
    from tests.helpers import open_url
    source, destination = sqlite_db(), sqlite_db()
    with sqlite3.connect(source.removeprefix("sqlite:///")) as c:
        c.execute("CREATE TABLE order_lines (order_id BIGINT, line_no INTEGER, sku TEXT, updated_at TIMESTAMP NOT NULL, "
                  "PRIMARY KEY (order_id, line_no))")
        c.executemany("INSERT INTO order_lines VALUES (?, ?, ?, '2026-01-01 00:00:00')",
                      [(o, 1, f"sku-{o}") for o in range(1, 11)] + [(None, 1, "orphan"), (None, 2, "orphan")])
    conn = open_url(source)
    chunks = key_chunks(conn, conn.describe("order_lines"), 4)
    conn.close()
    assert len(chunks) == 3 and chunks[0].nulls

    report = migrate_tables(source=source, destination=destination, tables=["order_lines"], chunk_rows=4)
    assert report["rows"] == 12 and report["verdict"] == "verified"
    rows = []
    for url in (source, destination):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as c:
            rows.append(c.execute("SELECT order_id, line_no, sku FROM order_lines ORDER BY order_id, line_no").fetchall())
    assert rows[1] == rows[0] and (None, 2, "orphan") in rows[1]


@pytest.mark.parametrize("mode", ["full", "incremental"])
def test_rows_whose_watermark_is_null_are_copied_by_a_full_copy(sqlite_db, mode):
    """A full run, and the first incremental run, copy every row; later incremental runs take rows
    changed since the watermark (a NULL watermark never is) and move nothing when nothing changed."""
    from tests.helpers import create_table
    source, dest = sqlite_db(), sqlite_db()
    schema = TableSchema("items", (Column("id", "int64", nullable=False), Column("updated_at", "int64")), ("id",))
    rows = [{"id": 1, "updated_at": 10}, {"id": 2, "updated_at": None}, {"id": 3, "updated_at": 30}]
    create_table(source, schema, rows)
    run = dict(source=source, destination=dest, tables=["items"], mode=mode, watermark_column="updated_at")
    first = migrate_tables(**run)
    assert first["rows"] == 3 and first["verdict"] == "verified"
    assert read_rows(dest, schema) == rows
    if mode == "incremental":
        assert migrate_tables(**run)["rows"] == 0


def test_a_sqlite_key_holding_null_is_replaced_and_restored_not_duplicated(sqlite_db):
    """SQLite lets a composite primary key hold NULL; the upsert and its rollback match such keys too."""
    from tests.helpers import execute_sql, open_url
    source, dest = sqlite_db(), sqlite_db()

    def source_sql(*statements: str) -> None:
        execute_sql(source, *statements)

    def dest_rows() -> list:
        conn = open_url(dest)
        try:
            return conn.query("SELECT a, b, v FROM pairs ORDER BY a, b")
        finally:
            conn.close()

    source_sql("CREATE TABLE pairs (a INTEGER, b INTEGER, v TEXT, updated_at INTEGER, PRIMARY KEY (a, b))",
               "INSERT INTO pairs VALUES (1, NULL, 'old', 1), (1, 2, 'x', 1)")
    run = dict(source=source, destination=dest, tables=["pairs"], mode="incremental", watermark_column="updated_at")
    migrate_tables(**run)
    before = dest_rows()
    assert before == [(1, None, "old"), (1, 2, "x")]
    source_sql("UPDATE pairs SET v = 'new', updated_at = 2 WHERE b IS NULL")
    second = migrate_tables(**run)
    assert second["rows"] == 1 and dest_rows() == [(1, None, "new"), (1, 2, "x")]
    rollback_migration(destination=dest, run_id=second["run_id"])
    assert dest_rows() == before
