"""Test helpers: build source tables through a connector, read tables back, compare values."""
from __future__ import annotations

import json
import math
from decimal import Decimal

import pyarrow as pa

import connectors
from blocks.resolve import resolve_endpoint
from connectors.base import RowFilter, TableSchema
from connectors.canonical import arrow_schema


def open_url(url: str):
    return connectors.connect(resolve_endpoint(url))


def create_table(url: str, schema: TableSchema, rows: list[dict]) -> None:
    conn = open_url(url)
    try:
        conn.drop_table(schema.name)
        conn.create_table(schema)
    finally:
        conn.close()
    insert_rows(url, schema, rows)


def insert_rows(url: str, schema: TableSchema, rows: list[dict]) -> None:
    """Rows into an existing table, through the engine's own loader."""
    if not rows:
        return
    conn = open_url(url)
    try:
        conn.write_batch(schema, pa.RecordBatch.from_pylist(rows, schema=arrow_schema(schema)))
    finally:
        conn.close()


def execute_sql(url: str, *statements: str) -> None:
    conn = open_url(url)
    try:
        for s in statements:
            conn.execute(s)
    finally:
        conn.close()


def snapshot(url: str) -> dict:
    """Every table of a destination (but our ledger) with all its rows: what "as it was" compares."""
    from tasks.state import LEDGER
    conn = open_url(url)
    try:
        return {t: sorted(map(tuple, conn.query(f"SELECT * FROM {conn.q(t)}"))) for t in conn.list_tables() if t != LEDGER}
    finally:
        conn.close()


def read_rows(url: str, schema: TableSchema, table: str | None = None) -> list[dict]:
    """Rows of `table` read as `schema`'s logical types, sorted by the first column."""
    conn = open_url(url)
    try:
        batches = list(conn.read_batches(schema.renamed(table or schema.name), RowFilter()))
    finally:
        conn.close()
    rows = [r for b in batches for r in b.to_pylist()]
    return sorted(rows, key=lambda r: r[schema.columns[0].name])


def same_value(kind: str, a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if kind in ("float32", "float64"):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if kind == "json":
        return json.loads(a) == json.loads(b)
    if kind == "char":
        return a.rstrip(" ") == b.rstrip(" ")
    if kind == "decimal":
        return Decimal(a) == Decimal(b)
    return a == b


def assert_rows_equal(schema: TableSchema, expected: list[dict], actual: list[dict]) -> None:
    key = schema.columns[0].name
    want, got = [r[key] for r in expected], [r[key] for r in actual]
    assert sorted(want) == sorted(got), (
        f"keys differ: missing {sorted(set(want) - set(got))[:20]}, unexpected {sorted(set(got) - set(want))[:20]}, "
        f"{len(got)} rows arrived, {len(want)} expected")
    for e, a in zip(sorted(expected, key=lambda r: r[key]), actual):
        for col in schema.columns:
            assert same_value(col.type, e[col.name], a[col.name]), (
                f"row {e[key]}, column {col.name} ({col.describe()}): expected {e[col.name]!r}, got {a[col.name]!r}")


def table_exists(url: str, table: str) -> bool:
    conn = open_url(url)
    try:
        return conn.table_exists(table)
    finally:
        conn.close()


def list_tables(url: str) -> list[str]:
    conn = open_url(url)
    try:
        return conn.list_tables()
    finally:
        conn.close()
