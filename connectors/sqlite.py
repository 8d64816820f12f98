"""SQLite files: cursor reads, executemany writes. Declared column types carry the logical type."""
from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from typing import Iterator, Sequence

import pyarrow as pa

from connectors.base import (
    Column, ConnectionFailed, LossyConversion, MigrationError, RowFilter, TableNotFound, TableSchema,
    TransientError, UnsupportedType,
)
from connectors.canonical import conform, has_negative_zero
from connectors.endpoint import Endpoint
from connectors.sql import SqlConnector

_DDL = {
    "bool": "BOOLEAN", "int8": "TINYINT", "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT",
    "uint8": "SMALLINT", "uint16": "INTEGER", "uint32": "BIGINT", "float32": "FLOAT", "float64": "DOUBLE",
    "date": "DATE", "timestamp": "TIMESTAMP", "timestamptz": "TIMESTAMPTZ", "uuid": "UUID", "json": "JSON",
    "binary": "BLOB",
}
# declared type (without arguments) -> logical type
_TYPES = {
    "BOOLEAN": "bool", "BOOL": "bool", "TINYINT": "int8", "SMALLINT": "int16", "INT": "int64",
    "INTEGER": "int64", "BIGINT": "int64", "MEDIUMINT": "int32", "FLOAT": "float32", "REAL": "float64",
    "DOUBLE": "float64", "DOUBLE PRECISION": "float64", "TEXT": "string", "CLOB": "string", "DATE": "date",
    "DATETIME": "timestamp", "TIMESTAMP": "timestamp", "TIMESTAMPTZ": "timestamptz",
    "TIMESTAMP WITH TIME ZONE": "timestamptz", "UUID": "uuid", "JSON": "json", "JSONB": "json", "BLOB": "binary",
}


