"""PostgreSQL and ClickHouse destinations hash staged rows where they are; the copy computes the same
hash over the Arrow batches it extracted. Equal for every type and every source engine, different for
any change."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from connectors.base import Column, RowFilter, TableSchema
from connectors.canonical import Checksum
from flows.migrate_tables import migrate_tables
from tasks.plan import destination_schema
from tasks.prepare import plan_table
from tests.conftest import ENGINES, make_endpoint
from tests.helpers import create_table, open_url, read_rows
from tests.test_type_matrix import MATRIX, ROWS

IN_PLACE = ("postgres", "clickhouse")
# documents as jsonb prints them: the text a source sends then equals the text PostgreSQL hashes
JSONB_TEXT = ['{"a": [1, 2.5, "x"], "b": 1, "nested": {"k": null}}', "[]", '"just a string"', None, '{"k": "\\n"}']
SOURCE_ROWS = [{**row, "j": doc} for row, doc in zip(ROWS, JSONB_TEXT)]
# where the source holds them (MySQL has no NaN or infinity, SQLite no -0.0)
FLOATS = [(float("nan"), -0.0), (float("inf"), 0.0), (float("-inf"), -1e-300), (None, float("nan")), (-0.0, 1.5)]
SPECIAL_FLOAT_ROWS = [{**row, "f32": f32, "f64": f64} for row, (f32, f64) in zip(SOURCE_ROWS, FLOATS)]


def _in_place_and_extracted(source_url: str, dest_url: str) -> tuple[Checksum, Checksum]:
    """The destination's in-place checksum of the migrated table, and the same hash computed the way
    the copy computes it: over the batches the source connector reads."""
    source, dest = open_url(source_url), open_url(dest_url)
    try:
        schema = source.describe(MATRIX.name)
        dest_schema, _ = destination_schema(schema, dest, [])
        assert dest.hashes_in_place(dest_schema)
        extracted = Checksum()
        for batch in source.read_batches(schema, RowFilter()):
            extracted.add_hashes(dest.in_place_row_hashes(batch, dest_schema))
        return dest.in_place_checksum(dest_schema, RowFilter()), extracted
    finally:
        source.close()
        dest.close()


@pytest.mark.parametrize("dst", IN_PLACE)
@pytest.mark.parametrize("src", ENGINES)
def test_in_place_checksum_equals_the_hash_of_what_the_source_sent(request, src, dst):
    source, dest = make_endpoint(request, src), make_endpoint(request, dst)
    create_table(source, MATRIX, SPECIAL_FLOAT_ROWS if src in ("postgres", "clickhouse") else SOURCE_ROWS)
    migrate_tables(source=source, destination=dest, tables=[MATRIX.name], chunk_rows=2)

    in_place, extracted = _in_place_and_extracted(source, dest)

    assert in_place.rows == len(SOURCE_ROWS)
    assert in_place == extracted


# column -> (row, new value as PostgreSQL SQL, as ClickHouse SQL when it differs)
CHANGES = {
    "i64": (2, "i64 - 1"),
    "dec": (2, "dec + 0.0000000001", "dec + toDecimal128('0.0000000001', 10)"),
    "f64": (1, "0.0"),  # the row's -0.0 becomes +0.0
    "txt": (3, "NULL"),  # was the empty string
    "ch": (5, "'x'"),  # was '  x': trailing spaces do not count in char, leading ones do
    "tz": (2, "tz + interval '1 microsecond'", "tz + toIntervalMicrosecond(1)"),
    "d": (1, "d + 1"),
    "j": (5, """'{"k": "\\\\n "}'"""),
    "b": (2, "'\\x00'::bytea", "unhex('00')"),
    "order": (1, "NOT {order}"),
}


def _change(url: str, column: str) -> None:
    row, postgres, *clickhouse = CHANGES[column]
    conn = open_url(url)
    try:
        value = clickhouse[0] if clickhouse and conn.engine == "clickhouse" else postgres
        _update(conn, column, value.replace("{order}", conn.q("order")), row)
    finally:
        conn.close()


def _update(conn, column: str, value: str, row: int) -> None:
    if conn.engine == "clickhouse":
        conn.execute(f"ALTER TABLE {conn.q(MATRIX.name)} UPDATE {conn.q(column)} = {value} WHERE id = {row} "
                     "SETTINGS mutations_sync = 2")
    else:
        conn.execute(f"UPDATE {conn.q(MATRIX.name)} SET {conn.q(column)} = {value} WHERE id = {row}")


@pytest.mark.parametrize("dst", IN_PLACE)
@pytest.mark.parametrize("column", list(CHANGES))
def test_one_changed_value_changes_the_in_place_checksum(request, postgres_url, dst, column):
    dest = make_endpoint(request, dst)
    create_table(postgres_url, MATRIX, SPECIAL_FLOAT_ROWS)
    migrate_tables(source=postgres_url, destination=dest, tables=[MATRIX.name])
    before, extracted = _in_place_and_extracted(postgres_url, dest)
    assert before == extracted

    _change(dest, column)
    after, _ = _in_place_and_extracted(postgres_url, dest)

    assert after.rows == before.rows and after != before


@pytest.mark.parametrize("dst", IN_PLACE)
def test_values_traded_between_rows_change_the_in_place_checksum(request, sqlite_url, dst):
    dest = make_endpoint(request, dst)
    create_table(sqlite_url, MATRIX, SOURCE_ROWS)
    migrate_tables(source=sqlite_url, destination=dest, tables=[MATRIX.name])
    before, _ = _in_place_and_extracted(sqlite_url, dest)

    conn = open_url(dest)  # rows 1 and 2 trade their i32 values
    try:
        first, second = (conn.query(f"SELECT i32 FROM {conn.q(MATRIX.name)} WHERE id = {row}")[0][0] for row in (1, 2))
        _update(conn, "i32", str(second), 1)
        _update(conn, "i32", str(first), 2)
    finally:
        conn.close()
    after, _ = _in_place_and_extracted(sqlite_url, dest)

    assert after.rows == before.rows and after != before


@pytest.mark.parametrize("dst", IN_PLACE)
def test_an_existing_target_of_other_column_types_still_verifies(request, sqlite_url, dst):
    """The staging table copies the existing target's types (a wider decimal, a timestamp without
    time zone): the in-place hash of the destination's types would not apply, and verify still passes."""
    dest = make_endpoint(request, dst)
    schema = TableSchema("events", (Column("id", "int64", False), Column("at", "timestamptz"),
                                    Column("amount", "decimal", precision=12, scale=2)), ("id",))
    rows = [{"id": i, "at": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=i),
             "amount": Decimal(i) / 4} for i in range(1, 101)]
    create_table(sqlite_url, schema, rows)
    existing = TableSchema("events", (Column("id", "int64", False), Column("at", "timestamp"),
                                      Column("amount", "decimal", precision=14, scale=4)), ("id",))
    create_table(dest, existing, [])

    report = migrate_tables(source=sqlite_url, destination=dest, tables=["events"])

    assert report["verdict"] == "verified"
    assert [r["amount"] for r in read_rows(dest, schema)] == [r["amount"] for r in rows]


