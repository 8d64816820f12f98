"""ClickHouse, over HTTP or embedded (chDB): Arrow stream reads, insert_arrow writes."""
from __future__ import annotations

import contextlib
import re
import threading
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import (
    Column, ConnectionFailed, DdlFailed, DdlLock, LossyConversion, MigrationError, RowFilter, TableNotFound, TableSchema,
    TransientError, UnsupportedType,
)
from connectors import clickhouse_hash
from connectors.canonical import Checksum, conform
from connectors.endpoint import Endpoint
from connectors.sql import SqlConnector

_TYPES = {
    "Bool": "bool", "Int8": "int8", "Int16": "int16", "Int32": "int32", "Int64": "int64", "UInt8": "uint8",
    "UInt16": "uint16", "UInt32": "uint32", "UInt64": "uint64", "Float32": "float32", "Float64": "float64",
    "String": "string", "Date": "date", "Date32": "date", "UUID": "uuid", "JSON": "json",
}
_NIL_UUID = "00000000-0000-0000-0000-000000000000"  # a table outside an Atomic database

_DDL = {
    "bool": "Bool", "int8": "Int8", "int16": "Int16", "int32": "Int32", "int64": "Int64", "uint8": "UInt8",
    "uint16": "UInt16", "uint32": "UInt32", "uint64": "UInt64", "float32": "Float32", "float64": "Float64",
    "string": "String", "char": "String", "date": "Date32", "timestamp": "DateTime64(6)",
    "timestamptz": "DateTime64(6, 'UTC')", "uuid": "UUID", "json": "String", "binary": "String",
}
# Date32 and DateTime64 cover 1900-01-01 .. 2299-12-31
_MIN_DAY, _MAX_DAY = -25567, 120529

# chDB runs one embedded engine per process, on one folder at a time: every connector to
# that folder shares one client; asking for another folder closes the first.
_EMBEDDED: dict[tuple[str, str], tuple[object, threading.RLock]] = {}
_EMBEDDED_LOCK = threading.Lock()


def _embedded_client(path: str, database: str):
    import clickhouse_connect
    with _EMBEDDED_LOCK:
        if (path, database) not in _EMBEDDED:
            for other in [k for k in _EMBEDDED if k[0] != path]:
                client, lock = _EMBEDDED.pop(other)
                with lock:
                    client.close()
            if database != "default":
                clickhouse_connect.get_client(dsn=f"chdb://{path}").command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            client = clickhouse_connect.get_client(dsn=f"chdb://{path}", database=database)
            _EMBEDDED[(path, database)] = (client, threading.RLock())
        return _EMBEDDED[(path, database)]


def close_embedded() -> None:
    """Release every embedded engine this process opened, so other processes can open the folder."""
    with _EMBEDDED_LOCK:
        for key in list(_EMBEDDED):
            client, lock = _EMBEDDED.pop(key)
            with lock:
                client.close()


def _with_timestamps(batch: pa.RecordBatch, schema: TableSchema) -> pa.RecordBatch:
    """DateTime columns (whole seconds) arrive in Arrow as uint32 seconds since 1970: as timestamps."""
    arrays = list(batch.columns)
    for i, col in enumerate(schema.columns):
        if col.type in ("timestamp", "timestamptz") and pa.types.is_unsigned_integer(arrays[i].type):
            seconds = pa.timestamp("s", "UTC" if col.type == "timestamptz" else None)
            arrays[i] = arrays[i].cast(pa.int64()).view(seconds)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