class SQLiteConnector(SqlConnector):
    engine = "sqlite"
    param = "?"

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        path = endpoint.path or ":memory:"
        if path != ":memory:" and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise ConnectionFailed(f"{endpoint.label}: folder of SQLite file {path!r} does not exist")
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        except sqlite3.Error as exc:
            raise ConnectionFailed(f"{endpoint.label}: cannot open {path!r}: {exc}") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    @contextlib.contextmanager
    def errors(self, doing: str):
        try:
            yield
        except MigrationError:
            raise
        except sqlite3.OperationalError as exc:
            msg = f"{self.endpoint.label}: {doing} failed: {exc}"
            if "locked" in str(exc) or "busy" in str(exc):
                raise TransientError(msg) from None
            if "no such table" in str(exc):
                raise TableNotFound(msg) from None
            raise MigrationError(msg) from None
        except sqlite3.Error as exc:
            raise MigrationError(f"{self.endpoint.label}: {doing} failed: {exc}") from None

    def execute(self, sql: str, params: Sequence = ()) -> None:
        with self.errors("statement"):
            self.conn.execute(sql, tuple(params))

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self.errors("query"):
            return self.conn.execute(sql, tuple(params)).fetchall()

    def transaction(self, statements: Sequence[str]) -> None:
        with self.errors("transaction"):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for s in statements:
                    self.conn.execute(s)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    # --- introspection --------------------------------------------------------
    def orders_bytewise(self, table: str | None, column: Column) -> bool:
        """A column of TEXT affinity in a UTF-8 database compares with the BINARY collation unless the
        table declares another. (UUIDs are text here, of any case and form; other engines parse them.)"""
        if column.type != "string" or self.query("PRAGMA encoding")[0][0] != "UTF-8":
            return False
        if table is None:
            return True
        ddl = self.query("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [table])
        declared = {r[1]: (r[2] or "").upper() for r in self.query(f"PRAGMA table_info({self.q(table)})")}
        text_affinity = any(t in declared.get(column.name, "") for t in ("CHAR", "CLOB", "TEXT"))
        return bool(ddl) and text_affinity and "COLLATE" not in ddl[0][0].upper()

    def check_access(self, write: bool) -> None:
        self.query("SELECT count(*) FROM sqlite_master")
        if write and self.endpoint.path not in (None, ":memory:"):
            target = self.endpoint.path if os.path.exists(self.endpoint.path) else os.path.dirname(os.path.abspath(self.endpoint.path))
            if not os.access(target, os.W_OK):
                raise MigrationError(f"{self.endpoint.label}: {target!r} is not writable")

    def table_size(self, table: str) -> tuple[int, int | None]:
        """Rows counted exactly (SQLite keeps no estimate); bytes when SQLite was built with dbstat."""
        rows = self.count_rows(table)
        try:
            size = self.query("SELECT SUM(pgsize) FROM dbstat WHERE name = ?", [table])[0][0]
        except MigrationError:
            size = None
        return rows, None if size is None else int(size)

    def list_tables(self) -> list[str]:
        return [r[0] for r in self.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]

    def table_exists(self, table: str) -> bool:
        return bool(self.query("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", [table])[0][0])

    def describe(self, table: str) -> TableSchema:
        if not self.table_exists(table):
            raise TableNotFound(f"{self.endpoint.label}: table {table!r} does not exist")
        rows = self.query(f"PRAGMA table_info({self.q(table)})")
        pk = tuple(r[1] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5]))
        # only a rowid alias (a lone INTEGER PRIMARY KEY) is NOT NULL by being a key: SQLite lets
        # other primary-key columns hold NULL unless they say NOT NULL
        rowid = {r[1] for r in rows if r[5] and len(pk) == 1 and (r[2] or "").strip().upper() == "INTEGER"}
        cols = tuple(self._column(table, name, decl, not notnull and name not in rowid)
                     for _, name, decl, notnull, _, _ in rows)
        return TableSchema(table, cols, pk)

    def _column(self, table: str, name: str, declared: str, nullable: bool) -> Column:
        m = re.fullmatch(r"\s*([A-Za-z_ ]+?)\s*(?:\((\d+)\s*(?:,\s*(\d+))?\))?\s*", declared or "")
        base = m.group(1).upper() if m else ""
        args = [int(a) for a in m.groups()[1:] if a] if m else []
        if base in ("DECIMAL", "NUMERIC", "DECIMAL_TEXT"):
            return Column(name, "decimal", nullable, args[0] if args else None, args[1] if len(args) > 1 else 0)
        if base in ("VARCHAR", "CHARACTER VARYING", "NVARCHAR"):
            return Column(name, "string", nullable, length=args[0] if args else None)
        if base in ("CHAR", "CHARACTER", "NCHAR"):
            return Column(name, "char", nullable, length=args[0] if args else None)
        if base not in _TYPES:
            raise UnsupportedType(f"{self.endpoint.label}: column {table}.{name} has declared type {declared!r}, "
                                  f"which this tool cannot map; declare one of {', '.join(sorted(_TYPES))}")
        return Column(name, _TYPES[base], nullable)

    def column_ddl(self, col: Column) -> str:
        if col.type == "decimal":
            if not col.precision:
                return "TEXT"
            # NUMERIC affinity keeps only 15 significant digits; a TEXT-affinity name keeps them all
            kind = "DECIMAL" if col.precision <= 15 else "DECIMAL_TEXT"
            return f"{kind}({col.precision},{col.scale or 0})"
        if col.type == "string":
            return f"VARCHAR({col.length})" if col.length else "TEXT"
        if col.type == "char":
            return f"CHAR({col.length or 1})"
        if col.type == "uint64":
            raise LossyConversion(f"column {col.name!r}: SQLite integers stop at 2^63-1, below UInt64's maximum; "
                                  f"opt into the lossy cast 'uint64_as_decimal' to store it as DECIMAL(20,0)")
        return _DDL[col.type]

    def keys_in_sql(self, table: str, keys, select_sql: str) -> str:
        """SQLite lets a primary key column hold NULL, which IN never matches: a key holding one is
        matched with IS (checked only for such rows, the rest use IN's one-off index)."""
        t = self.q(table)
        has_null = " OR ".join(f"{t}.{self.q(k)} IS NULL" for k in keys)
        same = " AND ".join(f"m.{self.q(k)} IS {t}.{self.q(k)}" for k in keys)
        return (f"({super().keys_in_sql(table, keys, select_sql)} OR (({has_null}) AND "
                f"EXISTS (SELECT 1 FROM ({select_sql}) AS m WHERE {same})))")

    def create_table_like(self, existing: str, new: str) -> None:
        ddl = self.query("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [existing])[0][0]
        body = ddl[ddl.index("("):]
        self.execute(f"CREATE TABLE {self.q(new)} {body}")

    # --- data -----------------------------------------------------------------
    def read_batches(self, schema: TableSchema, where: RowFilter, batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        cond, params = self.filter_sql(where)
        readers = [_reader(c) for c in schema.columns]
        with self.errors(f"reading {schema.name}"):
            cur = self.conn.execute(f"SELECT {self.columns_sql(schema)} FROM {self.q(schema.name)} WHERE {cond}", params)
            while rows := cur.fetchmany(batch_rows):
                arrays = [read(vals) for read, vals in zip(readers, zip(*rows))]
                yield conform(pa.RecordBatch.from_arrays(arrays, names=schema.column_names), schema)

    def check_values(self, schema: TableSchema, batch: pa.RecordBatch) -> None:
        for col in schema.columns:
            if col.type in ("float32", "float64") and has_negative_zero(batch.column(col.name)):
                raise LossyConversion(f"column {col.name!r} holds -0.0, which SQLite stores as 0")

    def write_batch(self, schema: TableSchema, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        self.check_values(schema, batch)
        columns = [_python_values(batch.column(c.name)) for c in schema.columns]
        marks = ", ".join("?" * len(columns))
        with self.errors(f"loading {schema.name}"):
            self.conn.execute("BEGIN")
            try:
                self.conn.executemany(f"INSERT INTO {self.q(schema.name)} ({self.columns_sql(schema)}) VALUES ({marks})",
                                      zip(*columns))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def watermark_param(self, value):
        return _to_sqlite(value)


def _python_values(arr: pa.Array) -> list:
    t = arr.type
    if pa.types.is_timestamp(t):
        if t.tz:
            arr = arr.cast(pa.timestamp("us"))
            return [None if v is None else v + "+00:00" for v in arr.cast(pa.string()).to_pylist()]
        return arr.cast(pa.string()).to_pylist()
    if pa.types.is_date(t) or pa.types.is_decimal(t):
        return arr.cast(pa.string()).to_pylist()
    return arr.to_pylist()


def _to_sqlite(value):
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ") if hasattr(value, "hour") else value.isoformat()
    return value


def _as_text(values):
    return pa.array([v if v is None or isinstance(v, str) else (repr(v) if isinstance(v, float) else str(v))
                     for v in values], pa.string())


def _reader(col: Column):
    """How a column's Python values become an Arrow array that conform() can finish."""
    if col.type in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        return lambda vals: pa.array(vals, pa.int64() if col.type != "uint64" else pa.uint64())
    if col.type in ("float32", "float64"):
        return lambda vals: pa.array(vals, pa.float64())
    if col.type == "binary":
        return lambda vals: pa.array([v if v is None or isinstance(v, bytes) else str(v).encode() for v in vals], pa.binary())
    return _as_text  # decimal, text, uuid, json, date and time travel as text