@pytest.mark.parametrize("dst", IN_PLACE)
def test_a_table_a_previous_run_created_is_verified_in_place_again(request, mysql_url, dst):
    dest = make_endpoint(request, dst)
    create_table(mysql_url, MATRIX, SOURCE_ROWS)
    migrate_tables(source=mysql_url, destination=dest, tables=[MATRIX.name])

    for mode in ("full", "incremental"):
        plan = plan_table.fn(mysql_url, dest, MATRIX.name, MATRIX.name, "0123abcd", mode, None, [], 1000)
        assert plan.target_existed and plan.hashed_in_place, mode


def test_an_engine_that_cannot_hash_the_staged_types_in_place_compares_values_instead(sqlite_url, clickhouse_url, caplog):
    """A ClickHouse DateTime (seconds) reads as a timestamp like DateTime64 does, but the in-place
    hash's toUnixTimestamp64Micro does not take it: verify compares values read back instead."""
    schema = TableSchema("events", (Column("id", "int64", False), Column("at", "timestamptz")), ("id",))
    rows = [{"id": i, "at": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=i)} for i in range(1, 101)]
    create_table(sqlite_url, schema, rows)
    ch = open_url(clickhouse_url)
    try:
        ch.execute("CREATE TABLE events (id Int64, at DateTime('UTC')) ENGINE = MergeTree ORDER BY id")
    finally:
        ch.close()

    report = migrate_tables(source=sqlite_url, destination=clickhouse_url, tables=["events"])

    assert report["verdict"] == "verified"
    assert "comparing values read back instead" in caplog.text
    assert [r["at"] for r in read_rows(clickhouse_url, schema)] == [r["at"] for r in rows]