class ClickHouseConnector(SqlConnector):
    engine = "clickhouse"
    quote_char = "`"

    def __init__(self, endpoint: Endpoint):
        import clickhouse_connect
        self.endpoint = endpoint
        with self.errors("connect"):
            if endpoint.path:
                self.client, self.lock = _embedded_client(endpoint.path, endpoint.database or "default")
            else:
                self.client = clickhouse_connect.get_client(
                    host=endpoint.host, port=endpoint.port, username=endpoint.user or "default",
                    password=endpoint.secret(), database=endpoint.database or "default", secure=endpoint.secure)
                self.lock = threading.RLock()

    def close(self) -> None:
        if not self.endpoint.path:
            with contextlib.suppress(Exception):
                self.client.close()

    @contextlib.contextmanager
    def errors(self, doing: str):
        try:
            with self.lock if hasattr(self, "lock") else contextlib.nullcontext():
                yield
        except MigrationError:
            raise
        except Exception as exc:
            text = self.endpoint.redact(str(exc))
            msg = f"{self.endpoint.label}: {doing} failed: {text}"
            if doing == "connect":
                raise ConnectionFailed(msg) from None
            if "UNKNOWN_TABLE" in text or "doesn't exist" in text:
                raise TableNotFound(msg) from None
            if any(s in text for s in ("Connection", "timed out", "TIMEOUT", "NETWORK_ERROR")):
                raise TransientError(msg) from None
            raise MigrationError(msg) from None

    def execute(self, sql: str, params: Sequence = ()) -> None:
        with self.errors("statement"):
            self.client.command(sql, parameters=list(params) or None)

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self.errors("query"):
            return list(self.client.query(sql, parameters=list(params) or None).result_rows)

    def transaction(self, statements: Sequence[str]) -> None:
        for s in statements:  # no multi-statement transactions; callers order statements to be safe
            self.execute(s)

    # --- introspection --------------------------------------------------------
    def orders_bytewise(self, table: str | None, column: Column) -> bool:
        """String compares as bytes (UUID by its halves, not as its text)."""
        if column.type != "string":
            return False
        if table is None:
            return True
        rows = self.query("SELECT type FROM system.columns WHERE database = currentDatabase() AND table = %s "
                          "AND name = %s", [table, column.name])
        return bool(rows) and rows[0][0] in ("String", "LowCardinality(String)")

    def check_access(self, write: bool) -> None:
        self.query("SELECT 1")

    def list_tables(self) -> list[str]:
        return [r[0] for r in self.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND NOT is_temporary ORDER BY name")]

    def table_exists(self, table: str) -> bool:
        return bool(self.query("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = %s", [table])[0][0])

    def describe(self, table: str) -> TableSchema:
        if not self.table_exists(table):
            raise TableNotFound(f"{self.endpoint.label}: table {table!r} does not exist")
        rows = self.query("SELECT name, type, is_in_primary_key, comment FROM system.columns "
                          "WHERE database = currentDatabase() AND table = %s ORDER BY position", [table])
        cols = tuple(self._column(table, name, type_, comment) for name, type_, _, comment in rows)
        return TableSchema(table, cols, self._primary_key(table, [r[0] for r in rows if r[2]]))

    def _primary_key(self, table: str, flagged: list[str]) -> tuple[str, ...]:
        """The primary-key columns in the key's own order (chunks split on the first); in table order
        when the key holds expressions such as toDate(ts)."""
        expression = self.query("SELECT primary_key FROM system.tables WHERE database = currentDatabase() "
                                "AND name = %s", [table])[0][0]
        parts = [p.strip() for p in re.findall(r"`(?:[^`\\]|\\.)*`|[^,]+", expression) if p.strip()]
        names = [p[1:-1].replace("\\`", "`") if p.startswith("`") else p for p in parts]
        return tuple(names) if sorted(names) == sorted(flagged) else tuple(flagged)

    def _column(self, table: str, name: str, type_: str, comment: str = "") -> Column:
        nullable = type_.startswith("Nullable(")
        if m := re.fullmatch(r"ma:(binary|json|char|string)(?:\((\d+)\))?", comment or ""):
            # String columns we created say in a comment what they hold
            return Column(name, m.group(1), nullable, length=int(m.group(2)) if m.group(2) else None)
        inner = re.sub(r"^(?:Nullable|LowCardinality)\((.*)\)$", r"\1", type_)
        inner = re.sub(r"^(?:Nullable|LowCardinality)\((.*)\)$", r"\1", inner)
        if m := re.fullmatch(r"Decimal(?:\d+)?\((\d+),\s*(\d+)\)", inner):
            return Column(name, "decimal", nullable, int(m.group(1)), int(m.group(2)))
        if m := re.fullmatch(r"DateTime64\((\d)(?:,\s*'([^']+)')?\)|DateTime(?:\('([^']+)'\))?", inner):
            return Column(name, "timestamptz" if (m.group(2) or m.group(3)) else "timestamp", nullable)
        if m := re.fullmatch(r"FixedString\((\d+)\)", inner):
            return Column(name, "binary", nullable)
        if inner not in _TYPES:
            raise UnsupportedType(f"{self.endpoint.label}: column {table}.{name} has type {type_}, "
                                  f"which this tool cannot migrate yet")
        return Column(name, _TYPES[inner], nullable)

    def column_ddl(self, col: Column) -> str:
        if col.type == "decimal":
            if not col.precision or col.precision > 76:
                raise LossyConversion(
                    f"column {col.name!r}: {col.describe()} does not fit ClickHouse Decimal (at most 76 digits); "
                    f"opt into the lossy cast 'decimal_as_text' to store it as text")
            return f"Decimal({col.precision}, {col.scale or 0})"
        return _DDL[col.type]

    def create_table(self, schema: TableSchema, with_key: bool = True) -> None:
        cols = ", ".join(self.column_definition(c, schema) for c in schema.columns)
        order = ", ".join(self.q(k) for k in schema.primary_key) or ""
        self.execute(f"CREATE TABLE {self.q(schema.name)} ({cols}) ENGINE = MergeTree ORDER BY ({order})")

    def column_definition(self, col: Column, schema: TableSchema) -> str:
        ddl = self.column_ddl(col)
        if col.nullable and col.name not in schema.primary_key:
            ddl = f"Nullable({ddl})"
        if col.type in ("binary", "json", "char") or (col.type == "string" and col.length):
            ddl += f" COMMENT 'ma:{col.describe()}'"  # String alone would read back as text
        return f"{self.q(col.name)} {ddl}"

    def create_table_like(self, existing: str, new: str) -> None:
        self.execute(f"CREATE TABLE {self.q(new)} AS {self.q(existing)}")

    def swap_in(self, staging: str, target: str, backup: str | None) -> None:
        if backup:
            # the atomic EXCHANGE last: no moment where the old rows sit under the staging name, which
            # a failed run's clean-up drops. Between the two, the new rows sit under `backup`:
            # table_id tells an undo which table holds them
            self.execute(f"RENAME TABLE {self.q(staging)} TO {self.q(backup)}")
            self.execute(f"EXCHANGE TABLES {self.q(backup)} AND {self.q(target)}")
        else:
            self.execute(f"RENAME TABLE {self.q(staging)} TO {self.q(target)}")

    def table_id(self, table: str) -> str | None:
        """The table's UUID (Atomic databases): it stays with the rows through RENAME and EXCHANGE."""
        rows = self.query("SELECT toString(uuid) FROM system.tables WHERE database = currentDatabase() AND name = %s",
                          [table])
        return rows[0][0] if rows and rows[0][0] != _NIL_UUID else None

    def table_named_by_id(self, table_id: str) -> str | None:
        rows = self.query("SELECT name FROM system.tables WHERE database = currentDatabase() AND toString(uuid) = %s",
                          [table_id])
        return rows[0][0] if rows else None

    def delete_sql(self, table: str, condition: str) -> str:
        """ClickHouse's DELETE is a mutation, waited for."""
        return f"ALTER TABLE {self.q(table)} DELETE WHERE {condition} SETTINGS mutations_sync = 2"

    # --- data -----------------------------------------------------------------
    def _select_expr(self, col: Column) -> str:
        if col.type == "uuid":
            return f"toString({self.q(col.name)}) AS {self.q(col.name)}"
        return self.q(col.name)

    def read_batches(self, schema: TableSchema, where: RowFilter, batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        cond, params = self.filter_sql(where)
        exprs = ", ".join(self._select_expr(c) for c in schema.columns)
        sql = f"SELECT {exprs} FROM {self.q(schema.name)} WHERE {cond}"
        settings = {"max_block_size": batch_rows}
        if self.endpoint.path:
            # embedded: one session per process, so read the chunk whole rather than hold it while writing;
            # and in the same process, so no LZ4 (ClickHouse's default for Arrow output) to undo
            settings["output_format_arrow_compression_method"] = "none"
            with self.errors(f"reading {schema.name}"):
                result = self.client.query_arrow(sql, parameters=params or None, use_strings=False, settings=settings)
            for batch in result.to_batches(max_chunksize=batch_rows):
                yield conform(_with_timestamps(batch, schema), schema)
            return
        with self.errors(f"reading {schema.name}"):
            with self.client.query_arrow_stream(sql, parameters=params or None, use_strings=False,
                                               settings=settings) as stream:
                for batch in stream:
                    yield conform(_with_timestamps(batch, schema), schema)

    def hashes_in_place(self, schema: TableSchema, existing: TableSchema | None = None) -> bool:
        """Whether in_place_checksum covers every column of `schema` (connectors/clickhouse_hash.py)."""
        return clickhouse_hash.supports(schema, existing)

    def in_place_row_hashes(self, batch: pa.RecordBatch, schema: TableSchema) -> np.ndarray:
        """Each row's hash as in_place_checksum computes it here, over Arrow (for the rows a copy sends)."""
        return clickhouse_hash.row_hashes(batch, schema)

    def in_place_checksum(self, schema: TableSchema, where: RowFilter) -> Checksum:
        """Count and sum of in_place_row_hashes over the rows `where` selects, computed in SQL."""
        cond, params = self.filter_sql(where)
        rows, total = self.query(f"SELECT count(), sum({clickhouse_hash.checksum_sql(schema, self.q)}) "
                                 f"FROM {self.q(schema.name)} WHERE {cond}", params)[0]
        return Checksum(int(rows), int(total))

    def check_values(self, schema: TableSchema, batch: pa.RecordBatch) -> None:
        for col in schema.columns:
            if col.type not in ("date", "timestamp", "timestamptz"):
                continue
            arr = batch.column(col.name)
            days = arr.cast(pa.date32()) if col.type != "date" else arr
            lo, hi = pc.min(days.view(pa.int32())).as_py(), pc.max(days.view(pa.int32())).as_py()
            if lo is not None and (lo < _MIN_DAY or hi > _MAX_DAY):
                raise LossyConversion(f"column {col.name!r} holds dates outside 1900-01-01..2299-12-31, "
                                      f"the range of ClickHouse Date32/DateTime64")

    def write_batch(self, schema: TableSchema, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        self.check_values(schema, batch)
        with self.errors(f"loading {schema.name}"):
            self.client.insert_arrow(schema.name, pa.Table.from_batches([batch]),
                                     settings={"input_format_arrow_skip_columns_with_unsupported_types_in_schema_inference": 0})

    # --- schema migrations ------------------------------------------------------
    sqlglot_dialect = "clickhouse"
    transactional_ddl = False
    schema_copy_sql = "CREATE TABLE {new} AS {old}"
    ddl_locks = {
        "create_index": DdlLock("metadata only; the skip index applies to new parts (MATERIALIZE INDEX builds old ones)"),
        "drop_index": DdlLock("metadata only"),
        "add_column": DdlLock("metadata only; old parts read the default"),
        "add_column_rewrite": DdlLock("metadata only; old parts compute the default on read"),
        "add_not_null_no_default": DdlLock("metadata only"),
        "alter_column_type": DdlLock("a mutation rewrites every part in the background", rewrites=True,
                                     recommendation="watch system.mutations; run it when merges are quiet"),
        "set_not_null": DdlLock("a mutation rewrites every part", rewrites=True),
        "add_constraint": DdlLock("metadata only; checked on insert"),
        "drop_column": DdlLock("metadata, then parts rewritten in the background; the data is lost", rewrites=True),
        "drop_table": DdlLock("the table and its data are removed"),
        "truncate": DdlLock("every part is removed"),
        "rename": DdlLock("atomic rename; clients using the old name break"),
        "create_table": DdlLock("none on existing tables"),
        "alter_other": DdlLock("metadata change or background mutation"),
    }

    def run_ddl(self, statements, in_transaction, lock_timeout_s, statement_timeout_s, rollback=False) -> None:
        if rollback:
            raise MigrationError(f"{self.endpoint.label}: ClickHouse DDL cannot be rolled back")
        settings = {"lock_acquire_timeout": max(1, int(lock_timeout_s)),
                    "max_execution_time": max(1, int(statement_timeout_s)), "mutations_sync": 2}
        for index, statement in enumerate(statements):
            try:
                with self.lock:
                    self.client.command(statement, settings=settings)
            except Exception as exc:
                text = self.endpoint.redact(str(exc))
                position = re.search(r"failed at position (\d+)", text)
                raise DdlFailed(f"{self.endpoint.label}: statement {index + 1} failed: {text.strip()[:2000]}",
                                detail=text.strip()[:2000], index=index, position=int(position.group(1)) if position else None,
                                transient=any(s in text for s in ("Connection", "timed out", "TIMEOUT", "NETWORK_ERROR"))
                                ) from None

    def default_probes(self) -> list[str]:
        return ["SELECT count() FROM system.tables WHERE database = currentDatabase()", "SELECT sum(rows) FROM "
                "system.parts WHERE database = currentDatabase() AND active"]

    def health(self) -> dict:
        """Open TCP/HTTP/MySQL connections; replication lag is the largest replica delay (system.replicas)."""
        active = self.query("SELECT toUInt64(sum(value)) FROM system.metrics WHERE metric IN "
                            "('TCPConnection', 'HTTPConnection', 'MySQLConnection', 'PostgreSQLConnection')")[0][0]
        replicas, lag = self.query("SELECT count(), max(absolute_delay) FROM system.replicas")[0]
        return {"active_connections": int(active or 0), "replicating": None if not replicas else True,
                "replication_lag_seconds": float(lag) if replicas else None}

    def table_size(self, table: str) -> tuple[int, int]:
        row = self.query("SELECT sum(rows), sum(bytes_on_disk) FROM system.parts WHERE database = currentDatabase() "
                         "AND table = %s AND active", [table])
        return (int(row[0][0] or 0), int(row[0][1] or 0)) if row else (0, 0)

    def history_types(self) -> tuple[str, str]:
        return "String", "DateTime64(6, 'UTC')"

    def history_table_suffix(self) -> str:
        return " ENGINE = MergeTree ORDER BY (migration_name, applied_at)"

    def watermark_param(self, value):
        return value.replace(tzinfo=None) if hasattr(value, "tzinfo") and value.tzinfo else value
