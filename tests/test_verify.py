"""Verification finds a single changed value among a million rows and names the row and column."""
from __future__ import annotations

import re

import psycopg
import pytest

from connectors.base import VerificationFailed
from flows.migrate_tables import migrate_tables
from tasks import verify
from tasks.state import LEDGER
from tasks.verify import compare_tables
from tests.helpers import list_tables, open_url

ROWS = 1_000_000
CORRUPTOR = """
CREATE FUNCTION corrupt_one_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.id = 777777 THEN NEW.amount := NEW.amount + 0.01; END IF; RETURN NEW; END $$;
CREATE FUNCTION attach_corruptor() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE TABLE' LOOP
    IF r.object_identity LIKE '%__stage_%' THEN
      EXECUTE format('CREATE TRIGGER corrupt BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION corrupt_one_row()',
                     r.object_identity);
    END IF;
  END LOOP;
END $$;
CREATE EVENT TRIGGER corruptor ON ddl_command_end WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION attach_corruptor();
"""


@pytest.fixture
def million_rows(postgres_db):
    url = postgres_db()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE sales (id bigint PRIMARY KEY, region text, amount numeric(12,2), at timestamptz)")
        c.execute("INSERT INTO sales SELECT g, 'region ' || mod(g, 50), mod(g, 100000) / 100.0, "
                  "timestamptz '2024-01-01' + g * interval '1 second' FROM generate_series(1, %s) g", [ROWS])
    return url


def test_flow_verify_catches_one_changed_value_in_a_million_rows(million_rows, postgres_db):
    destination = postgres_db()
    with psycopg.connect(destination, autocommit=True) as c:
        c.execute(CORRUPTOR)  # the destination silently alters one row as it is loaded

    with pytest.raises(VerificationFailed, match=r"table sales: chunk id >= \d+ differs: .*id 777777 \(columns amount\)"):
        migrate_tables(source=million_rows, destination=destination, tables=["sales"])

    assert [t for t in list_tables(destination) if t != LEDGER] == []  # nothing published, staging dropped


def test_verify_in_place_catches_one_changed_value_in_a_million_rows(mysql_db, postgres_db):
    """MySQL to PostgreSQL: the destination hashes the staged rows in SQL (tasks/plan.py: hashed_in_place)."""
    source, destination = mysql_db(), postgres_db()
    mysql = open_url(source)
    mysql.execute("CREATE TABLE digits (n int)")
    mysql.execute("INSERT INTO digits VALUES " + ", ".join(f"({n})" for n in range(1000)))
    mysql.execute("CREATE TABLE sales (id bigint PRIMARY KEY, region text, amount decimal(12,2), at timestamp(6))")
    mysql.execute("INSERT INTO sales SELECT a.n * 1000 + b.n + 1, CONCAT('region ', b.n % 50), "
                  "(a.n * 1000 + b.n) % 100000 / 100, TIMESTAMP '2024-01-01 00:00:00' + INTERVAL a.n * 1000 + b.n SECOND "
                  "FROM digits a CROSS JOIN digits b")
    mysql.close()
    with psycopg.connect(destination, autocommit=True) as c:
        c.execute(CORRUPTOR)

    with pytest.raises(VerificationFailed, match=r"table sales: chunk id >= \d+ differs: .*id 777777 \(columns amount\)"):
        migrate_tables(source=source, destination=destination, tables=["sales"])

    assert [t for t in list_tables(destination) if t != LEDGER] == []


def test_compare_tables_names_the_changed_row(million_rows, clickhouse_url):
    migrate_tables(source=million_rows, destination=clickhouse_url, tables=["sales"])
    source, dest = open_url(million_rows), open_url(clickhouse_url)
    assert compare_tables(source, dest, "sales") == []

    with psycopg.connect(million_rows, autocommit=True) as c:
        c.execute("UPDATE sales SET region = 'regioN 7' WHERE id = 424242")
    problems = compare_tables(source, dest, "sales")

    assert len(problems) == 1
    assert "424242 (columns region)" in problems[0]


def _copied_then_changed(source: str, dest: str, table: str, create: str, fill: str, change: str) -> list[str]:
    """Create and fill `table` on PostgreSQL `source`, migrate it to `dest`, run `change` on the
    source, and return what compare_tables finds."""
    with psycopg.connect(source, autocommit=True) as c:
        c.execute(create)
        c.execute(fill)
    migrate_tables(source=source, destination=dest, tables=[table])
    with psycopg.connect(source, autocommit=True) as c:
        c.execute(change)
    return compare_tables(open_url(source), open_url(dest), table)


def test_compare_tables_names_a_composite_key_row(postgres_url, sqlite_url):
    problems = _copied_then_changed(
        postgres_url, sqlite_url, "lines",
        "CREATE TABLE lines (order_id bigint, line_no int, sku text, PRIMARY KEY (order_id, line_no))",
        "INSERT INTO lines SELECT o, l, 'sku' FROM generate_series(1, 50) o, generate_series(1, 3) l",
        "UPDATE lines SET sku = 'other' WHERE order_id = 10 AND line_no = 2")

    assert len(problems) == 1 and "(10, 2) (columns sku)" in problems[0], problems


def test_a_widespread_difference_is_named_from_a_bounded_number_of_rows(postgres_url, sqlite_url, monkeypatch):
    monkeypatch.setattr(verify, "MAX_EXAMINED_ROWS", 100)  # as if the chunk held millions of rows

    problems = _copied_then_changed(
        postgres_url, sqlite_url, "items", "CREATE TABLE items (id bigint PRIMARY KEY, label text)",
        "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 2000) g",
        "UPDATE items SET label = upper(label) WHERE id % 5 = 0")  # 400 rows

    assert len(problems) == 1, problems
    named = [int(k) for k in re.findall(r"(\d+) \(columns label\)", problems[0])]
    assert len(named) == verify.MAX_REPORTED_KEYS and all(k % 5 == 0 for k in named), problems
    assert re.search(r"and \d+ more; more rows differ in \d+ group\(s\) of keys not compared row by row", problems[0])


def test_a_table_without_a_key_reports_the_rows_that_differ(postgres_url, sqlite_url):
    problems = _copied_then_changed(
        postgres_url, sqlite_url, "events", "CREATE TABLE events (kind text, n int)",
        "INSERT INTO events SELECT 'kind ' || mod(g, 7), g FROM generate_series(1, 3000) g",
        "UPDATE events SET n = -n WHERE n IN (10, 20)")

    assert len(problems) == 1, problems
    hashes = re.search(r"rows that differ: row (.*)$", problems[0]).group(1).split(", ")
    assert len(hashes) == 4, problems  # two rows changed: each differs on both sides
